#!/usr/bin/env bash
# Creates bench/.venv-hf with the Hugging Face stack from PyPI (torch, transformers,
# sentence-transformers, peft, safetensors) for the loaded-model checks in
# bench/hf_roundtrip.py, bench/st_roundtrip.py and bench/lora_peft.py. mergekit
# (for mergekit-extract-lora) is tried last: when it does not install, the LoRA
# bench reports it as absent instead of failing.
# Usage: bench/setup-hf.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-hf"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch transformers sentence-transformers peft safetensors numpy
"$venv/bin/python" -c 'import torch, transformers, peft; import sentence_transformers as st; print("torch", torch.__version__, "transformers", transformers.__version__, "sentence-transformers", st.__version__, "peft", peft.__version__)'
if [ "${RESID_BENCH_MERGEKIT:-1}" = 1 ]; then
  timeout 900 "$venv/bin/pip" install --quiet mergekit \
    && "$venv/bin/python" -c 'import mergekit; print("mergekit installed")' \
    || echo "mergekit did not install (see above); the LoRA bench runs without it"
fi
