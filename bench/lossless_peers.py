"""Lossless peers on one (base, trained) safetensors pair, same bytes as resid:
BitX (XOR of the bit patterns, byte planes, zstd-3 and zstd-19 per plane),
zipnn of the XOR (its delta mode) and zipnn of the trained tensors alone.
Prints one JSON object: bytes per method and the pair's parameter count.
Usage: lossless_peers.py BASE.safetensors TRAINED.safetensors
"""
import json
import struct
import sys
import time

import numpy as np
import zstandard
from zipnn import ZipNN

WIDTH = {"F32": 4, "BF16": 2, "F16": 2}


def load_raw(path):
    """name -> (dtype, stored bytes): read by hand, since safetensors.numpy
    has no bf16."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return {
        k: (v["dtype"], data[v["data_offsets"][0] : v["data_offsets"][1]])
        for k, v in header.items()
        if k != "__metadata__"
    }


def planes(x, width):
    """Byte planes of a flat byte array of `width`-byte elements."""
    return [x.reshape(-1, width)[:, p].copy() for p in range(width)]


def main():
    base = load_raw(sys.argv[1])
    trained = load_raw(sys.argv[2])
    out = {"params": 0, "bytes": {}, "seconds": {}}
    z3 = zstandard.ZstdCompressor(level=3)
    z19 = zstandard.ZstdCompressor(level=19)
    sizes = {"BitX zstd-3": 0, "BitX zstd-19": 0, "zipnn of XOR": 0, "zipnn of trained": 0}
    secs = {k: 0.0 for k in sizes}
    for name, (dt, tb) in trained.items():
        bb = base[name][1]
        width = WIDTH[dt]
        out["params"] += tb.size // width
        x = np.bitwise_xor(tb, bb)
        ps = planes(x, width)
        for key, z in (("BitX zstd-3", z3), ("BitX zstd-19", z19)):
            t0 = time.perf_counter()
            sizes[key] += sum(len(z.compress(p.tobytes())) for p in ps)
            secs[key] += time.perf_counter() - t0
        dtype = {4: "float32", 2: "bfloat16"}[width]
        zn = ZipNN(bytearray_dtype=dtype, input_format="byte")
        for key, data in (("zipnn of XOR", x), ("zipnn of trained", tb)):
            t0 = time.perf_counter()
            c = zn.compress(data.tobytes())
            secs[key] += time.perf_counter() - t0
            assert bytes(zn.decompress(c)) == data.tobytes(), f"zipnn round trip {name}"
            sizes[key] += len(c)
    out["bytes"] = sizes
    out["seconds"] = secs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
