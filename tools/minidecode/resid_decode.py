#!/usr/bin/env python3
"""A second, minimal decoder of resid's residual files, written from FORMAT.md
alone (it proves the specification is self-contained). Each function names
the section it implements. Reads versions 1 and 2. Needs the `zstandard` and
`xxhash` PyPI packages.

    resid_decode.py FILE.resid BASE.safetensors OUT   # a file, or a folder
    resid_decode.py --golden DIR     # every case of DIR/manifest.json
"""

import hashlib
import json
import math
import os
import re
import struct
import sys

import xxhash
import zstandard


class Refused(Exception):
    """The file breaks a rule of FORMAT.md."""


def xxh3(b):
    return xxhash.xxh3_64_intdigest(b)


# ---------------------------------------------------------------- floats ---

def f32(x):
    """IEEE binary32 rounding of a double, ties to even (Conventions)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def to_f32_values(dtype, raw):
    """A float tensor's raw bytes as f32 values (3.5 step 4)."""
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    if dtype == "F64":
        return [f32(x) for x in struct.unpack("<%dd" % (len(raw) // 8), raw)]
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(raw) // 2), raw))
    if dtype == "BF16":
        out = []
        for (h,) in struct.iter_unpack("<H", raw):
            out.append(struct.unpack("<f", struct.pack("<I", h << 16))[0])
        return out
    raise Refused("lossy coding of non-float dtype " + dtype)


def from_f32_values(dtype, vals):
    """3.5 step 5: f32 values to `dtype`, round to nearest even."""
    out = bytearray()
    for v in vals:
        if dtype == "F32":
            out += struct.pack("<f", v)
        elif dtype == "F64":
            out += struct.pack("<d", v)
        elif dtype == "F16":
            try:
                out += struct.pack("<e", v)
            except OverflowError:
                out += struct.pack("<e", math.copysign(math.inf, v))
        elif dtype == "BF16":
            bits = f32_bits(v)
            if math.isnan(v):
                h = (bits >> 16) | 0x40
            else:
                h = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF
            out += struct.pack("<H", h)
    return bytes(out)


SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
         "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
         "I64": 8, "U64": 8, "F64": 8}


# ------------------------------------------------------------ safetensors ---

def read_safetensors(path):
    """The base checkpoint: {name: (dtype, shape, raw bytes)} (safetensors)."""
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], data[s:e])
    return out


# --------------------------------------------------------- 1. layout -------

def read_preamble(b):
    """1.1: magic, length >= 48, version 1, flags 0."""
    if len(b) < 8 or b[:8] != b"RESID\x00\r\n":
        raise Refused("not a residual file")
    if len(b) < 48:
        raise Refused("truncated")
    version, flags = struct.unpack("<II", b[8:16])
    if version > 2:
        raise Refused("format version %d is newer than this reader reads (2)" % version)
    if version == 0:
        raise Refused("format version 0 is invalid")
    if flags != 0:
        raise Refused("reserved flags are not 0")
    return version


def read_footer(b):
    """1.2: end magic, header length, placement."""
    f = b[-32:]
    if f[24:32] != b"RESIDEND":
        raise Refused("truncated or damaged: no end marker")
    hoff, hlen, hsum = struct.unpack("<QQQ", f[:24])
    if not 1 <= hlen <= 256 << 20:
        raise Refused("header length outside 1..=256 MiB")
    if hoff < 16 or hoff + hlen + 32 != len(b):
        raise Refused("header does not end at the footer (truncated?)")
    return hoff, hlen, hsum


# --------------------------------------------------------- 2. header -------

def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("a field repeated in one object")
    return dict(pairs)


def one_zstd_frame(stream, limit):
    """4.4 (and 1.3): exactly one Zstandard frame, nothing after it; its
    content, decoded up to `limit` bytes (None when it holds more)."""
    if stream[:4] != b"\x28\xb5\x2f\xfd":
        raise Refused("not a Zstandard frame (bad magic)")
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = d.decompress(stream)
    except zstandard.ZstdError as e:
        raise Refused("zstd frame does not decode: %s" % e)
    if not d.eof:
        raise Refused("incomplete zstd frame")
    if d.unused_data:
        raise Refused("%d bytes after the zstd frame" % len(d.unused_data))
    return out if len(out) <= limit else None


def read_header(b, hoff, hlen, hsum, version, schemas):
    """1.2 checksum, 1.3 (version 2: a zstd frame), then 2: strict JSON,
    the schema, the cross-field rules."""
    text = b[hoff:hoff + hlen]
    if xxh3(text) != hsum:
        raise Refused("header checksum mismatch")
    if version >= 2:
        try:
            text = one_zstd_frame(text, 256 << 20)
        except Refused as e:
            raise Refused("compressed header does not decode: %s" % e)
        if text is None:
            raise Refused("compressed header expands beyond 256 MiB")
    schema = schemas[version]
    try:
        h = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates)
    except ValueError as e:
        raise Refused("header is not JSON: %s" % e)
    validate_schema(h, schema, schema, "header")
    if h["version"] != version:
        raise Refused("header version differs from preamble version")
    s = h["settings"]
    if h["mode"] == "lossy" and s.get("rate") is None:
        raise Refused("lossy file without rate settings")
    shards = h["trained"]["shards"]
    if not h["trained"]["sharded"] and len(shards) != 1:
        raise Refused("several shards in an unsharded file")
    shard_names = {"model.safetensors.index.json"}
    for s in shards:
        if s["file"] in ("", ".", "..") or "/" in s["file"] or "\\" in s["file"]:
            raise Refused("shard name %r is not a plain file name" % s["file"])
        if s["file"].lower() in shard_names:
            raise Refused("shard %r names the same file as another shard or the shard index" % s["file"])
        shard_names.add(s["file"].lower())
    if version == 1:
        for field in ("provenance", "files"):
            if field in h:
                raise Refused("field '%s' is not part of format version 1" % field)
        if "folder" in h["trained"] or any("original" in s for s in shards):
            raise Refused("a version-2 field in a version-1 file")
        if any("resize" in t for t in h["tensors"]):
            raise Refused("field 'tensors.resize' is not part of format version 1")
    validate_files(h)
    names = set()
    for t in h["tensors"]:
        if t["name"] in names:
            raise Refused("tensor %r: empty or duplicate name" % t["name"])
        names.add(t["name"])
        validate_entry(h, t, hoff)
    for si in range(len(shards)):
        validate_original(h, si)
    ranges = sorted([(bl["offset"], bl["offset"] + bl["len"]) for t in h["tensors"]
                     for bl in tensor_blocks(t)]
                    + [(f["block"]["offset"], f["block"]["offset"] + f["block"]["len"])
                       for f in h.get("files", [])])
    for f in h.get("files", []):
        bl = f["block"]
        if bl["offset"] < 16 or bl["len"] < 1 or bl["offset"] + bl["len"] > hoff:
            raise Refused("stored file %r: block lies outside the data section" % f["path"])
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        if b0 < a1:
            raise Refused("a block overlaps another block")
    return h


def validate_files(h):
    """2.4: stored names stay inside the output folder, one file each."""
    files = h.get("files", [])
    if files and not h["trained"].get("folder", False):
        raise Refused("stored files in a file not packed from a folder")
    shards = {s["file"].lower() for s in h["trained"]["shards"]}
    seen = set()
    for f in files:
        p = f["path"]
        if p.startswith("/"):
            raise Refused("stored file %r: absolute path" % p)
        if any(c in "\\:" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in p):
            raise Refused("stored file %r: bad character" % p)
        for c in p.split("/"):
            if c == "":
                raise Refused("stored file %r: empty component" % p)
            if c in (".", ".."):
                raise Refused("stored file %r: '..' or '.' component" % p)
        if f["size"] >= 1 << 48:
            raise Refused("stored file %r: size too large" % p)
        key = p.encode().lower()
        if key.decode() in shards:
            raise Refused("stored file %r: names a checkpoint shard" % p)
        if key in seen:
            raise Refused("stored file %r: names the same file as another entry" % p)
        seen.add(key)
    for f in files:
        parts = f["path"].lower().split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d.encode() in seen or d in shards:
                raise Refused("stored file %r: a folder of it is a file" % f["path"])


def validate_original(h, si):
    """2.2: an original header lists exactly the shard's tensors, in order, back to back."""
    s = h["trained"]["shards"][si]
    o = s.get("original")
    if o is None:
        return
    try:
        raw = json.loads(o["header"], object_pairs_hook=no_duplicates)
    except (ValueError, Refused) as e:
        raise Refused("shard %r: original header: %s" % (s["file"], e))
    entries = sorted(((k, v) for k, v in raw.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][0])
    ours = [t for t in h["tensors"] if t["shard"] == si]
    if len(ours) != len(entries):
        raise Refused("shard %r: original header: wrong number of tensors" % s["file"])
    end = 0
    for t, (name, e) in zip(ours, entries):
        if t["name"] != name or e["dtype"] != t["dtype"] or e["shape"] != t["shape"]:
            raise Refused("shard %r: original header: tensor %r differs" % (s["file"], name))
        n = math.prod(t["shape"]) * SIZES[t["dtype"]]
        if list(e["data_offsets"]) != [end, end + n]:
            raise Refused("shard %r: original header: not back to back" % s["file"])
        end += n


def chunk_lens(n, c):
    return [min(c, n - i * c) for i in range((n + c - 1) // c)]


def shared_shape(t):
    """2.6: the shape the encoding codes (the rows shared with the base)."""
    rz = t.get("resize")
    if rz is None:
        return list(t["shape"])
    return [min(t["shape"][0], rz["base_rows"])] + list(t["shape"][1:])


def tensor_blocks(t):
    """2.3: every block of a tensor, the added rows' (2.6) last."""
    rz = t.get("resize")
    return blocks_of(t["encoding"]) + (list(rz["added"]) if rz else [])


def blocks_of(e):
    """2.3: a tensor's blocks in their numbering."""
    if e["kind"] == "planes":
        return list(e["blocks"])
    if e["kind"] == "lossy":
        esc = [e["escapes"]] if e.get("escapes") is not None else []
        return e["factors"] + e["remainder"] + esc
    return []


def validate_entry(h, t, hoff):
    """2.3, 3.1-3.3 and 4: one tensor's rules."""
    name = t["name"]
    size = SIZES[t["dtype"]]
    numel = 1
    for d in t["shape"]:
        numel *= d
    if numel >= 1 << 64 or numel * size >= 1 << 48:
        raise Refused("tensor %r: shape too large" % name)
    if t["shard"] >= len(h["trained"]["shards"]):
        raise Refused("tensor %r: shard not listed" % name)
    base = t.get("base")
    c = h["settings"]["chunk"]
    base_shape = list(t["shape"])
    rz = t.get("resize")
    if rz is not None:
        # 2.6
        if not t["shape"]:
            raise Refused("tensor %r: resize: a 0-D tensor has no rows" % name)
        R, K = t["shape"][0], rz["base_rows"]
        if base is None or K < 1 or K == R:
            raise Refused("tensor %r: resize: no base, or base_rows 0 or equal to the rows" % name)
        base_shape[0] = K
        if base["shape"] != base_shape:
            raise Refused("tensor %r: resize: the base's shape is not base_rows rows" % name)
        row = math.prod(t["shape"][1:])
        lens = chunk_lens(max(R - K, 0) * row, c)
        if [bl["n"] for bl in rz["added"]] != [n for n in lens for _ in range(size)]:
            raise Refused("tensor %r: resize: added blocks do not match the added rows" % name)
    numel = math.prod(shared_shape(t))
    same_base = base is not None and base["dtype"] == t["dtype"] and base["shape"] == base_shape
    e = t["encoding"]
    if e["kind"] in ("same", "planes") and t.get("trained_xxh3") is None:
        raise Refused("tensor %r: lossless tensor without trained checksum" % name)
    if e["kind"] == "same" and not same_base:
        raise Refused("tensor %r: 'same' without a base of the same dtype and shape" % name)
    if e["kind"] == "planes":
        if e["xor"] and not same_base:
            raise Refused("tensor %r: xor planes without a base of the same dtype and shape" % name)
        lens = chunk_lens(numel, c)
        if len(e["blocks"]) != len(lens) * size:
            raise Refused("tensor %r: wrong number of plane blocks" % name)
        for i, bl in enumerate(e["blocks"]):
            if bl["n"] != lens[i // size]:
                raise Refused("tensor %r: block %d codes the wrong number of symbols" % (name, i))
    if e["kind"] == "lossy":
        if h["mode"] != "lossy":
            raise Refused("tensor %r: lossy tensor in a lossless file" % name)
        if t["dtype"] not in ("F32", "F16", "BF16", "F64"):
            raise Refused("tensor %r: lossy coding of a non-float dtype" % name)
        if base is None or base["shape"] != base_shape:
            raise Refused("tensor %r: lossy coding without a base of the same shape" % name)
        if base["dtype"] not in ("F32", "F16", "BF16", "F64"):
            raise Refused("tensor %r: lossy coding against a base of non-float dtype" % name)
        rows, cols, rank = e["rows"], e["cols"], e["rank"]
        if rows * cols != numel:
            raise Refused("tensor %r: rows x cols != numel" % name)
        if rank > min(rows, cols, 4096):
            raise Refused("tensor %r: rank too large" % name)
        if not (math.isfinite(e["step"]) and e["step"] > 0):
            raise Refused("tensor %r: step not positive" % name)
        if rank > 0 and not (math.isfinite(e["factor_step"]) and e["factor_step"] > 0):
            raise Refused("tensor %r: factor step not positive" % name)
        if len(e["recon"]) > 16 or not all(math.isfinite(r) for r in e["recon"]):
            raise Refused("tensor %r: bad reconstruction levels" % name)
        want = chunk_lens(rows * rank, c) + chunk_lens(rank * cols, c)
        if [bl["n"] for bl in e["factors"]] != want:
            raise Refused("tensor %r: factor blocks do not match rank x shape" % name)
        if e["remainder"] and [bl["n"] for bl in e["remainder"]] != chunk_lens(numel, c):
            raise Refused("tensor %r: remainder blocks do not match the shape" % name)
        esc = e.get("escapes")
        if esc is not None and esc["n"] > rows * rank + rank * cols + numel:
            raise Refused("tensor %r: more escapes than symbols" % name)
    for bl in tensor_blocks(t):
        if bl["offset"] < 16 or bl["len"] < 1 or bl["offset"] + bl["len"] > hoff:
            raise Refused("tensor %r: block lies outside the data section" % name)


def validate_schema(v, s, root, where):
    """The subset of JSON Schema that header-v1.schema.json uses."""
    if "$ref" in s:
        node = root
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return validate_schema(v, node, root, where)

    def bad(why):
        raise Refused("header is not a valid residual header: %s: %s" % (where, why))

    if "oneOf" in s:
        ok = 0
        for alt in s["oneOf"]:
            try:
                validate_schema(v, alt, root, where)
                ok += 1
            except Refused:
                pass
        if ok != 1:
            bad("matches %d alternatives, not one" % ok)
    if "not" in s:
        try:
            validate_schema(v, s["not"], root, where)
        except Refused:
            pass
        else:
            bad("value not allowed")
    if "const" in s and not (v == s["const"] and type(v) is type(s["const"])):
        bad("must be %r" % (s["const"],))
    if "enum" in s and v not in s["enum"]:
        bad("%r not one of %r" % (v, s["enum"]))
    t = s.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            bad("not an integer")
    elif t == "number":
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            bad("not a number")
    elif t is not None and not isinstance(v, types[t]):
        bad("not of type " + t)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            bad("below minimum")
        if "maximum" in s and v > s["maximum"]:
            bad("above maximum")
        if "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            bad("not above exclusive minimum")
    if isinstance(v, str):
        if len(v) < s.get("minLength", 0):
            bad("too short")
        if "pattern" in s and not re.search(s["pattern"], v):
            bad("does not match " + s["pattern"])
    if isinstance(v, list):
        if len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", len(v)):
            bad("wrong number of items")
        for i, x in enumerate(v):
            if "items" in s:
                validate_schema(x, s["items"], root, "%s[%d]" % (where, i))
    if isinstance(v, dict) and ("properties" in s or "required" in s):
        props = s.get("properties", {})
        for k in s.get("required", []):
            if k not in v:
                bad("missing field " + k)
        for k, x in v.items():
            if k in props:
                validate_schema(x, props[k], root, where + "." + k)
            elif s.get("additionalProperties", True) is False:
                bad("unknown field " + k)
            elif isinstance(s.get("additionalProperties"), dict):
                validate_schema(x, s["additionalProperties"], root, where + "." + k)
    elif isinstance(v, dict) and isinstance(s.get("additionalProperties"), dict):
        for k, x in v.items():
            validate_schema(x, s["additionalProperties"], root, where + "." + k)


# --------------------------------------------------------- 4. blocks -------

W = [math.floor(2 ** (q / 16) * 256 + 0.5) for q in range(256)]


def frequencies(present, q):
    """4.3: weights, then normalisation to 2^15."""
    w = {s: W[q[s]] for s in present}
    total = sum(w.values())
    f = {s: max(1, math.floor(w[s] * 32768.0 / float(total) + 0.5)) for s in present}
    d = 32768 - sum(f.values())
    order = sorted(present, key=lambda s: (-f[s], s))
    while d != 0:
        for s in order:
            if d > 0:
                add = min(d, max(1, d * f[s] // 32768))
                f[s] += add
                d -= add
            elif d < 0 and f[s] > 1:
                take = min(-d, f[s] - 1, max(1, (-d) * f[s] // 32768))
                f[s] -= take
                d += take
            if d == 0:
                break
    return f


def decode_symbols(body, n):
    """4.1 / 4.2: a symbol block of n symbols."""
    if not body:
        raise Refused("empty block")
    if body[0] == 0:
        if len(body) != 2:
            raise Refused("constant block of %d bytes" % len(body))
        return bytes([body[1]]) * n
    if body[0] != 1:
        raise Refused("unknown block kind %d" % body[0])
    if len(body) < 33:
        raise Refused("rANS block shorter than its table")
    present = [s for s in range(256) if body[1 + s // 8] >> (s % 8) & 1]
    if len(present) < 2:
        raise Refused("rANS table of fewer than 2 symbols")
    end = 33 + len(present)
    if len(body) < end:
        raise Refused("rANS block shorter than its table")
    q = {s: body[33 + i] for i, s in enumerate(present)}
    f = frequencies(present, q)
    start, acc, slot_sym = {}, 0, [0] * 32768
    for s in present:
        start[s] = acc
        for k in range(acc, acc + f[s]):
            slot_sym[k] = s
        acc += f[s]
    data = body[end:]
    if len(data) % 2 or len(data) < 16:
        raise Refused("rANS data is not whole words or lacks the states")
    words = struct.unpack("<%dH" % (len(data) // 2), data)
    p = 0

    def word():
        nonlocal p
        v = words[p] if p < len(words) else 0
        p += 1
        return v

    x = []
    for _ in range(4):
        hi = word()
        x.append((hi << 16) | word())
    out = bytearray(n)
    for i in range(n):
        j = i & 3
        slot = x[j] & 0x7FFF
        s = slot_sym[slot]
        v = f[s] * (x[j] >> 15) + slot - start[s]
        if v < 1 << 16:
            v = (v << 16) | word()
        x[j] = v
        out[i] = s
    if p != len(words) or any(v != 1 << 16 for v in x):
        raise Refused("rANS stream does not end where its states say")
    return bytes(out)


def decode_escapes(body, n):
    """4.4: a zstd frame of n LEB128 zigzag varints."""
    if not body or body[0] != 2:
        raise Refused("escape block is not a zstd block")
    raw = one_zstd_frame(body[1:], 16 * n + 16)
    if raw is None:
        raise Refused("escape block too large")
    out, z, shift = [], 0, 0
    for byte in raw:
        if shift > 63 or (shift == 63 and byte & 0x7F > 1):
            raise Refused("escape varint longer than 64 bits")
        z |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            out.append((z >> 1) ^ -(z & 1))
            z, shift = 0, 0
    if shift or len(out) != n:
        raise Refused("escape block holds %d values, header says %d" % (len(out), n))
    return out


# ------------------------------------------------------- 3. encodings ------

class File:
    def __init__(self, b, path):
        self.b, self.path = b, path

    def block(self, t, i, bl):
        """4: the block's bytes, checksum checked first."""
        body = self.b[bl["offset"]:bl["offset"] + bl["len"]]
        if "%016x" % xxh3(body) != bl["xxh3"]:
            raise Refused("tensor %r: block %d fails its checksum" % (t["name"], i))
        return body


def checked_base(t, base):
    """2.3: the base tensor by name, fingerprint checked."""
    fp = t.get("base")
    if fp is None:
        return None
    if t["name"] not in base:
        raise Refused("tensor %r: the base has no such tensor (another base)" % t["name"])
    dtype, shape, raw = base[t["name"]]
    if dtype != fp["dtype"] or shape != fp["shape"]:
        raise Refused("tensor %r: base tensor of another dtype or shape (another base)" % t["name"])
    if "%016x" % xxh3(raw) != fp["xxh3"]:
        raise Refused("tensor %r: fingerprint mismatch (another base)" % t["name"])
    return raw


def decode_planes(f, h, t, blocks, numel, xor, base_raw, first=0):
    """3.2: chunk-major byte planes, XOR with the base; `first` numbers
    the first block (2.6's added rows follow the encoding's blocks)."""
    size = SIZES[t["dtype"]]
    out = bytearray(numel * size)
    c = h["settings"]["chunk"]
    for ci, n in enumerate(chunk_lens(numel, c)):
        planes = [decode_symbols(f.block(t, first + ci * size + p, blocks[ci * size + p]), n)
                  for p in range(size)]
        for i in range(n):
            for p in range(size):
                k = (ci * c + i) * size + p
                v = planes[p][i]
                if xor:
                    v ^= base_raw[k]
                out[k] = v
    return bytes(out)


def levels(symbols, esc, state):
    """3.4: zigzag symbols, 255 drawn from the escape list."""
    out = []
    for s in symbols:
        if s == 255:
            if state[0] >= len(esc):
                raise Refused("more escape symbols than escaped values")
            q = esc[state[0]]
            state[0] += 1
            if abs(q) > 2 ** 30 - 1:
                raise Refused("escaped level out of range")
            out.append(q)
        else:
            out.append((s >> 1) ^ -(s & 1))
    return out


def decode_lossy(f, h, t, e, base):
    """3.3 and 3.5."""
    rows, cols, rank = e["rows"], e["cols"], e["rank"]
    c = h["settings"]["chunk"]
    z = h["settings"]["rate"]["dead_zone"]
    nf = len(e["factors"])
    nesc = nf + len(e["remainder"])
    esc = []
    if e.get("escapes") is not None:
        esc = decode_escapes(f.block(t, nesc, e["escapes"]), e["escapes"]["n"])
    state = [0]

    def stream(blocks, first):
        out = []
        for i, bl in enumerate(blocks):
            out += levels(decode_symbols(f.block(t, first + i, bl), bl["n"]), esc, state)
        return out

    na = len(chunk_lens(rows * rank, c))
    qa = stream(e["factors"][:na], 0)
    qb = stream(e["factors"][na:], na)
    qr = stream(e["remainder"], nf) if e["remainder"] else None
    if state[0] != len(esc):
        raise Refused("unused escaped values")
    fs = e["factor_step"]
    r = [0.0] * (rows * cols)
    if rank > 0:
        A = [f32(q * fs) for q in qa]
        B = [f32(q * fs) for q in qb]
        for i in range(rows):
            acc = [0.0] * cols
            for j in range(rank):
                a = A[i * rank + j]
                if a == 0.0:
                    continue
                row = B[j * cols:(j + 1) * cols]
                for cc in range(cols):
                    acc[cc] = f32(acc[cc] - f32(a * row[cc]))
            r[i * cols:(i + 1) * cols] = [-x for x in acc]
    if qr is not None:
        recon, step = e["recon"], e["step"]
        for k, q in enumerate(qr):
            if q == 0:
                v = 0.0
            else:
                m = recon[abs(q) - 1] if abs(q) <= len(recon) else ((z + abs(q)) - 0.5) * step
                v = f32(-m if q < 0 else m)
            r[k] = f32(r[k] + v)
    bd, _, braw = base[t["name"]]
    w = to_f32_values(bd, braw)[:rows * cols]  # 2.6: the base's first rows
    y = [f32(a + b) for a, b in zip(w, r)]
    for i, v in enumerate(y):
        if not math.isfinite(v):
            raise Refused("tensor %r: lossy rebuild of element %d is not finite" % (t["name"], i))
    return from_f32_values(t["dtype"], y)


def decode_tensor(f, h, t, base):
    """3: one tensor's raw bytes, checks included."""
    base_raw = checked_base(t, base)
    e = t["encoding"]
    numel = math.prod(shared_shape(t))
    if base_raw is not None and base[t["name"]][0] == t["dtype"]:
        base_raw = base_raw[:numel * SIZES[t["dtype"]]]  # 2.6: the shared rows
    if e["kind"] == "same":
        out = base_raw
    elif e["kind"] == "planes":
        out = decode_planes(f, h, t, e["blocks"], numel, e["xor"], base_raw)
    else:
        out = decode_lossy(f, h, t, e, base)
    rz = t.get("resize")
    if rz is not None:
        added = (math.prod(t["shape"]) - numel)
        out += decode_planes(f, h, t, rz["added"], added, False, None,
                             first=len(blocks_of(e)))
    want = t.get("trained_xxh3")
    if want is not None and "%016x" % xxh3(out) != want:
        raise Refused("tensor %r: rebuilt bytes fail the trained checksum" % t["name"])
    return out


def decode_stored_file(f, sf):
    """2.4 / 4.4: a stored file: a zstd block of exactly `size` bytes, sha256 checked."""
    bl = sf["block"]
    body = f.b[bl["offset"]:bl["offset"] + bl["len"]]
    if "%016x" % xxh3(body) != bl["xxh3"]:
        raise Refused("stored file %r: block fails its checksum" % sf["path"])
    if not body or body[0] != 2:
        raise Refused("stored file %r: not a zstd block" % sf["path"])
    try:
        raw = one_zstd_frame(body[1:], sf["size"])
    except Refused as e:
        raise Refused("stored file %r: %s" % (sf["path"], e))
    if raw is None or len(raw) != sf["size"]:
        raise Refused("stored file %r: decodes to the wrong size" % sf["path"])
    if sha(raw) != sf["sha256"]:
        raise Refused("stored file %r: fails its sha256" % sf["path"])
    return raw


# ------------------------------------------------------ 6. the output ------

def json_string(s):
    """6: the string escapes of the output header."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def safetensors_bytes(tensors, metadata):
    """6: the canonical layout of a rebuilt shard."""
    entries, off = {}, 0
    for name, dtype, shape, raw in tensors:
        entries[name] = '{"data_offsets":[%d,%d],"dtype":%s,"shape":[%s]}' % (
            off, off + len(raw), json_string(dtype), ",".join(str(d) for d in shape))
        off += len(raw)
    if metadata:
        entries["__metadata__"] = "{" + ",".join(
            json_string(k) + ":" + json_string(metadata[k])
            for k in sorted(metadata, key=lambda k: k.encode())) + "}"
    text = "{" + ",".join(json_string(k) + ":" + entries[k]
                          for k in sorted(entries, key=lambda k: k.encode())) + "}"
    text = text.encode("utf-8")
    while (8 + len(text)) % 8:
        text += b" "
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def decode_file(path, base_path, schemas):
    """Every section: returns ({output path: bytes}, {tensor: raw bytes})."""
    b = open(path, "rb").read()
    version = read_preamble(b)
    hoff, hlen, hsum = read_footer(b)
    h = read_header(b, hoff, hlen, hsum, version, schemas)
    base = read_safetensors(base_path)
    f = File(b, path)
    outputs = {sf["path"]: decode_stored_file(f, sf) for sf in h.get("files", [])}
    raws = {t["name"]: decode_tensor(f, h, t, base) for t in h["tensors"]}
    for si, s in enumerate(h["trained"]["shards"]):
        ts = [(t["name"], t["dtype"], t["shape"], raws[t["name"]])
              for t in h["tensors"] if t["shard"] == si]
        o = s.get("original")
        if o is None:
            out = safetensors_bytes(ts, s["metadata"])
        else:
            # 6: behind the trained file's own header, tensors in header order.
            text = o["header"].encode("utf-8")
            out = struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in ts)
            if h["mode"] == "lossless" and o.get("sha256") is not None and sha(out) != o["sha256"]:
                raise Refused("rebuilt %s differs from the original file" % s["file"])
        outputs[s["file"]] = out
    return outputs, raws


def sha(b):
    return hashlib.sha256(b).hexdigest()


def golden(d, schema):
    m = json.load(open(d + "/manifest.json"))
    failures = 0
    for c in m["cases"]:
        outputs, raws = decode_file(d + "/" + c["file"], d + "/" + c["base"], schema)
        if "outputs" in c:
            ok = all(sha(outputs[k]) == v for k, v in c["outputs"].items())
        else:
            ok = len(outputs) == 1 and sha(list(outputs.values())[0]) == c["rebuilt_sha256"]
        ok = ok and all(sha(raws[k]) == v for k, v in c["tensor_sha256"].items())
        print("%-4s %s" % ("ok" if ok else "FAIL", c["file"]))
        failures += not ok
    for e in m["errors"]:
        try:
            decode_file(d + "/" + e["file"], d + "/" + e["base"], schema)
            print("FAIL %s was accepted" % e["file"])
            failures += 1
        except Refused as why:
            print("ok   %s refused: %s" % (e["file"], why))
    return failures


def main(argv):
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    schema = {v: json.load(open(here + "/../../crates/resid-codec/schema/header-v%d.schema.json" % v))
              for v in (1, 2)}
    if len(argv) == 3 and argv[1] == "--golden":
        failures = golden(argv[2], schema)
        print("%d failure(s)" % failures)
        return 1 if failures else 0
    if len(argv) == 4:
        outputs, _ = decode_file(argv[1], argv[2], schema)
        if len(outputs) == 1:
            open(argv[3], "wb").write(list(outputs.values())[0])
        else:
            for rel, data in outputs.items():
                os.makedirs(os.path.dirname(os.path.join(argv[3], rel)) or ".", exist_ok=True)
                open(os.path.join(argv[3], rel), "wb").write(data)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
