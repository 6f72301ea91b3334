#!/usr/bin/env bash
# examples/python/ray_pack_many.py on a local Ray runtime beside a plain loop
# of `resid pack` (all threads each) over the same fine-tunes, same run.
#
#   flock -x /tmp/resid-cpu.lock bench/ray.sh [SHAPE] [N]
#
# N fine-tunes of one base come from `resid synth` (same seed, so the same
# base; residual kind and scale vary). RESID_PY_VENV names a virtualenv with
# the wheel installed (bench/python.sh makes one); ray comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
shape="${1:-llama-25m}"
n="${2:-6}"
venv="${RESID_PY_VENV:-bench/.venv-python}"
"$venv/bin/python" -c "import resid" || { echo "no resid in $venv: run bench/python.sh first" >&2; exit 1; }
"$venv/bin/python" -c "import ray" 2> /dev/null || "$venv/bin/pip" install -q --disable-pip-version-check ray
cli="$venv/bin/resid"
w="bench/out/ray-$shape"
if [ ! -d "$w/finetunes/ft-$n" ]; then
  rm -rf "$w"
  mkdir -p "$w/finetunes"
  kinds=(sparse dense lowrank)
  for i in $(seq 1 "$n"); do
    k="${kinds[$(( (i - 1) % 3 ))]}"
    s=$(awk "BEGIN { print 0.005 * $i }")
    "$cli" synth --shape "$shape" --residual "$k" --scale "$s" --out "$w/tmp" --quiet
    [ -d "$w/base" ] || mv "$w/tmp/base" "$w/base"
    mv "$w/tmp/trained" "$w/finetunes/ft-$i"
    rm -rf "$w/tmp"
  done
fi
cat "$w"/base/* "$w"/finetunes/*/* > /dev/null
echo "$n fine-tunes of $shape; $(uptime)"
t0=$(date +%s.%N)
for ft in "$w"/finetunes/*/; do
  "$cli" pack --base "$w/base" --trained "$ft" --lossless -o "$w/loop-$(basename "$ft").resid" --quiet > /dev/null
done
t1=$(date +%s.%N)
echo "loop of resid pack: $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s"
/usr/bin/time -f "ray example process %e s  %M KB" "$venv/bin/python" examples/python/ray_pack_many.py "$w/base" "$w/finetunes" "$w/ray-out"
for ft in "$w"/finetunes/*/; do
  cmp "$w/loop-$(basename "$ft").resid" "$w/ray-out/$(basename "$ft").resid"
done
echo "files identical to the loop's; $(uptime)"
