#!/usr/bin/env bash
# Builds the resid-toolkit wheel: first the `resid` CLI without the ML
# framework (it goes into the wheel's scripts, so `pip install` puts it on
# PATH), then the extension module and the package with maturin.
#
#   python/build-wheel.sh [--profile release|dev] [--out DIR]
#
# `--profile dev` reuses the dependencies `cargo test` built (they are at
# opt-level 3 in every profile); release is the default. MATURIN names the
# maturin to run (default: `maturin` on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=python/dist
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  dev) dir=debug ;;
  *) dir="$profile" ;;
esac

target="${CARGO_TARGET_DIR:-target}"
cargo build -p resid-cli --no-default-features --profile "$profile"
mkdir -p python/resid_toolkit.data/scripts
install -m 755 "$target/$dir/resid" python/resid_toolkit.data/scripts/resid
# As maturin strips the extension (pyproject.toml), strip the command.
if command -v strip > /dev/null 2>&1; then
  strip python/resid_toolkit.data/scripts/resid
fi
"${MATURIN:-maturin}" build --profile "$profile" --out "$out"
