#!/usr/bin/env bash
# Scale benchmark (issue 8): wall time and peak memory of `resid analyze`,
# `resid pack` (lossless and 1 bit/param) and `resid unpack` on generated
# Llama-shape bf16 pairs with a sparse residual, beside the time to read both
# inputs once with `cat`. Every command starts from a cold page cache when
# /proc/sys/vm/drop_caches is writable (root), else from whatever is cached
# (the script says which). Prints a Markdown table, the commands it ran and
# machine notes.
#
# usage: bench/scale.sh [SHAPE ...]     (default: llama-0.1b llama-1b llama-7b)
# env:   KEEP=1 keeps the generated pairs (default: removed after each shape)
#        OUT=DIR where pairs go (default: bench/out/scale; a 7B pair is ~27 GB)
#        RESID=PATH binary to use (default: build target/release/resid)
#        EXTRA="--max-memory 2G" arguments added to analyze/pack/unpack
#        SKIP="analyze pack1" steps not run (analyze, pack1 = 1 bit/param)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RESID:-}" ]; then
  cargo build --release --quiet -p resid-cli --no-default-features
  RESID=${CARGO_TARGET_DIR:-target}/release/resid
fi
OUT=${OUT:-bench/out/scale}
EXTRA=${EXTRA:-}
SHAPES=("$@")
[ $# -eq 0 ] && SHAPES=(llama-0.1b llama-1b llama-7b)
mkdir -p "$OUT"

COLD=no
drop() { sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then COLD=yes; fi; }
drop
SKIP=${SKIP:-}
CMDLOG=$(mktemp)
# measure CMD... -> "seconds peakMB" (cold cache first)
measure() {
  local log; log=$(mktemp)
  echo "$*" >> "$CMDLOG"
  drop
  if ! /usr/bin/time -f "%e %M" -o "$log" "$@" > "$log.out" 2>&1; then
    echo "FAILED: $*" >&2; tail -5 "$log.out" >&2; echo "nan nan"; rm -f "$log" "$log.out"; return
  fi
  awk '{printf "%.2f %.0f", $1, $2/1024}' "$log"; rm -f "$log" "$log.out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a != "-" && b+0 > 0) printf "%.2f", a/b; else print "-" }'; }

ROWS=()
for shape in "${SHAPES[@]}"; do
  dir=$OUT/$shape-bf16
  gen="-"
  if [ ! -d "$dir/trained" ]; then
    read -r gen _ <<< "$(measure "$RESID" synth --shape "$shape" --dtype bf16 --residual sparse --quiet -o "$dir")"
  fi
  params=$(python3 - "$dir/trained" <<'EOF'
import json, os, struct, sys
d = sys.argv[1]; n = 0
for f in sorted(os.listdir(d)):
    if f.endswith(".safetensors"):
        with open(os.path.join(d, f), "rb") as h:
            k = struct.unpack("<Q", h.read(8))[0]
            for name, t in json.loads(h.read(k)).items():
                if name != "__metadata__":
                    p = 1
                    for s in t["shape"]: p *= s
                    n += p
print(f"{n/1e9:.3f}")
EOF
)
  gb=$(du -cb "$dir"/base/* "$dir"/trained/* | awk 'END{printf "%.2f", $1/1e9}')
  read -r rd rdm <<< "$(measure sh -c "cat '$dir'/base/* '$dir'/trained/* > /dev/null")"
  an=- anm=-
  # 1-minute load average as analyze starts (the machine may be shared).
  la=$(cut -d' ' -f1 /proc/loadavg)
  # shellcheck disable=SC2086
  [[ " $SKIP " == *" analyze "* ]] || read -r an anm <<< "$(measure "$RESID" analyze --base "$dir/base" --trained "$dir/trained" --json "$dir/analysis.json" --quiet $EXTRA)"
  # shellcheck disable=SC2086
  read -r pl plm <<< "$(measure "$RESID" pack --base "$dir/base" --trained "$dir/trained" --lossless -o "$dir/lossless.resid" --quiet $EXTRA)"
  p1=- p1m=-
  # shellcheck disable=SC2086
  [[ " $SKIP " == *" pack1 "* ]] || read -r p1 p1m <<< "$(measure "$RESID" pack --base "$dir/base" --trained "$dir/trained" --bits-per-param 1 -o "$dir/b1.resid" --quiet $EXTRA)"
  lsz=$(stat -c %s "$dir/lossless.resid" 2>/dev/null || echo 0)
  b1sz=$(stat -c %s "$dir/b1.resid" 2>/dev/null || echo 0)
  rm -f "$dir/b1.resid"
  # shellcheck disable=SC2086
  read -r un unm <<< "$(measure "$RESID" unpack --base "$dir/base" "$dir/lossless.resid" -o "$dir/unpacked" --quiet $EXTRA)"
  # The rebuilt shards must equal the trained ones byte for byte.
  same=yes
  for f in "$dir"/trained/*.safetensors; do
    cmp -s "$f" "$dir/unpacked/$(basename "$f")" || same=no
  done
  rm -rf "$dir/unpacked" "$dir/lossless.resid"
  ROWS+=("| $shape | $params | $gb | $gen | $rd ($rdm MB) | $an / $anm MB / $(ratio "$an" "$rd")x (load $la) | $pl / $plm MB / $(ratio "$pl" "$rd")x | $p1 / $p1m MB / $(ratio "$p1" "$rd")x | $un / $unm MB / $(ratio "$un" "$rd")x | $(awk "BEGIN{printf \"%.1f\", $lsz/1e6}") / $(awk "BEGIN{printf \"%.1f\", $b1sz/1e6}") | $same |")
  printf '%s\n' "${ROWS[-1]}" >&2
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
done

echo "| shape | params (B) | inputs GB | synth s | read both (s, peak) | analyze s / peak / x read | pack lossless | pack 1 bit/param | unpack lossless | file MB (lossless / 1 bpp) | rebuilt = trained |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Cold page cache before every command: $COLD (sync; echo 3 > /proc/sys/vm/drop_caches)."
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -r)."
echo
echo "Commands (each under /usr/bin/time -f '%e %M'):"
echo
echo '```'
cat "$CMDLOG"
echo '```'
rm -f "$CMDLOG"
