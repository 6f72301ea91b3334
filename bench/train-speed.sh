#!/usr/bin/env bash
# Training throughput (tokens/s) of resid's CPU trainer beside PyTorch CPU on
# the same model, batch and optimizer, at the tiny and paper shapes (byte
# vocabulary), alternating the order. Each side excludes its first step.
# Usage: bench/train-speed.sh [tiny_steps] [paper_steps]
# Run it alone on the machine (flock -x /tmp/resid-cpu.lock bench/train-speed.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tiny_steps=${1:-40}
paper_steps=${2:-8}
[ -x bench/.venv-torch/bin/python ] || bench/setup-torch.sh
cargo build --quiet --release -p resid-lm --example step_speed
bin=target/release/examples/step_speed
threads=$(nproc)
torch() {
  bench/.venv-torch/bin/python bench/torch_ref/gpt_ref.py --preset "$1" --steps $(($2 + 1)) \
    --threads "$threads" --eval-tokens 1024 | tail -1 |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"preset": r["preset"], "engine": "pytorch " + r["torch"], "threads": r["threads"], "steps": r["steps"] - 1, "tokens_per_s": round(r["steady_tokens_per_s"])}))'
}
echo "# $(date -u +%FT%TZ) $(nproc) cores; $(uptime)"
for shape in "tiny $tiny_steps" "paper $paper_steps"; do
  set -- $shape
  "$bin" "$1" "$2"
  torch "$1" "$2"
  torch "$1" "$2"
  "$bin" "$1" "$2"
  echo "# after $1: $(uptime)"
done
