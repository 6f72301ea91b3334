"""Writes the tiny base / trained pair the residual_file seeds are packed
against (deterministic; no numpy). Run from fuzz/seeds/: python3 make_inputs.py"""
import json, math, struct

def f32(v): return struct.pack("<%df" % len(v), *v)
def bf16(v): return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", x))[0])[2:] for x in v)
def f16(v): return struct.pack("<%de" % len(v), *v)

def write(path, tensors):
    hdr, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)

def vals(n, seed, scale):
    return [scale * math.sin(seed * 12.9898 + i * 78.233) for i in range(n)]

a, b, c, s = vals(256, 1, 0.5), vals(256, 2, 0.5), vals(64, 3, 0.5), vals(32, 4, 1.0)
# trained = base + a rank-1 part + a few spikes
da = [0.01 * math.sin(i // 16) * math.cos(i % 16) for i in range(256)]
ta = [x + y for x, y in zip(a, da)]
ta[17] += 0.3
tb = [x + 0.02 * math.sin(i * 0.7) for i, x in enumerate(b)]
tc = [x + (0.05 if i % 9 == 0 else 0.0) for i, x in enumerate(c)]
base = [("a", "F32", [16, 16], f32(a)), ("b", "BF16", [8, 32], bf16(b)),
        ("c", "F16", [64], f16(c)), ("s", "F32", [32], f32(s))]
trained = [("a", "F32", [16, 16], f32(ta)), ("b", "BF16", [8, 32], bf16(tb)),
           ("c", "F16", [64], f16(tc)), ("s", "F32", [32], f32(s)),
           ("new", "F32", [4], f32([1.0, -2.0, 0.5, 0.25]))]
write("residual_file_inputs/base.safetensors", base)
write("residual_file_inputs/trained.safetensors", trained)
