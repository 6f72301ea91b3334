#!/usr/bin/env bash
# Lossless size on real fine-tune pairs: resid's lossless file beside BitX
# (XOR + zstd-3 and zstd-19 per byte plane) and zipnn (PyPI, in bench/.venv-zipnn),
# on the same pairs, in the same run. The pair is the reproduction's fine-tune
# (pretrained on Shakespeare, fine-tuned on the King James New Testament, f32),
# and the same pair converted to bf16 (round to nearest even).
#
#   bench/lossless.sh REPRO_OUT [RESID]
#
# REPRO_OUT is a `resid repro` output folder (train-csb/ and train-finetune/);
# RESID the CLI (default target/release/resid).
set -euo pipefail
cd "$(dirname "$0")/.."
repro="${1:?usage: bench/lossless.sh REPRO_OUT [RESID]}"
resid="${2:-target/release/resid}"
venv=bench/.venv-zipnn
if ! "$venv/bin/python" -c "import zipnn, zstandard, safetensors, numpy" > /dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "zipnn==0.5.4" zstandard safetensors numpy
fi
py="$venv/bin/python"
work=bench/out/lossless
mkdir -p "$work"
base="$repro/train-csb/model.safetensors"
trained="$repro/train-finetune/model.safetensors"
# The bf16 pair: each f32 tensor rounded to nearest even bf16.
"$py" - "$base" "$trained" "$work" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
def bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r
for src, dst in ((sys.argv[1], "base"), (sys.argv[2], "trained")):
    t = load_file(src)
    # safetensors.numpy has no bf16 dtype: write u16 bits, then relabel.
    save_file({k: bf16(v) for k, v in t.items()}, f"{sys.argv[3]}/{dst}-bf16.safetensors")
PY
for f in "$work"/base-bf16.safetensors "$work"/trained-bf16.safetensors; do
  "$py" - "$f" <<'PY'
import json, struct, sys
p = sys.argv[1]
with open(p, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
    data = f.read()
for k, v in h.items():
    if k != "__metadata__":
        v["dtype"] = "BF16"
# "BF16" is longer than "U16": the header is rewritten, padded to 8 bytes.
s = json.dumps(h, separators=(",", ":")).encode()
s += b" " * (-len(s) % 8)
with open(p, "wb") as f:
    f.write(struct.pack("<Q", len(s)) + s + data)
PY
done
echo "load: $(uptime)"
echo "| pair | method | bytes | bits/param | size / resid's |"
echo "|---|---|---:|---:|---:|"
for dt in f32 bf16; do
  if [ "$dt" = f32 ]; then b="$base"; t="$trained"; else b="$work/base-bf16.safetensors"; t="$work/trained-bf16.safetensors"; fi
  rm -f "$work/$dt.resid"
  "$resid" pack --base "$b" --trained "$t" --lossless -o "$work/$dt.resid" --quiet > /dev/null
  ours=$(stat -c %s "$work/$dt.resid")
  "$py" bench/lossless_peers.py "$b" "$t" > "$work/$dt-peers.json"
  "$py" - "$dt" "$ours" "$work/$dt-peers.json" <<'PY'
import json, sys
dt, ours, peers = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
n = peers["params"]
print(f"| {dt} fine-tune pair ({n} params) | resid lossless | {ours} | {8 * ours / n:.3f} | 1.000 |")
for k, v in peers["bytes"].items():
    print(f"| {dt} fine-tune pair ({n} params) | {k} | {v} | {8 * v / n:.3f} | {v / ours:.3f} |")
PY
done
