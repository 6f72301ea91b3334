#!/usr/bin/env bash
# resid extract-lora checked by PEFT (load + merge = base + truncated SVD),
# resid analyze --adapter checked on an adapter PEFT wrote, and the table
# beside mergekit-extract-lora and resid's own lossy file at the same bytes
# (bench/lora_peft.py). Run it under the exclusive lock:
#
#   flock -x /tmp/resid-cpu.lock bench/lora.sh [RANK]
#
# Makes bench/.venv-hf (bench/setup-hf.sh: torch, transformers, peft,
# mergekit from PyPI) when absent; RESID names the binary (default: a
# --no-default-features build in target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv-hf/bin/python ] || bench/setup-hf.sh
if [ -z "${RESID:-}" ]; then
  cargo build -q -p resid-cli --no-default-features
  RESID=target/debug/resid
fi
echo "$(uptime)"
RESID="$RESID" bench/.venv-hf/bin/python bench/lora_peft.py --rank "${1:-8}" 2>&1 \
  | grep -v -i -E "warn|Loading weights|Writing model"
