#!/usr/bin/env bash
# Model folders through resid and back into transformers (bench/hf_roundtrip.py):
# a BERT-style (AutoModel) and a sharded Llama-style (AutoModelForCausalLM)
# folder, lossless (every file byte-identical, outputs torch.equal) and lossy
# (outputs' measured distance); then a sentence-transformers folder
# (bench/st_roundtrip.py: module subfolders, encode() compared). Nothing here
# is timed.
#
#   bench/hf.sh [BITS_PER_PARAM]
#
# Makes bench/.venv-hf (bench/setup-hf.sh) when absent; RESID names the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv-hf/bin/python ] || bench/setup-hf.sh
if [ -z "${RESID:-}" ]; then
  cargo build -q -p resid-cli --no-default-features
  RESID=target/debug/resid
fi
RESID="$RESID" bench/.venv-hf/bin/python bench/hf_roundtrip.py --bits "${1:-2}" 2>&1 \
  | grep -v -i -E "warn|Loading weights|Writing model"
RESID="$RESID" bench/.venv-hf/bin/python bench/st_roundtrip.py --bits "${1:-2}" 2>&1 \
  | grep -v -i -E "warn|Loading weights|Writing model|deprecated|get_word_embedding_dimension"
