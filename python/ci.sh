#!/usr/bin/env bash
# The Python package's CI step (run by .ci/run after `cargo test`): maturin
# and pytest from PyPI into virtualenvs, the wheel built with the dev profile
# (reusing what `cargo test` built), installed into a fresh virtualenv, and
# python/tests run against that installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
work="$root/target/python-ci"
rm -rf "$work"
mkdir -p "$work"
t0=$(date +%s)

python3 -m venv "$work/build"
"$work/build/bin/pip" install -q --disable-pip-version-check "maturin>=1.9,<2"
MATURIN="$work/build/bin/maturin" python/build-wheel.sh --profile dev --out "$work/dist"
t1=$(date +%s)

python3 -m venv "$work/test"
"$work/test/bin/pip" install -q --disable-pip-version-check pytest numpy
"$work/test/bin/pip" install -q --disable-pip-version-check "$work"/dist/resid_toolkit-*.whl
# From the tests' folder, so `import resid` is the installed wheel, not python/resid.
(cd python/tests && "$work/test/bin/python" -m pytest -q -p no:cacheprovider)
t2=$(date +%s)
echo "python: wheel built in $((t1 - t0)) s, installed and tested in $((t2 - t1)) s"
