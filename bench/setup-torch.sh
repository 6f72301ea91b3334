#!/usr/bin/env bash
# Creates bench/.venv-torch with PyTorch (CPU wheel from PyPI) for the
# reference runs in bench/torch_ref/. Usage: bench/setup-torch.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-torch"
"$here/.venv-torch/bin/pip" install --quiet --upgrade pip
"$here/.venv-torch/bin/pip" install --quiet torch numpy
"$here/.venv-torch/bin/python" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
