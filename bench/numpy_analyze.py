#!/usr/bin/env python3
"""The analysis people write by hand with numpy/scipy: per tensor of the residual
trained - base, excess kurtosis, 100-bin histogram entropy, and participation ratio
from the singular values (SVD). The peer resid's `analyze` is measured against.

usage: numpy_analyze.py BASE TRAINED   (files or Hugging Face folders, F32/F16/BF16)
"""
import json, os, struct, sys, time
import numpy as np
from scipy import stats


def tensors(path):
    """Yields (name, array) from a safetensors file or folder, any shard layout."""
    if os.path.isdir(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
        files = [os.path.join(path, f) for f in files]
    else:
        files = [path]
    for f in files:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
        mm = np.memmap(f, dtype=np.uint8, mode="r", offset=8 + n)
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            s, t = e["data_offsets"]
            raw = mm[s:t]
            if e["dtype"] == "F32":
                a = raw.view(np.float32)
            elif e["dtype"] == "F16":
                a = raw.view(np.float16).astype(np.float32)
            elif e["dtype"] == "BF16":
                a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                continue
            yield name, a.reshape(e["shape"])


def main():
    base, trained = sys.argv[1], sys.argv[2]
    t0 = time.time()
    b = dict(tensors(base))
    out = []
    for name, w in tensors(trained):
        if name not in b:
            continue
        r = (w.astype(np.float64) - b[name]).astype(np.float32)
        flat = r.ravel()
        k = float(stats.kurtosis(flat))
        hist, _ = np.histogram(flat, bins=100)
        p = hist[hist > 0] / flat.size
        h = float(-(p * np.log2(p)).sum())
        pr = None
        if r.ndim == 2:
            s = np.linalg.svd(r, compute_uv=False).astype(np.float64)
            pr = float((s ** 2).sum() ** 2 / (s ** 4).sum())
        out.append({"name": name, "kurtosis": k, "entropy_bits": h, "pr": pr})
    print(json.dumps({"seconds": time.time() - t0, "tensors": out}))


if __name__ == "__main__":
    main()
