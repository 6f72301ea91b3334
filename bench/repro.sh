#!/usr/bin/env bash
# Times the README's first command, `resid repro` on its defaults (shipped
# corpus, tiny preset, seed 0), from an empty output folder, and refreshes
# examples/repro-tiny/ from the run. Wall time and peak memory come from
# /usr/bin/time; the release build is done first and not counted.
#
# usage: bench/repro.sh [extra repro flags...]   (e.g. --mimetic)
# env:   OUT=DIR  output folder (default: bench/out/repro; emptied first)
#        EXAMPLE=0 leaves examples/repro-tiny/ alone
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin resid
RESID=${CARGO_TARGET_DIR:-target}/release/resid
OUT=${OUT:-bench/out/repro}
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
/usr/bin/time -f "%e s wall, %M KB peak RSS, %U s user" -o "$OUT.time" \
  "$RESID" repro --out "$OUT" "$@" > "$OUT.stdout"
cat "$OUT.time"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${EXAMPLE:-1}" = 1 ]; then
  ex=examples/repro-tiny
  rm -f "$ex"/fig-*.svg "$ex"/REPORT.md "$ex"/report.json "$ex"/index.html
  cp "$OUT"/REPORT.md "$OUT"/report.json "$OUT"/index.html "$OUT"/fig-*.svg "$ex"/
  for a in "$OUT"/analysis-*/; do
    n=$(basename "$a")
    rm -rf "${ex:?}/$n"
    mkdir -p "$ex/$n"
    cp "$a"/index.html "$a"/report.md "$a"/report.json "$ex/$n"/
    cp "$a"/fig-*.svg "$ex/$n"/ 2>/dev/null || true
  done
  echo "refreshed $ex"
fi
