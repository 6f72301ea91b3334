#!/usr/bin/env bash
# Benchmark of `resid analyze` against the numpy/scipy script, weightwatcher and
# modeldelta (norms, cosine, full SVD, effective rank per matrix; its JSON
# output), on the same generated pairs in the same run; also `resid analyze
# --report` (the HTML report from the same pass) beside the plain run. Prints
# one Markdown row per (pair, tool): wall seconds, peak RSS, and resid's
# speed-up (for --report: its time over the plain run's).
#
# usage: bench/analyze.sh [SHAPE ...]     (default: llama-25m llama-250m)
# needs: bench/setup-python.sh run once; writes pairs under bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RESID:-}" ]; then   # RESID=PATH: use a binary already built
  cargo build --release --quiet -p resid-cli --no-default-features
  RESID=${CARGO_TARGET_DIR:-target}/release/resid
fi
PY=bench/.venv/bin/python
SHAPES=("${@:-llama-25m llama-250m}")
[ $# -eq 0 ] && SHAPES=(llama-25m llama-250m)
mkdir -p bench/out
measure() { # label command... -> "seconds peakMB"
  local log; log=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$log" "$@" > /dev/null 2>&1 || { echo "FAILED"; rm -f "$log"; return; }
  awk '{printf "%.2f %.0f", $1, $2/1024}' "$log"; rm -f "$log"
}
echo "| pair | dtype | tool | wall s | peak MB | resid speed-up |"
echo "|---|---|---|---|---|---|"
for shape in "${SHAPES[@]}"; do
  for dtype in f32 bf16; do
    dir=bench/out/$shape-$dtype
    [ -d "$dir/trained" ] || $RESID synth --shape "$shape" --dtype "$dtype" --residual sparse --quiet -o "$dir"
    cat "$dir"/base/* "$dir"/trained/* > /dev/null   # same warm cache for every tool
    read -r rs rm <<< "$(measure $RESID analyze --base "$dir/base" --trained "$dir/trained" --json /dev/null --quiet)"
    echo "| $shape | $dtype | resid analyze | $rs | $rm | 1.0 |"
    rep=$(mktemp -d)
    read -r ps pm <<< "$(measure $RESID analyze --base "$dir/base" --trained "$dir/trained" --json /dev/null --report "$rep" --quiet)"
    rm -rf "$rep"
    echo "| $shape | $dtype | resid analyze --report | $ps | $pm | ($(awk "BEGIN{printf \"%.2f\", $ps/$rs}")x plain) |"
    read -r ns nm <<< "$(measure $PY bench/numpy_analyze.py "$dir/base" "$dir/trained")"
    echo "| $shape | $dtype | numpy/scipy script | $ns | $nm | $(awk "BEGIN{printf \"%.1f\", $ns/$rs}") |"
    if [ -x bench/.venv/bin/python ] && $PY -c "import torch" 2>/dev/null; then
      read -r ws wm <<< "$(measure $PY bench/weightwatcher_analyze.py "$dir/trained")"
      echo "| $shape | $dtype | weightwatcher 0.7.7 | $ws | $wm | $(awk "BEGIN{printf \"%.1f\", $ws/$rs}") |"
    fi
    if $PY -c "import modeldelta, torch" 2>/dev/null; then
      out=$(mktemp --suffix .json)
      read -r ms mm <<< "$(measure $PY -m modeldelta "$dir/base" "$dir/trained" -o "$out" -q)"
      rm -f "$out"
      echo "| $shape | $dtype | modeldelta 0.4.4 | $ms | $mm | $(awk "BEGIN{printf \"%.1f\", $ms/$rs}") |"
    fi
  done
done
