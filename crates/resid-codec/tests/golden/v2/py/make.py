#!/usr/bin/env python3
"""Writes the model folder the version-2 golden files were packed from, with
the Python `safetensors` library (0.8.0, numpy 2.4.6), so that a lossless
rebuild can be checked byte-identical to a file resid did not write:
`base.safetensors` and `trained/` (model.safetensors beside a config, a
tokenizer, a chat template and a sentence-transformers module folder).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install safetensors numpy
    /tmp/v/bin/python make.py   # in this folder
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(21)
base = {
    "embed.weight": (0.05 * rng.standard_normal((48, 32))).astype(np.float32),
    "layer.0.attn.weight": (0.05 * rng.standard_normal((32, 32))).astype(np.float16),
    "layer.0.mlp.bias": (0.01 * rng.standard_normal(64)).astype(np.float32),
    "norm.weight": np.ones(32, dtype=np.float32),
    "position_ids": np.arange(48, dtype=np.int64),
}
trained = {k: v.copy() for k, v in base.items()}
trained["embed.weight"] += (1e-3 * rng.standard_normal((48, 32))).astype(np.float32)
trained["layer.0.attn.weight"] += (1e-3 * rng.standard_normal((32, 32))).astype(np.float16)
trained["layer.0.mlp.bias"] += (1e-4 * rng.standard_normal(64)).astype(np.float32)
save_file(base, "base.safetensors")
os.makedirs("trained/1_Pooling", exist_ok=True)
save_file(trained, "trained/model.safetensors",
          metadata={"format": "pt", "written_by": "python safetensors"})
with open("trained/config.json", "w") as f:
    json.dump({"architectures": ["TinyModel"], "hidden_size": 32, "vocab_size": 48}, f, indent=2)
with open("trained/tokenizer.json", "w") as f:
    json.dump({"version": "1.0", "model": {"type": "WordLevel",
               "vocab": {"w%d" % i: i for i in range(48)}}}, f)
with open("trained/chat_template.jinja", "w") as f:
    f.write("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}")
with open("trained/1_Pooling/config.json", "w") as f:
    json.dump({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}, f, indent=2)
