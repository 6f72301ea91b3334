#!/usr/bin/env bash
# Installs the Python peers resid is measured against into bench/.venv:
# numpy/scipy (the script analysts write by hand), weightwatcher and modeldelta,
# from PyPI.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet numpy scipy safetensors "weightwatcher==0.7.7"
# weightwatcher reads weights through torch tensors (PyPI wheel).
.venv/bin/pip install --quiet torch
.venv/bin/pip install --quiet "modeldelta==0.4.4"
.venv/bin/python -c "import numpy, scipy, weightwatcher; print('numpy', numpy.__version__, 'scipy', scipy.__version__, 'weightwatcher', weightwatcher.__version__)"
