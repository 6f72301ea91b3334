#!/usr/bin/env bash
# resid's Python calls beside the CLI on the same generated pair, in the same
# run, alternating: wall time and peak memory (max RSS) of each process, and
# the Python call's own time. Run it under the exclusive lock:
#
#   flock -x /tmp/resid-cpu.lock bench/python.sh [SHAPE] [RUNS]
#
# RESID_PY_VENV names a virtualenv with the wheel installed; without it one
# is made in bench/.venv-python (maturin and numpy from PyPI) and the wheel
# built with PROFILE (default release) by python/build-wheel.sh. The CLI
# timed is the `resid` command that wheel installed: the same build.
set -euo pipefail
cd "$(dirname "$0")/.."
shape="${1:-llama-0.1b}"
runs="${2:-3}"
venv="${RESID_PY_VENV:-bench/.venv-python}"
if ! "$venv/bin/python" -c "import resid" > /dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.9,<2" numpy
  MATURIN="$venv/bin/maturin" python/build-wheel.sh --profile "${PROFILE:-release}" --out bench/out/wheel
  "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall bench/out/wheel/resid_toolkit-*.whl
fi
py="$venv/bin/python"
cli="$venv/bin/resid"
pair="bench/out/python-$shape"
[ -d "$pair/trained" ] || "$cli" synth --shape "$shape" --out "$pair" --quiet
b="$pair/base"
t="$pair/trained"
out="bench/out/python-$shape.resid"
cat "$b"/* "$t"/* > /dev/null # warm cache for every run
echo "pair $shape: $(du -sh "$t" | cut -f1) trained; $(uptime)"
for i in $(seq "$runs"); do
  /usr/bin/time -f "cli    analyze  %e s  %M KB" "$cli" analyze --base "$b" --trained "$t" --json /dev/null --quiet > /dev/null
  /usr/bin/time -f "python analyze  %e s  %M KB" "$py" -c "
import resid, time
t0 = time.perf_counter(); resid.analyze('$b', '$t', progress=False)
print(f'python analyze call {time.perf_counter() - t0:.2f} s')"
  /usr/bin/time -f "cli    pack     %e s  %M KB" "$cli" pack --base "$b" --trained "$t" --lossless -o "$out" --quiet > /dev/null
  /usr/bin/time -f "python pack     %e s  %M KB" "$py" -c "
import resid, time
t0 = time.perf_counter(); resid.pack('$b', '$t', '$out', lossless=True, progress=False)
print(f'python pack call {time.perf_counter() - t0:.2f} s')"
done
echo "$(uptime)"
