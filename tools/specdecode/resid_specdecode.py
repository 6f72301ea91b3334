#!/usr/bin/env python3
"""resid_specdecode: a minimal `.resid` decoder (format versions 1 and 2) written from FORMAT.md alone.

Written by someone who has not read the Rust decoder (crates/) nor the other
Python decoder (tools/minidecode/); its only sources are FORMAT.md, the header
JSON Schema FORMAT.md references, the public safetensors format and the
golden data files. Each function's docstring names the FORMAT.md section it
follows. Where FORMAT.md left something open, the choice made here is marked
"GAP" and listed in SPEC-GAPS.md beside this file.

Usage:
    resid_specdecode.py BASE RESID -o OUT      rebuild the trained checkpoint
                                               (a file, or a folder when it was sharded or a model folder)
    resid_specdecode.py --golden DIR           check a golden folder's manifest

Needs Python 3.9+ and the PyPI packages `xxhash` (XXH3-64) and `zstandard`.
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import tempfile

import xxhash
import zstandard

# ---------------------------------------------------------------------------
# Conventions (FORMAT.md, preamble "Conventions")
# ---------------------------------------------------------------------------

U64_MAX = (1 << 64) - 1
MIB = 1 << 20


class Refused(Exception):
    """A refusal: `rule` is the FORMAT.md section whose rule refused the file."""

    def __init__(self, rule, message):
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __str__(self):
        return "[FORMAT.md %s] %s" % (self.rule, self.message)


def xxh3_hex(data):
    """Conventions: `xxh3` is XXH3-64 with seed 0, written as 16 lower-case hex digits."""
    return "%016x" % xxhash.xxh3_64_intdigest(data, seed=0)


def f32(x):
    """Conventions: `f32(x)` is IEEE 754 binary32 rounding of `x`, to nearest, ties to even.

    `x` is a Python float (binary64). struct's 'f' packing rounds to nearest
    even; it raises OverflowError exactly when the rounded value would be
    infinite, which IEEE rounding turns into an infinity of x's sign.
    (Every f32 op below is done as one binary64 op followed by this rounding:
    for +, -, * of two binary32 values binary64 holds >= 2*24+2 bits, so the
    double rounding equals one rounding to binary32.)
    """
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


# ---------------------------------------------------------------------------
# 1.1 Preamble, 1.2 Footer
# ---------------------------------------------------------------------------

MAGIC = bytes([0x52, 0x45, 0x53, 0x49, 0x44, 0x00, 0x0D, 0x0A])
END_MAGIC = b"RESIDEND"
KNOWN_VERSION = 2


def read_preamble(data):
    """FORMAT.md 1.1 Preamble (16 bytes), checked in the table's order:
    magic; `file_len >= 48`; version (1 or 2; larger: "newer"; 0: corrupt);
    flags (must be 0, reserved). Returns the version."""
    if len(data) < 8 or data[:8] != MAGIC:
        raise Refused("1.1", "not a residual file (bad magic)")
    if len(data) < 48:
        raise Refused("1.1", "truncated: %d bytes, a residual file has at least 48" % len(data))
    version, flags = struct.unpack_from("<II", data, 8)
    if version > KNOWN_VERSION:
        raise Refused("1.1", "format version %d is newer than this resid reads (%d)"
                      % (version, KNOWN_VERSION))
    if version == 0:
        raise Refused("1.1", "corrupt preamble: format version 0")
    if flags != 0:
        raise Refused("1.1", "preamble flags are %#x, must be 0 (reserved flags)" % flags)
    return version


def read_footer(data):
    """FORMAT.md 1.2 Footer (last 32 bytes): end magic first ("truncated or
    damaged"), then `1 <= header_len <= 256 MiB`, then `16 <= header_offset`
    and `header_offset + header_len + 32 == file_len`, then the header's xxh3
    ("header checksum mismatch"). Returns (header_offset, header_bytes)."""
    file_len = len(data)
    foot = data[file_len - 32:]
    if foot[24:32] != END_MAGIC:
        raise Refused("1.2", "truncated or damaged: no end magic RESIDEND at the end")
    header_offset, header_len, header_xxh3 = struct.unpack_from("<QQQ", foot, 0)
    # 5: the header is bounded by min(256 MiB, file_len) before it is read.
    if not (1 <= header_len <= min(256 * MIB, file_len)):
        raise Refused("1.2", "header_len %d out of range 1..256 MiB" % header_len)
    # Python integers do not overflow, so the sum below is the exact one.
    if header_offset < 16 or header_offset + header_len + 32 != file_len:
        raise Refused("1.2", "header placement: offset %d + len %d + 32 != file length %d"
                      % (header_offset, header_len, file_len))
    header = data[header_offset:header_offset + header_len]
    if xxhash.xxh3_64_intdigest(header, seed=0) != header_xxh3:
        raise Refused("1.2", "header checksum mismatch")
    return header_offset, header


# ---------------------------------------------------------------------------
# 1.3 Header encoding
# ---------------------------------------------------------------------------


def zstd_frames(data, limit, rule, what):
    """RFC 8878 data (one or more frames, skippable frames included), decoded
    with an output limit: refused when it decodes to more than `limit` bytes,
    is cut inside a frame, or holds bytes that are not a frame. Returns
    (content, [(frame's first byte offset, is_skippable)])."""
    dctx = zstandard.ZstdDecompressor()
    # Bounded first read: never more than limit + 1 bytes are produced.
    try:
        reader = dctx.stream_reader(data, read_across_frames=True)
        got = 0
        while got <= limit:
            piece = reader.read(limit + 1 - got)
            if not piece:
                break
            got += len(piece)
    except zstandard.ZstdError as e:
        raise Refused(rule, "%s does not decode: %s" % (what, e))
    if got > limit:
        raise Refused(rule, "%s decodes to more than %d bytes" % (what, limit))
    # Bounded now (at most `got` bytes): walk the frames to see that each is whole.
    out, frames, rest, pos = [], [], data, 0
    while rest:
        skippable = len(rest) >= 4 and (int.from_bytes(rest[:4], "little") & 0xFFFFFFF0) == 0x184D2A50
        obj = dctx.decompressobj()
        try:
            out.append(obj.decompress(rest))
        except zstandard.ZstdError as e:
            raise Refused(rule, "%s does not decode: %s" % (what, e))
        if not obj.eof:
            raise Refused(rule, "%s does not decode: a zstd frame is cut short" % what)
        frames.append((pos, skippable))
        pos += len(rest) - len(obj.unused_data)
        rest = obj.unused_data
    return b"".join(out), frames


def decode_header_bytes(header, version):
    """FORMAT.md 1.3 Header encoding. Version 1: the header bytes are the JSON
    text. v2: a zstd stream (RFC 8878) whose content is the JSON text, at most
    256 MiB decoded (decoding stops there); a stream that does not decode:
    "compressed header does not decode". (`header_xxh3` was checked on the
    stored bytes, 1.2.) GAP: "one frame as written" is read as a writer's
    habit: a reader accepts a stream of several frames (RFC 8878), skippable
    ones included, but no bytes after the last frame."""
    if version == 1:
        return header
    text, _frames = zstd_frames(header, 256 * MIB, "1.3", "compressed header")
    return text


# ---------------------------------------------------------------------------
# 2. Header (JSON), parsed strictly
# ---------------------------------------------------------------------------


class _Obj(dict):
    """A JSON object that remembers which keys appeared more than once."""

    dups = ()


def _pairs_hook(pairs):
    obj = _Obj(pairs)  # the last value of a repeated key is kept
    if len(obj) != len(pairs):
        seen, dups = set(), []
        for k, _ in pairs:
            if k in seen:
                dups.append(k)
            seen.add(k)
        obj.dups = tuple(dups)
    return obj


def _no_constant(name):
    raise Refused("2", "header is not RFC 8259 JSON: %s" % name)


def parse_header_json(header):
    """FORMAT.md 2: one JSON object (RFC 8259, UTF-8). Python's json module
    accepts NaN/Infinity (not RFC 8259): refused here. Repeated fields are
    recorded per object and refused by `_fields` (except in `metadata`, 7)."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused("2", "header is not UTF-8: %s" % e)
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_no_constant)
    except Refused:
        raise
    except (ValueError, RecursionError) as e:
        raise Refused("2", "header is not JSON: %s" % e)
    if not isinstance(doc, dict):
        raise Refused("2", "header is not a JSON object")
    return doc


def _fields(obj, where, required, optional_null=(), optional=()):
    """FORMAT.md 2: unknown fields anywhere are refused; every listed field is
    required, except one whose value may be null (then it may be left out,
    read as null) and the v2 fields marked optional (`optional`: may be left
    out, GAP: not null); a field may not appear twice in one object."""
    if not isinstance(obj, dict):
        raise Refused("2", "%s is not an object" % where)
    if getattr(obj, "dups", ()):
        raise Refused("2", "%s: field %r appears twice" % (where, obj.dups[0]))
    for k in obj:
        if k not in required and k not in optional_null and k not in optional:
            raise Refused("2", "%s: unknown field %r" % (where, k))
    for k in required:
        if k not in obj:
            raise Refused("2", "%s: missing field %r" % (where, k))
    for k in optional_null:
        obj.setdefault(k, None)
    return obj


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _u64(v, where):
    """FORMAT.md 2: integers are JSON integers that fit u64."""
    if not _is_int(v) or not (0 <= v <= U64_MAX):
        raise Refused("2", "%s must be an integer in u64, got %r" % (where, v))
    return v


def _num(v, where):
    """FORMAT.md 2: floats are JSON numbers (GAP: an integer literal is taken as a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Refused("2", "%s must be a number, got %r" % (where, v))
    return float(v)


def _bool(v, where):
    if not isinstance(v, bool):
        raise Refused("2", "%s must be a boolean" % where)
    return v


def _str(v, where):
    if not isinstance(v, str):
        raise Refused("2", "%s must be a string" % where)
    return v


def _sha256_field(v, where, rule="2.2"):
    """FORMAT.md 2.2 / 2.4: a sha256 is 64 lower-case hex digits."""
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise Refused(rule, "%s must be 64 lower-case hex digits" % where)
    return v


def _xxh3_field(v, where):
    """Conventions: an xxh3 in JSON is exactly 16 lower-case hex digits."""
    if not isinstance(v, str) or len(v) != 16 or any(c not in "0123456789abcdef" for c in v):
        raise Refused("2", "%s must be 16 lower-case hex digits" % where)
    return v


def refuse_v2_fields(doc):
    """FORMAT.md 2: "A version-1 header holding any field marked v2
    (`provenance`, `files`, `trained.folder`, `shards[].original`) is refused
    ("field ... is not part of format version 1")". Checked before the
    unknown-field rule, which would otherwise name them first."""
    def no(field):
        raise Refused("2", "field %r is not part of format version 1" % field)
    if not isinstance(doc, dict):
        return
    for k in ("provenance", "files"):
        if k in doc:
            no(k)
    trained = doc.get("trained")
    if isinstance(trained, dict):
        if "folder" in trained:
            no("trained.folder")
        for sh in trained.get("shards") if isinstance(trained.get("shards"), list) else ():
            if isinstance(sh, dict) and "original" in sh:
                no("shards[].original")


def check_header(doc, preamble_version):
    """FORMAT.md 2 (top-level table): format "resid", version equal to the
    preamble's, mode lossless|lossy, settings (2.1), trained (2.2), tensors
    (2.3; at most 1,000,000; names non-empty and unique), stats
    (informational, types only); v2: provenance (2.5) and files (2.4),
    both optional. Then the checks that need the tensor list: each v2
    `original` header (2.2) and the placement of every block (4)."""
    if preamble_version == 1:
        refuse_v2_fields(doc)
    v2 = ("provenance", "files") if preamble_version >= 2 else ()
    _fields(doc, "header", ("format", "version", "mode", "settings", "trained", "tensors", "stats"),
            optional=v2)
    if doc["format"] != "resid":
        raise Refused("2", "header format is %r, not \"resid\"" % (doc["format"],))
    if _u64(doc["version"], "version") != preamble_version:
        raise Refused("2", "header version %d differs from the preamble's %d"
                      % (doc["version"], preamble_version))
    if doc["mode"] not in ("lossless", "lossy"):
        raise Refused("2", "mode %r is neither \"lossless\" nor \"lossy\"" % (doc["mode"],))
    settings = check_settings(doc["settings"], doc["mode"])
    trained = check_trained(doc["trained"], preamble_version)
    check_stats(doc["stats"])
    if "provenance" in doc:
        check_provenance(doc["provenance"])
    tensors = doc["tensors"]
    if not isinstance(tensors, list):
        raise Refused("2", "tensors is not an array")
    if len(tensors) > 1_000_000:
        raise Refused("2", "%d tensors, at most 1,000,000" % len(tensors))
    names = set()
    for i, t in enumerate(tensors):
        check_tensor_entry(t, i, doc["mode"], settings, trained)
        if t["name"] in names:
            raise Refused("2", "tensor %d: empty or duplicate name %r" % (i, t["name"]))
        names.add(t["name"])
    files = check_files(doc.get("files", []), trained)
    for i, sh in enumerate(trained["shards"]):
        if "original" in sh:
            check_original_header(sh, i, [t for t in tensors if t["shard"] == i], doc["mode"])
    check_blocks_placement(tensors, files)
    return doc


def check_stats(stats):
    """FORMAT.md 2, `stats`: informational, never used to rebuild; u64 and f64 fields."""
    _fields(stats, "stats", ("params", "trained_bytes", "coded_bytes",
                             "entropy_bytes", "residual_rel_error", "weight_rel_error"))
    for k in ("params", "trained_bytes", "coded_bytes"):
        _u64(stats[k], "stats." + k)
    for k in ("entropy_bytes", "residual_rel_error", "weight_rel_error"):
        _num(stats[k], "stats." + k)


def check_settings(s, mode):
    """FORMAT.md 2.1 `settings`: chunk a power of two in [2^12, 2^24]; seed u64;
    threads_independent bool (not checked); rate null or
    {kind, target, step, dead_zone}, required when mode is lossy."""
    _fields(s, "settings", ("chunk", "seed", "threads_independent"), ("rate",))
    chunk = _u64(s["chunk"], "settings.chunk")
    if chunk & (chunk - 1) or chunk == 0:
        raise Refused("2.1", "settings.chunk %d is not a power of two" % chunk)
    if not ((1 << 12) <= chunk <= (1 << 24)):
        raise Refused("2.1", "settings.chunk %d outside [2^12, 2^24]" % chunk)
    _u64(s["seed"], "settings.seed")
    _bool(s["threads_independent"], "settings.threads_independent")
    rate = s["rate"]
    if rate is not None:
        _fields(rate, "settings.rate", ("kind", "target", "step", "dead_zone"))
        if rate["kind"] not in ("bits_per_param", "keep", "max_error"):
            raise Refused("2.1", "settings.rate.kind %r unknown" % (rate["kind"],))
        for k in ("target", "step", "dead_zone"):
            rate[k] = _num(rate[k], "settings.rate." + k)
    elif mode == "lossy":
        raise Refused("2.1", "a lossy file needs settings.rate (its dead_zone rebuilds, 3.5)")
    return s


def check_trained(t, version):
    """FORMAT.md 2.2 `trained`: sharded bool; shards >= 1 of {file, metadata};
    file a plain name (non-empty, no '/', no '\\', not '..'); unsharded means
    exactly one shard. metadata is {string: string}; a repeated key inside it
    keeps its last value (7). v2: `folder` (optional bool, absent = false) and
    each shard's optional `original` {header, sha256?} (its header text
    is checked against the tensors by `check_original_header`)."""
    v2 = version >= 2
    _fields(t, "trained", ("sharded", "shards"), optional=("folder",) if v2 else ())
    if "folder" in t:
        _bool(t["folder"], "trained.folder")
    sharded = _bool(t["sharded"], "trained.sharded")
    shards = t["shards"]
    if not isinstance(shards, list) or len(shards) < 1:
        raise Refused("2.2", "trained.shards must be an array of at least one shard")
    if not sharded and len(shards) != 1:
        raise Refused("2.2", "an unsharded file lists %d shards" % len(shards))
    files = set()
    for i, sh in enumerate(shards):
        _fields(sh, "trained.shards[%d]" % i, ("file", "metadata"), optional=("original",) if v2 else ())
        if "original" in sh:
            o = _fields(sh["original"], "trained.shards[%d].original" % i, ("header",), optional=("sha256",))
            _str(o["header"], "trained.shards[%d].original.header" % i)
            if "sha256" in o:
                _sha256_field(o["sha256"], "trained.shards[%d].original.sha256" % i)
        f = _str(sh["file"], "trained.shards[%d].file" % i)
        # GAP (E): "." passes 2.2's rule but names no file; refused here.
        if f == "" or "/" in f or "\\" in f or f in ("..", "."):
            raise Refused("2.2", "shard file name %r is not a plain file name" % f)
        # GAP: FORMAT.md does not say shard names are distinct, nor that none is
        # the index's name; two equal names would overwrite each other (6).
        if sharded and (f in files or f == INDEX_NAME):
            raise Refused("2.2", "shard file name %r repeated or reserved" % f)
        files.add(f)
        md = sh["metadata"]
        if not isinstance(md, dict):
            raise Refused("2.2", "trained.shards[%d].metadata is not an object" % i)
        for k, v in md.items():  # md.dups allowed: the last value is kept (7)
            _str(v, "trained.shards[%d].metadata[%r]" % (i, k))
    return t


def check_original_header(sh, i, tensors, mode):
    """FORMAT.md 2.2 v2 `original`: `header` is the trained shard's own
    safetensors header text, verbatim (padding included). It is parsed as a
    safetensors header (a JSON object of `name: {"dtype", "shape",
    "data_offsets"}` entries and an optional `__metadata__`; a repeated key is
    refused) and refused ("original header") unless its tensors, sorted by
    their first data offset, are exactly this shard's tensors in the residual
    header's order (same names, dtypes and shapes), laid out back to back from
    offset 0, each `numel * s` bytes long.
    GAP (E): ties in "sorted by their first data offset" (zero-length tensors
    share an offset with their neighbour) are not ordered by the text; the
    check below walks the residual header's order, which accepts exactly the
    files in which some offset-sorted order is the residual order.
    GAP (E): the entries' own fields are read strictly (no others), and
    `__metadata__` must be {string: string} as in safetensors; FORMAT.md does
    not say. Nothing ties `__metadata__` to the shard's `metadata` (not checked)."""
    where = "shard %r: original header" % sh["file"]
    text = sh["original"]["header"]
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("2.2", "%s is not UTF-8 text" % where)
    try:
        doc = parse_header_json(raw)
    except Refused as e:
        raise Refused("2.2", "%s is not a safetensors header (%s)" % (where, e.message))
    dup = _first_dup(doc)
    if dup is not None:
        raise Refused("2.2", "%s repeats the key %r" % (where, dup))
    entries = {}
    for name, e in doc.items():
        if name == "__metadata__":
            if not isinstance(e, dict) or not all(isinstance(v, str) for v in e.values()):
                raise Refused("2.2", "%s: __metadata__ is not an object of strings" % where)
            continue
        try:
            _fields(e, "%s entry %r" % (where, name), ("dtype", "shape", "data_offsets"))
            _dtype(e["dtype"], "%s entry %r" % (where, name))
            _shape(e["shape"], "%s entry %r" % (where, name))
            off = e["data_offsets"]
            if not isinstance(off, list) or len(off) != 2:
                raise Refused("2.2", "data_offsets is not [begin, end]")
            for v in off:
                _u64(v, "data_offsets")
        except Refused as err:
            raise Refused("2.2", "%s: entry %r is not a safetensors entry (%s)" % (where, name, err.message))
        entries[name] = e
    pos = 0
    for t in tensors:
        e = entries.get(t["name"])
        if e is None:
            raise Refused("2.2", "%s does not list tensor %r" % (where, t["name"]))
        if e["dtype"] != t["dtype"] or e["shape"] != t["shape"]:
            raise Refused("2.2", "%s gives tensor %r as %s %s, the residual header as %s %s"
                          % (where, t["name"], e["dtype"], e["shape"], t["dtype"], t["shape"]))
        end = pos + t["_numel"] * t["_s"]
        if e["data_offsets"] != [pos, end]:
            raise Refused("2.2", "%s places tensor %r at %s; laid out back to back in the residual "
                          "header's order it is at [%d, %d]" % (where, t["name"], e["data_offsets"], pos, end))
        pos = end
    extra = sorted(set(entries) - {t["name"] for t in tensors})
    if extra:
        raise Refused("2.2", "%s lists tensor %r, which the residual header does not give this shard"
                      % (where, extra[0]))


def _first_dup(obj):
    """A key repeated in any object of a parsed JSON value (2.2: refused in `original`)."""
    if isinstance(obj, dict):
        if getattr(obj, "dups", ()):
            return obj.dups[0]
        for v in obj.values():
            d = _first_dup(v)
            if d is not None:
                return d
    elif isinstance(obj, list):
        for v in obj:
            d = _first_dup(v)
            if d is not None:
                return d
    return None


# 2.3 dtype table: safetensors spelling -> size s in bytes.
DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
LOSSY_DTYPES = ("F32", "F16", "BF16", "F64")


def _dtype(v, where):
    if v not in DTYPE_SIZE:
        raise Refused("2.3", "%s: unknown dtype %r" % (where, v))
    return v


def _shape(v, where):
    """FORMAT.md 2.3 `shape`: array of int; numel = product (1 for []),
    computed without u64 overflow."""
    if not isinstance(v, list):
        raise Refused("2.3", "%s: shape is not an array" % where)
    numel = 1
    for d in v:
        _u64(d, where + " shape entry")
        numel *= d
        if numel > U64_MAX:
            raise Refused("2.3", "%s: numel overflows u64" % where)
    return numel


def check_tensor_entry(t, i, mode, settings, trained):
    """FORMAT.md 2.3 Tensor entry: name non-empty; dtype from the table;
    shape with `numel * s < 2^48`; shard < shards.len(); base null or
    {dtype, shape, xxh3}; trained_xxh3 null or xxh3; encoding one of 3.1-3.3.
    Stores the derived `_numel`, `_s` on the entry."""
    _fields(t, "tensors[%d]" % i, ("name", "dtype", "shape", "shard", "encoding"),
            ("base", "trained_xxh3"))
    name = _str(t["name"], "tensors[%d].name" % i)
    if name == "":
        raise Refused("2.3", "tensor %d: empty or duplicate name ''" % i)
    where = "tensor %r" % name
    s = DTYPE_SIZE[_dtype(t["dtype"], where)]
    numel = _shape(t["shape"], where)
    if numel * s >= (1 << 48):
        raise Refused("2.3", "%s: numel * size >= 2^48" % where)
    if _u64(t["shard"], where + " shard") >= len(trained["shards"]):
        raise Refused("2.3", "%s: shard %d does not exist" % (where, t["shard"]))
    base = t["base"]
    if base is not None:
        _fields(base, where + " base", ("dtype", "shape", "xxh3"))
        _dtype(base["dtype"], where + " base")
        base["_numel"] = _shape(base["shape"], where + " base")
        _xxh3_field(base["xxh3"], where + " base.xxh3")
    if t["trained_xxh3"] is not None:
        _xxh3_field(t["trained_xxh3"], where + " trained_xxh3")
    t["_numel"], t["_s"] = numel, s
    enc = t["encoding"]
    if not isinstance(enc, dict) or "kind" not in enc:
        raise Refused("2.3", "%s: encoding is not an object with a kind" % where)
    kind = enc["kind"]
    if kind == "same":
        check_same(t, where)
    elif kind == "planes":
        check_planes(t, where, settings["chunk"])
    elif kind == "lossy":
        check_lossy(t, where, mode, settings["chunk"])
    else:
        raise Refused("2.3", "%s: unknown encoding kind %r" % (where, kind))


def _base_same_dtype_shape(t):
    b = t["base"]
    return b is not None and b["dtype"] == t["dtype"] and b["shape"] == t["shape"]


# ---------------------------------------------------------------------------
# 2.4 `files`, 2.5 `provenance` (v2)
# ---------------------------------------------------------------------------


def check_provenance(p):
    """FORMAT.md 2.5 v2 `provenance`: {"resid_version": string, "base_repo"?,
    "base_revision"?, "trained_repo"?, "trained_revision"?: string}.
    Informational: never used to rebuild."""
    optional = ("base_repo", "base_revision", "trained_repo", "trained_revision")
    _fields(p, "provenance", ("resid_version",), optional=optional)
    for k in ("resid_version",) + optional:
        if k in p:
            _str(p[k], "provenance." + k)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _fold(path):
    """FORMAT.md 2.4: paths compared "when ASCII letters are compared without case"."""
    return path.translate(_ASCII_LOWER)


def check_stored_path(path):
    """FORMAT.md 2.4: a stored file's `path` stays inside the output folder and
    names one file. Refused, in the text's order: an empty path or one starting
    with `/` ("absolute path"); a `\\`, `:` or control character (U+0000-U+001F,
    U+007F-U+009F) anywhere; an empty, `.` or `..` component (components are
    separated by `/`). GAP (C13, E): a path that cannot be UTF-8 (a lone
    surrogate from a JSON escape) is refused too."""
    where = "stored file %r" % path
    if path == "" or path.startswith("/"):
        raise Refused("2.4", "%s: absolute path (empty, or starting with '/')" % where)
    for ch in path:
        if ch in "\\:" or ord(ch) <= 0x1F or 0x7F <= ord(ch) <= 0x9F:
            raise Refused("2.4", "%s: the character %r is not allowed in a path" % (where, ch))
    for comp in path.split("/"):
        if comp == "":
            raise Refused("2.4", "%s: empty component" % where)
        if comp in (".", ".."):
            raise Refused("2.4", "%s: '..' or '.' component" % where)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused("2.4", "%s: not UTF-8" % where)


def check_files(files, trained):
    """FORMAT.md 2.4 v2 `files`: at most 100,000 entries `{"path", "size",
    "sha256", "block"}`; `files` requires `trained.folder`; each path passes
    `check_stored_path`; `size < 2^48`; sha256 64 lower-case hex digits; the
    block is a zstd block (4.4) whose `n` is `size` (GAP (E): n != size is
    refused). Refused too: two paths equal with ASCII letters compared without
    case ("names the same file as another entry"), a path so equal to a
    shard's `file`, and a path one of whose folders is another entry's path
    or a shard's file (GAP (E): folders compared without case as well).
    All of it before anything is written."""
    if not isinstance(files, list):
        raise Refused("2.4", "files is not an array")
    if len(files) > 100_000:
        raise Refused("2.4", "%d stored files, at most 100,000" % len(files))
    if files and not trained.get("folder", False):
        raise Refused("2.4", "files requires trained.folder")
    for i, f in enumerate(files):
        _fields(f, "files[%d]" % i, ("path", "size", "sha256", "block"))
        path = _str(f["path"], "files[%d].path" % i)
        check_stored_path(path)
        where = "stored file %r" % path
        if _u64(f["size"], where + " size") >= (1 << 48):
            raise Refused("2.4", "%s: size %d >= 2^48" % (where, f["size"]))
        _sha256_field(f["sha256"], where + " sha256", "2.4")
        check_block(f["block"], where, None)
        if f["block"]["n"] != f["size"]:
            raise Refused("2.4", "%s: block n = %d, size is %d" % (where, f["block"]["n"], f["size"]))
    shard_files = {_fold(sh["file"]): sh["file"] for sh in trained["shards"]}
    entry_paths = {}
    for f in files:
        key = _fold(f["path"])
        if key in entry_paths:
            raise Refused("2.4", "stored file %r names the same file as another entry (%r)"
                          % (f["path"], entry_paths[key]))
        if key in shard_files:
            raise Refused("2.4", "stored file %r names the same file as the shard %r"
                          % (f["path"], shard_files[key]))
        entry_paths[key] = f["path"]
    for f in files:
        comps = _fold(f["path"]).split("/")
        for k in range(1, len(comps)):
            folder = "/".join(comps[:k])
            if folder in entry_paths or folder in shard_files:
                raise Refused("2.4", "stored file %r: its folder %r names the same file as %s"
                              % (f["path"], folder, "another entry" if folder in entry_paths else "a shard"))
    return files


# ---------------------------------------------------------------------------
# 3. Encodings (header checks)
# ---------------------------------------------------------------------------


def check_same(t, where):
    """FORMAT.md 3.1 {"kind": "same"}: requires base with the same dtype and
    shape as the entry, and trained_xxh3. No blocks."""
    _fields(t["encoding"], where + " encoding", ("kind",))
    if not _base_same_dtype_shape(t):
        raise Refused("3.1", "%s: `same` needs a base of the same dtype and shape" % where)
    if t["trained_xxh3"] is None:
        raise Refused("3.1", "%s: `same` needs trained_xxh3" % where)


def _ceil_div(a, b):
    return -(-a // b)


def check_planes(t, where, chunk):
    """FORMAT.md 3.2 {"kind": "planes", "xor", "blocks"}: requires
    trained_xxh3; xor true requires base of the same dtype and shape;
    exactly ceil(numel/chunk) * s blocks, blocks[c*s+p] with n == n_c."""
    enc = _fields(t["encoding"], where + " encoding", ("kind", "xor", "blocks"))
    _bool(enc["xor"], where + " encoding.xor")
    if t["trained_xxh3"] is None:
        raise Refused("3.2", "%s: `planes` needs trained_xxh3" % where)
    if enc["xor"] and not _base_same_dtype_shape(t):
        raise Refused("3.2", "%s: `planes` with xor needs a base of the same dtype and shape" % where)
    blocks = enc["blocks"]
    if not isinstance(blocks, list):
        raise Refused("3.2", "%s: blocks is not an array" % where)
    numel, s = t["_numel"], t["_s"]
    nchunks = _ceil_div(numel, chunk)
    if len(blocks) != nchunks * s:
        raise Refused("3.2", "%s: %d blocks, planes need ceil(numel/chunk)*s = %d"
                      % (where, len(blocks), nchunks * s))
    for k, b in enumerate(blocks):
        check_block(b, where, k)
        c = k // s
        n_c = min(chunk, numel - c * chunk)
        if b["n"] != n_c:
            raise Refused("3.2", "%s block %d: n = %d, its chunk holds %d elements"
                          % (where, k, b["n"], n_c))
    t["_blocks"] = list(blocks)


def check_lossy(t, where, mode, chunk):
    """FORMAT.md 3.3 {"kind": "lossy", ...}: only in a lossy file; dtype F32,
    F16, BF16 or F64; base with the same shape; rows*cols == numel;
    0 <= rank <= min(rows, cols, 4096); factor_step > 0 finite when rank > 0;
    step > 0 finite; recon at most 16 finite values; factor blocks
    ceil(rows*rank/chunk) + ceil(rank*cols/chunk); remainder empty or
    ceil(numel/chunk); escapes null or a block with n <= rows*rank + rank*cols + numel."""
    enc = _fields(t["encoding"], where + " encoding",
                  ("kind", "rows", "cols", "rank", "factor_step", "step", "recon",
                   "factors", "remainder"), ("escapes",))
    if mode != "lossy":
        raise Refused("3.3", "%s: a lossy tensor in a lossless file" % where)
    if t["dtype"] not in LOSSY_DTYPES:
        raise Refused("3.3", "%s: lossy tensors are F32, F16, BF16 or F64, not %s" % (where, t["dtype"]))
    base = t["base"]
    if base is None or base["shape"] != t["shape"]:
        raise Refused("3.3", "%s: a lossy tensor needs a base of the same shape" % where)
    # GAP: 3.5 step 4 only defines f32(base) for F16, BF16, F32 and F64 bases.
    if base["dtype"] not in LOSSY_DTYPES:
        raise Refused("3.3", "%s: lossy tensor's base dtype %s is not a float" % (where, base["dtype"]))
    rows = _u64(enc["rows"], where + " rows")
    cols = _u64(enc["cols"], where + " cols")
    numel = t["_numel"]
    if rows * cols != numel:
        raise Refused("3.3", "%s: rows * cols = %d, numel is %d" % (where, rows * cols, numel))
    rank = _u64(enc["rank"], where + " rank")
    if rank > min(rows, cols, 4096):
        raise Refused("3.3", "%s: rank %d > min(rows, cols, 4096)" % (where, rank))
    fs = _num(enc["factor_step"], where + " factor_step")
    if rank > 0 and not (fs > 0 and math.isfinite(fs)):
        raise Refused("3.3", "%s: factor_step %r must be > 0 and finite" % (where, fs))
    enc["factor_step"] = fs
    step = _num(enc["step"], where + " step")
    if not (step > 0 and math.isfinite(step)):
        raise Refused("3.3", "%s: step %r must be > 0 and finite" % (where, step))
    enc["step"] = step
    recon = enc["recon"]
    if not isinstance(recon, list) or len(recon) > 16:
        raise Refused("3.3", "%s: recon must be an array of at most 16 numbers" % where)
    recon = [_num(v, where + " recon") for v in recon]
    if not all(math.isfinite(v) for v in recon):
        raise Refused("3.3", "%s: recon values must be finite" % where)
    enc["recon"] = recon
    factors, remainder, escapes = enc["factors"], enc["remainder"], enc["escapes"]
    if not isinstance(factors, list) or not isinstance(remainder, list):
        raise Refused("3.3", "%s: factors and remainder must be arrays" % where)
    pieces_a = _pieces(rows * rank, chunk)
    pieces_b = _pieces(rank * cols, chunk)
    if len(factors) != len(pieces_a) + len(pieces_b):
        raise Refused("3.3", "%s: %d factor blocks, expected %d"
                      % (where, len(factors), len(pieces_a) + len(pieces_b)))
    pieces_r = _pieces(numel, chunk)
    if remainder and len(remainder) != len(pieces_r):
        raise Refused("3.3", "%s: %d remainder blocks, expected 0 or %d"
                      % (where, len(remainder), len(pieces_r)))
    numbered = list(factors) + list(remainder)
    expect = pieces_a + pieces_b + (pieces_r if remainder else [])
    for k, (b, n) in enumerate(zip(numbered, expect)):
        check_block(b, where, k)
        if b["n"] != n:
            raise Refused("3.3", "%s block %d: n = %d, its piece holds %d symbols" % (where, k, b["n"], n))
    if escapes is not None:
        check_block(escapes, where, len(numbered))
        if escapes["n"] > rows * rank + rank * cols + numel:
            raise Refused("3.3", "%s: escapes n = %d too large" % (where, escapes["n"]))
        numbered.append(escapes)
    t["_blocks"] = numbered
    t["_split"] = (len(pieces_a), len(pieces_b), len(remainder))


def _pieces(total, chunk):
    """A stream of `total` symbols cut in chunks of `chunk` (3.2, 3.3): piece lengths."""
    return [min(chunk, total - k) for k in range(0, total, chunk)]


# ---------------------------------------------------------------------------
# 4. Blocks (header checks and bodies)
# ---------------------------------------------------------------------------


def _block_label(where, k):
    """Error messages name blocks by tensor and number (2.3); a stored file's one block by its path."""
    return "%s block" % where if k is None else "%s block %d" % (where, k)


def check_block(b, where, k):
    """FORMAT.md 4: a Block is {offset, len, xxh3, n, bits}; 16 <= offset,
    1 <= len (7: zero-length blocks refused); n u64; bits informational.
    Placement against header_offset and overlap: `check_blocks_placement`."""
    _fields(b, _block_label(where, k), ("offset", "len", "xxh3", "n", "bits"))
    _u64(b["offset"], "block offset")
    _u64(b["len"], "block len")
    _xxh3_field(b["xxh3"], "block xxh3")
    _u64(b["n"], "block n")
    _num(b["bits"], "block bits")
    if b["offset"] < 16:
        raise Refused("4", "%s: offset %d < 16" % (_block_label(where, k), b["offset"]))
    if b["len"] < 1:
        raise Refused("4", "%s: zero-length block" % _block_label(where, k))


def check_blocks_placement(tensors, files):
    """FORMAT.md 4: `offset + len <= header_offset` (no overflow) and blocks of
    the whole file (every tensor's, and v2 every stored file's) do not overlap
    ("a block overlaps another block"); gaps are allowed and ignored (1)."""
    owned = []
    for t in tensors:
        for k, b in enumerate(t.get("_blocks", ())):
            owned.append((b, _block_label("tensor %r" % t["name"], k)))
    for f in files:
        owned.append((f["block"], _block_label("stored file %r" % f["path"], None)))
    spans = []
    for b, label in owned:
        if b["offset"] + b["len"] > HEADER_OFFSET[0]:
            raise Refused("4", "%s: bytes %d..%d lie outside the data section (which ends at %d)"
                          % (label, b["offset"], b["offset"] + b["len"], HEADER_OFFSET[0]))
        spans.append((b["offset"], b["offset"] + b["len"], label))
    spans.sort()
    for (s0, e0, l0), (s1, e1, l1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise Refused("4", "%s: a block overlaps another block (%s)" % (l1, l0))


HEADER_OFFSET = [0]  # set by read_residual before the header is checked


def block_body(data, b, where, k):
    """FORMAT.md 4: `xxh3` is the checksum of the `len` bytes at `offset`,
    checked before the block is decoded; a mismatch names the tensor and block."""
    body = data[b["offset"]:b["offset"] + b["len"]]
    if xxh3_hex(body) != b["xxh3"]:
        raise Refused("4", "%s fails its checksum" % _block_label(where, k))
    return body


def decode_symbol_block(body, n, where, k):
    """FORMAT.md 4: a symbol block is of kind 0 (4.1) or 1 (4.2); kind 2 is
    for escapes only; any other kind: "unknown block kind". Returns n symbols."""
    kind = body[0]
    if kind == 0:
        return decode_constant(body, n, where, k)
    if kind == 1:
        return decode_rans(body, n, where, k)
    if kind == 2:
        raise Refused("4", "%s block %d: a zstd block where a symbol block belongs" % (where, k))
    raise Refused("4", "%s block %d: unknown block kind %d" % (where, k, kind))


def decode_constant(body, n, where, k):
    """FORMAT.md 4.1 Kind 0: `00, u8 symbol`, exactly 2 bytes (else "constant
    block of N bytes"); all n symbols equal `symbol`."""
    if len(body) != 2:
        raise Refused("4.1", "%s block %d: constant block of %d bytes" % (where, k, len(body)))
    return bytes([body[1]]) * n


def decode_rans(body, n, where, k):
    """FORMAT.md 4.2 Kind 1: rANS. `01 | bitmap (32 B) | q[s] per present s |
    words (u16 LE)`; >= 2 present symbols; words an even byte count >= 16.
    4 interleaved 32-bit states, symbol i uses state i mod 4; states read from
    two words each, high word first; per symbol: slot = x & 0x7fff, find s,
    x = f[s]*(x>>15) + slot - start[s], renormalise once when x < 2^16 (a word
    past the end reads as 0). At the end every state is 2^16 and p is the word
    count ("rANS stream does not end where its states say")."""
    if len(body) < 33:
        raise Refused("4.2", "%s block %d: rANS block of %d bytes has no full bitmap" % (where, k, len(body)))
    bitmap = body[1:33]
    present = [s for s in range(256) if bitmap[s // 8] >> (s % 8) & 1]
    m = len(present)
    if m < 2:
        raise Refused("4.2", "%s block %d: rANS block with %d present symbol(s)" % (where, k, m))
    if len(body) < 33 + m:
        raise Refused("4.2", "%s block %d: rANS block cut inside its q table" % (where, k))
    q = body[33:33 + m]
    rest = body[33 + m:]
    if len(rest) % 2 or len(rest) < 16:
        raise Refused("4.2", "%s block %d: rANS words are %d bytes (even, >= 16 needed)" % (where, k, len(rest)))
    freq, start = frequency_table(present, q)
    lookup = bytearray(1 << 15)
    for s in present:
        lookup[start[s]:start[s] + freq[s]] = bytes([s]) * freq[s]
    nw = len(rest) // 2
    words = struct.unpack("<%dH" % nw, rest)
    p = 0
    st = []
    for _ in range(4):
        st.append((words[p] << 16) | words[p + 1])
        p += 2
    out = bytearray(n)
    for i in range(n):
        j = i & 3
        x = st[j]
        slot = x & 0x7FFF
        s = lookup[slot]
        x = freq[s] * (x >> 15) + slot - start[s]
        if x < (1 << 16):
            x = (x << 16) | (words[p] if p < nw else 0)
            p += 1
        st[j] = x
        out[i] = s
    if any(x != (1 << 16) for x in st) or p != nw:
        raise Refused("4.2", "%s block %d: rANS stream does not end where its states say" % (where, k))
    return bytes(out)


WEIGHTS_TEXT = """
256 267 279 292 304 318 332 347 362 378 395 412 431 450 470 490
512 535 558 583 609 636 664 693 724 756 790 825 861 899 939 981
1024 1069 1117 1166 1218 1272 1328 1387 1448 1512 1579 1649 1722 1798 1878 1961
2048 2139 2233 2332 2435 2543 2656 2774 2896 3025 3158 3298 3444 3597 3756 3922
4096 4277 4467 4664 4871 5087 5312 5547 5793 6049 6317 6597 6889 7194 7512 7845
8192 8555 8933 9329 9742 10173 10624 11094 11585 12098 12634 13193 13777 14387 15024 15689
16384 17109 17867 18658 19484 20347 21247 22188 23170 24196 25268 26386 27554 28774 30048 31379
32768 34219 35734 37316 38968 40693 42495 44376 46341 48393 50535 52773 55109 57549 60097 62757
65536 68438 71468 74632 77936 81386 84990 88752 92682 96785 101070 105545 110218 115098 120194 125515
131072 136875 142935 149263 155872 162773 169979 177505 185364 193571 202141 211090 220436 230195 240387 251030
262144 273750 285870 298527 311744 325546 339959 355010 370728 387141 404281 422180 440872 460391 480774 502060
524288 547500 571740 597053 623487 651091 679917 710020 741455 774282 808563 844361 881744 920782 961548 1004120
1048576 1095000 1143480 1194106 1246974 1302182 1359835 1420040 1482910 1548564 1617125 1688722 1763488 1841564 1923097 2008240
2097152 2190001 2286960 2388213 2493948 2604365 2719670 2840080 2965821 3097129 3234251 3377443 3526975 3683128 3846194 4016479
4194304 4380002 4573921 4776426 4987896 5208729 5439339 5680159 5931642 6194258 6468501 6754886 7053950 7366255 7692387 8032959
8388608 8760003 9147842 9552851 9975792 10417458 10878679 11360319 11863283 12388516 12937002 13509772 14107901 14732511 15384775 16065917
"""
# FORMAT.md 4.3: "W is this table" (copied from FORMAT.md's ```weights block).
W = [int(v) for v in WEIGHTS_TEXT.split()]
assert len(W) == 256


def frequency_table(present, q):
    """FORMAT.md 4.3 Frequency table. 1: w[s] = W[q[s]]. 2: normalise to a sum
    of 2^15, each >= 1: f = max(1, floor(w*32768/S + 0.5)) (f64 quotient);
    D = 32768 - sum f; `order` by step-1 f decreasing, ties smaller symbol
    first; while D != 0, passes over `order` adding
    min(D, max(1, floor(D*f/32768))) or taking
    min(-D, f-1, max(1, floor(-D*f/32768))) from symbols with f > 1, each
    pass stopping as soon as D == 0. 3: start[s] = sum of f[t] for t < s."""
    TOTAL = 1 << 15
    w = {s: W[q[i]] for i, s in enumerate(present)}
    S = sum(w.values())
    f = {}
    for s in present:
        x = (w[s] * 32768) / S  # w*32768 exact in f64, one IEEE division
        f[s] = max(1, int(math.floor(x + 0.5)))
    D = TOTAL - sum(f.values())
    order = sorted(present, key=lambda s: (-f[s], s))
    while D != 0:
        for s in order:
            if D > 0:
                add = min(D, max(1, (D * f[s]) // TOTAL))
                f[s] += add
                D -= add
            elif D < 0 and f[s] > 1:
                take = min(-D, f[s] - 1, max(1, (-D * f[s]) // TOTAL))
                f[s] -= take
                D += take
            if D == 0:
                break
    start, acc = {}, 0
    for s in present:
        start[s] = acc
        acc += f[s]
    assert acc == TOTAL
    return f, start


def zstd_block_content(body, limit, label):
    """FORMAT.md 4.4 Kind 2: `02`, then one zstd frame (RFC 8878), decoded with
    the caller's limit. GAP (C3): bytes after the frame, a second frame or a
    skippable frame are refused ("one zstd frame")."""
    content, frames = zstd_frames(body[1:], limit, "4.4", label + " (zstd)")
    if len(frames) != 1 or frames[0][1]:
        raise Refused("4.4", "%s: the block is not exactly one zstd frame" % label)
    return content


def decode_stored_file(data, f):
    """FORMAT.md 2.4 + 4.4 v2 stored file: its block's checksum (4), kind 2
    (4: a symbol block kind here is refused, GAP (E): the text names no
    message), one zstd frame decoded with the limit `size + 1`, exactly `size`
    bytes, whose sha256 is the recorded one ("fails its sha256")."""
    where = "stored file %r" % f["path"]
    body = block_body(data, f["block"], where, None)
    if body[0] != 2:
        if body[0] in (0, 1):
            raise Refused("4", "%s block: a symbol block (kind %d) where a zstd block belongs" % (where, body[0]))
        raise Refused("4", "%s block: unknown block kind %d" % (where, body[0]))
    content = zstd_block_content(body, f["size"], where + " block")
    if len(content) != f["size"]:
        raise Refused("4.4", "%s: the block decodes to %d bytes, size is %d" % (where, len(content), f["size"]))
    if hashlib.sha256(content).hexdigest() != f["sha256"]:
        raise Refused("4.4", "%s fails its sha256" % where)
    return content


def decode_escapes(body, n, where, k):
    """FORMAT.md 4.4 Kind 2 (escapes only): `02`, one zstd frame (RFC 8878)
    whose content is at most 16n + 16 bytes (decoded with that limit); the
    content is n LEB128 varints (<= 64 bits) of zigzag(q) as u64; anything but
    exactly n whole varints: "escape block holds N values". Returns n ints."""
    if body[0] != 2:
        if body[0] in (0, 1):
            raise Refused("4", "%s block %d: escapes block of kind %d (must be 2)" % (where, k, body[0]))
        raise Refused("4", "%s block %d: unknown block kind %d" % (where, k, body[0]))
    content = zstd_block_content(body, 16 * n + 16, _block_label(where, k))
    values, i = [], 0
    while i < len(content):
        z, shift = 0, 0
        while True:
            if i >= len(content) or shift >= 64:
                raise Refused("4.4", "%s block %d: escape block holds a cut or over-long varint" % (where, k))
            byte = content[i]
            i += 1
            z |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if z > U64_MAX:
            raise Refused("4.4", "%s block %d: varint over 64 bits" % (where, k))
        values.append((z >> 1) ^ -(z & 1))  # inverse of (q << 1) XOR (q >> 63)
    if len(values) != n:
        raise Refused("4.4", "%s block %d: escape block holds %d values, header says %d"
                      % (where, k, len(values), n))
    return values


# ---------------------------------------------------------------------------
# 3.4 Symbol streams, 3.5 Lossy reconstruction
# ---------------------------------------------------------------------------


class EscapeList:
    """FORMAT.md 3.4: the escape list, shared by A, B, remainder in that order."""

    def __init__(self, values, where):
        self.values, self.pos, self.where = values, 0, where

    def levels(self, symbols):
        """FORMAT.md 3.4: symbol < 255 is zigzag(q) (0,-1,1,-2,2 <- 0,1,2,3,4);
        255 takes the next escaped q; refuse an exhausted list ("more escape
        symbols than escaped values") and an escaped |q| > 2^30 - 1."""
        out = []
        for sym in symbols:
            if sym == 255:
                if self.pos >= len(self.values):
                    raise Refused("3.4", "%s: more escape symbols than escaped values" % self.where)
                q = self.values[self.pos]
                self.pos += 1
                if abs(q) > (1 << 30) - 1:
                    raise Refused("3.4", "%s: escaped level out of range (%d)" % (self.where, q))
                out.append(q)
            else:
                out.append((sym >> 1) ^ -(sym & 1))
        return out

    def finish(self):
        """FORMAT.md 3.4: values left after the last stream: "unused escaped values"."""
        if self.pos != len(self.values):
            raise Refused("3.4", "%s: unused escaped values (%d left)"
                          % (self.where, len(self.values) - self.pos))


def to_f32_values(raw, dtype):
    """FORMAT.md 3.5 step 4: w = f32(base): exact for F16, BF16, F32; F64 rounded
    to nearest even (GAP: an F64 base beyond f32's range is taken to round to infinity)."""
    n = len(raw) // DTYPE_SIZE[dtype]
    if dtype == "F32":
        return list(struct.unpack("<%df" % n, raw))
    if dtype == "F16":
        return list(struct.unpack("<%de" % n, raw))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % n, raw)
        return list(struct.unpack("<%df" % n, struct.pack("<%dI" % n, *[h << 16 for h in halves])))
    if dtype == "F64":
        return [f32(v) for v in struct.unpack("<%dd" % n, raw)]
    raise Refused("3.5", "no f32 conversion for base dtype %s" % dtype)


def from_f32_values(ys, dtype):
    """FORMAT.md 3.5 step 5: y converted to dtype: F32 as is; F64 exactly
    widened; F16 and BF16 rounded to nearest, ties to even (overflow gives
    infinity, F16 subnormals produced as such)."""
    n = len(ys)
    if dtype == "F32":
        return struct.pack("<%df" % n, *ys)
    if dtype == "F64":
        return struct.pack("<%dd" % n, *ys)
    if dtype == "F16":
        out = bytearray()
        for y in ys:
            try:
                out += struct.pack("<e", y)  # IEEE half, round half to even
            except OverflowError:
                out += struct.pack("<e", math.copysign(math.inf, y))
        return bytes(out)
    if dtype == "BF16":
        out = bytearray()
        for y in ys:
            bits = struct.unpack("<I", struct.pack("<f", y))[0]
            if (bits & 0x7FFFFFFF) > 0x7F800000:  # NaN (reachable: inf - inf in step 2): GAP, payload unspecified
                h = (bits >> 16) | 0x0040
            else:
                h = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            out += struct.pack("<H", h & 0xFFFF)
        return bytes(out)
    raise Refused("3.5", "lossy dtype %s" % dtype)


def reconstruct_lossy(t, qa, qb, qr, base_raw, dead_zone):
    """FORMAT.md 3.5 Lossy reconstruction (fixed arithmetic).
    1. A = f32(qa * factor_step), B = f32(qb * factor_step) (f64 product).
    2. rank > 0: f32 acc = +0.0; per row i, j = 0..rank-1 in order, skipping
       j when A[i][j] == 0, for each c: acc = f32(acc - f32(A*B)); r = -acc.
       rank = 0: r = +0.0.
    3. remainder stored: r = f32(r + v(qr)), v(0) = +0.0, k = |q|:
       m = recon[k-1] if k <= len(recon) else ((z + k) - 0.5) * step (f64);
       v = f32(+-m).
    4. w = f32(base), y = f32(w + r). 5. y converted to dtype."""
    enc = t["encoding"]
    rows, cols, rank = enc["rows"], enc["cols"], enc["rank"]
    fs, step, recon = enc["factor_step"], enc["step"], enc["recon"]
    A = [f32(v * fs) for v in qa]
    B = [f32(v * fs) for v in qb]
    r = [0.0] * (rows * cols)
    if rank > 0:
        for i in range(rows):
            acc = [0.0] * cols
            for j in range(rank):
                a = A[i * rank + j]
                if a == 0.0:
                    continue
                brow = B[j * cols:(j + 1) * cols]
                for c in range(cols):
                    acc[c] = f32(acc[c] - f32(a * brow[c]))
            r[i * cols:(i + 1) * cols] = [-v for v in acc]
    if qr is not None:
        for idx, q in enumerate(qr):
            if q == 0:
                v = 0.0
            else:
                k = abs(q)
                m = recon[k - 1] if k <= len(recon) else ((dead_zone + k) - 0.5) * step
                v = f32(-m if q < 0 else m)
            r[idx] = f32(r[idx] + v)
    w = to_f32_values(base_raw, t["base"]["dtype"])
    ys = [f32(w[i] + r[i]) for i in range(rows * cols)]
    return from_f32_values(ys, t["dtype"])


# ---------------------------------------------------------------------------
# Rebuilding one tensor: 3.1, 3.2, 3.3 with 2.3's base lookup
# ---------------------------------------------------------------------------


def lookup_base(t, base_ckpt):
    """FORMAT.md 2.3 `base`: looked up by name; refused (naming the tensor)
    when the base has no such tensor ("has no such tensor"), has another dtype
    or shape ("another base"), or its bytes' xxh3 differs ("fingerprint
    mismatch"). Returns the base tensor's raw bytes, or None when base is null."""
    fp = t["base"]
    if fp is None:
        return None
    name = t["name"]
    if name not in base_ckpt:
        raise Refused("2.3", "tensor %r: the base has no such tensor" % name)
    dtype, shape, raw = base_ckpt[name]
    if dtype != fp["dtype"] or shape != fp["shape"]:
        raise Refused("2.3", "tensor %r: made against another base (base has %s %s, file expects %s %s)"
                      % (name, dtype, shape, fp["dtype"], fp["shape"]))
    if xxh3_hex(raw) != fp["xxh3"]:
        raise Refused("2.3", "tensor %r: base fingerprint mismatch" % name)
    return raw


def rebuild_tensor(data, t, base_ckpt, settings):
    """FORMAT.md 2.3 + 3: the base lookup, then the encoding's rebuild, then
    the trained_xxh3 check when present ("rebuilt bytes fail the trained checksum")."""
    where = "tensor %r" % t["name"]
    base_raw = lookup_base(t, base_ckpt)
    enc = t["encoding"]
    kind = enc["kind"]
    if kind == "same":
        out = base_raw
    elif kind == "planes":
        out = rebuild_planes(data, t, base_raw, settings["chunk"], where)
    else:
        out = rebuild_lossy(data, t, base_raw, settings, where)
    if t["trained_xxh3"] is not None and xxh3_hex(out) != t["trained_xxh3"]:
        raise Refused("2.3", "%s: rebuilt bytes fail the trained checksum" % where)
    return out


def rebuild_planes(data, t, base_raw, chunk, where):
    """FORMAT.md 3.2 rebuild: element i of chunk c is plane_0[i] .. plane_{s-1}[i]
    (byte 0 least significant, as stored), XORed with the base bytes at the same
    position when xor."""
    numel, s = t["_numel"], t["_s"]
    blocks = t["_blocks"]
    out = bytearray(numel * s)
    for c in range(_ceil_div(numel, chunk)):
        n_c = min(chunk, numel - c * chunk)
        e0 = c * chunk * s
        for p in range(s):
            k = c * s + p
            body = block_body(data, blocks[k], where, k)
            plane = decode_symbol_block(body, n_c, where, k)
            out[e0 + p:e0 + n_c * s:s] = plane
    if t["encoding"]["xor"]:
        x = int.from_bytes(out, "little") ^ int.from_bytes(base_raw, "little")
        out = bytearray(x.to_bytes(len(out), "little"))
    return bytes(out)


def rebuild_lossy(data, t, base_raw, settings, where):
    """FORMAT.md 3.3 + 3.4: decode A's, B's, and (when stored) the remainder's
    symbol streams, turn them into levels through the shared escape list, then
    reconstruct (3.5) with z = settings.rate.dead_zone."""
    enc = t["encoding"]
    blocks = t["_blocks"]
    na, nb, nr = t["_split"]
    rows, cols, rank = enc["rows"], enc["cols"], enc["rank"]
    chunk = settings["chunk"]
    # Checksums are checked before decoding each block (4); the escapes block
    # is decoded first because the streams draw from it.
    escapes = []
    if enc["escapes"] is not None:
        k = len(blocks) - 1
        body = block_body(data, blocks[k], where, k)
        escapes = decode_escapes(body, blocks[k]["n"], where, k)
    esc = EscapeList(escapes, where)

    def stream(first, count, total):
        syms = bytearray()
        for k in range(first, first + count):
            n = min(chunk, total - (k - first) * chunk)
            syms += decode_symbol_block(block_body(data, blocks[k], where, k), n, where, k)
        return esc.levels(syms)

    qa = stream(0, na, rows * rank)
    qb = stream(na, nb, rank * cols)
    qr = stream(na + nb, nr, rows * cols) if nr else None
    esc.finish()
    return reconstruct_lossy(t, qa, qb, qr, base_raw, settings["rate"]["dead_zone"])


# ---------------------------------------------------------------------------
# The base checkpoint (public safetensors format; FORMAT.md does not define it)
# ---------------------------------------------------------------------------


def read_safetensors(path):
    """Public safetensors format: u64 LE header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then data.
    Returns {name: (dtype, shape, raw bytes)}."""
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise ValueError("%s: not a safetensors file" % path)
    (n,) = struct.unpack_from("<Q", data, 0)
    if 8 + n > len(data):
        raise ValueError("%s: header runs past the end" % path)
    hdr = json.loads(data[8:8 + n].decode("utf-8"))
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        b, e_ = e["data_offsets"]
        out[name] = (e["dtype"], list(e["shape"]), data[8 + n + b:8 + n + e_])
    return out


def read_base(path):
    """A base checkpoint is a safetensors file or a folder of them (all tensors
    of all its *.safetensors files; names looked up by name, 2.3)."""
    if os.path.isdir(path):
        out = {}
        for f in sorted(os.listdir(path)):
            if f.endswith(".safetensors"):
                out.update(read_safetensors(os.path.join(path, f)))
        return out
    return read_safetensors(path)


# ---------------------------------------------------------------------------
# 6. Rebuilding the checkpoint: canonical safetensors layout
# ---------------------------------------------------------------------------

INDEX_NAME = "model.safetensors.index.json"


def json_string(s):
    """FORMAT.md 6: strings escape `"` and `\\` with a backslash; U+0008,
    U+000C, U+000A, U+000D, U+0009 as \\b \\f \\n \\r \\t; other controls below
    U+0020 as \\u00xx (lower-case hex); everything else as UTF-8."""
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    parts = ['"']
    for ch in s:
        if ch in short:
            parts.append(short[ch])
        elif ord(ch) < 0x20:
            parts.append("\\u%04x" % ord(ch))
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _byte_order(keys):
    """FORMAT.md 6: keys in increasing byte order (of their UTF-8)."""
    return sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))


def canonical_safetensors(entries, metadata):
    """FORMAT.md 6 canonical layout: u64 N; compact JSON, keys in increasing
    byte order ("__metadata__" only when non-empty, its keys sorted too; each
    tensor `{"data_offsets":[b,e],"dtype":..,"shape":[..]}`), offsets laid out
    back to back in the residual header's order; padded with spaces until
    8 + N is a multiple of 8; then the raw bytes in the same order."""
    objs = {}
    pos = 0
    for name, dtype, shape, raw in entries:
        objs[name] = '{"data_offsets":[%d,%d],"dtype":%s,"shape":[%s]}' % (
            pos, pos + len(raw), json_string(dtype), ",".join(str(d) for d in shape))
        pos += len(raw)
    if metadata:
        md = ",".join("%s:%s" % (json_string(k), json_string(metadata[k])) for k in _byte_order(metadata))
        objs["__metadata__"] = "{" + md + "}"
    text = "{" + ",".join("%s:%s" % (json_string(k), objs[k]) for k in _byte_order(objs)) + "}"
    head = text.encode("utf-8")
    head += b" " * ((-(8 + len(head))) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(raw for _, _, _, raw in entries)


def index_json(weight_map, total):
    """FORMAT.md 6 index: {"metadata": {"total_size": T}, "weight_map": {...}},
    keys in increasing byte order, two-space indentation, ": " after keys, no
    trailing newline. (GAP: the layout of an empty weight_map is not given; "{}".)"""
    lines = ["{", '  "metadata": {', '    "total_size": %d' % total, "  },"]
    keys = _byte_order(weight_map)
    if keys:
        lines.append('  "weight_map": {')
        for i, k in enumerate(keys):
            lines.append("    %s: %s%s" % (json_string(k), json_string(weight_map[k]),
                                           "," if i + 1 < len(keys) else ""))
        lines.append("  }")
    else:
        lines.append('  "weight_map": {}')
    lines.append("}")
    return "\n".join(lines).encode("utf-8")


# ---------------------------------------------------------------------------
# The whole file
# ---------------------------------------------------------------------------


def original_layout(header_text, entries):
    """FORMAT.md 6 v2: a shard with an `original` header is written as its
    header text's length (u64; GAP (E): read as its UTF-8 byte count), the
    header text verbatim, then the tensors' raw bytes in the residual
    header's order (which 2.2 ties to the data offsets)."""
    head = header_text.encode("utf-8")
    return struct.pack("<Q", len(head)) + head + b"".join(raw for _, _, _, raw in entries)


def shard_files(doc, tensors):
    """FORMAT.md 6: each shard's bytes, {file name: bytes}: the `original`
    layout when the shard has one (v2), else the canonical layout. For a
    lossless file the sha256 of an original-layout shard must equal
    `original.sha256` ("differs from the original file"); 7: a lossy file's
    is not checked. Checked here in memory, before anything is written."""
    out = {}
    for i, sh in enumerate(doc["trained"]["shards"]):
        entries = [(n, d, s, r) for (n, d, s, sd, r) in tensors if sd == i]
        if "original" in sh:
            blob = original_layout(sh["original"]["header"], entries)
            want = sh["original"].get("sha256")
            if doc["mode"] == "lossless" and want is not None and hashlib.sha256(blob).hexdigest() != want:
                raise Refused("6", "shard %r: the rebuilt file differs from the original file (sha256 %s, "
                              "original %s)" % (sh["file"], hashlib.sha256(blob).hexdigest(), want))
        else:
            blob = canonical_safetensors(entries, sh["metadata"])
        out[sh["file"]] = blob
    return out


def rebuilt_outputs(doc, tensors, stored):
    """FORMAT.md 6: what a rebuild writes, {path relative to the output: bytes}.
    Unsharded and not a v2 folder: one safetensors file (key None). Sharded,
    or v2 `folder`: the shard files, then (v2) every stored file at its path,
    and, when sharded and no stored file is named model.safetensors.index.json,
    the index."""
    shards = shard_files(doc, tensors)
    trained = doc["trained"]
    if not trained["sharded"] and not trained.get("folder", False):
        return {None: shards[trained["shards"][0]["file"]]}
    out = dict(shards)
    for path, content in stored:
        out[path] = content
    if trained["sharded"] and not any(path == INDEX_NAME for path, _ in stored):
        wm = {n: trained["shards"][sd]["file"] for (n, d, s, sd, r) in tensors}
        total = sum(len(r) for (_, _, _, _, r) in tensors)
        out[INDEX_NAME] = index_json(wm, total)
    return out


def read_residual(path, base_path):
    """FORMAT.md 1 -> 2 -> 3/4 -> 6: preamble (1.1), footer (1.2), header
    encoding (1.3), header (2), then every tensor rebuilt and checked (3, 4),
    every v2 stored file decoded and checked (2.4, 4.4), and the output files
    assembled and checked in memory (6). Returns (header, tensors, outputs):
    tensors [(name, dtype, shape, shard, raw)], outputs as `rebuilt_outputs`."""
    with open(path, "rb") as fh:
        data = fh.read()
    version = read_preamble(data)
    header_offset, header = read_footer(data)
    HEADER_OFFSET[0] = header_offset
    doc = check_header(parse_header_json(decode_header_bytes(header, version)), version)
    base = read_base(base_path)
    tensors = []
    for t in doc["tensors"]:
        raw = rebuild_tensor(data, t, base, doc["settings"])
        tensors.append((t["name"], t["dtype"], t["shape"], t["shard"], raw))
    stored = [(f["path"], decode_stored_file(data, f)) for f in doc.get("files", [])]
    return doc, tensors, rebuilt_outputs(doc, tensors, stored)


def write_checkpoint(outputs, out_path):
    """FORMAT.md 6: written only once every tensor and file rebuilt and passed
    its checks; files appear by atomic rename; a folder this reader created is
    removed on failure. In a folder, subfolders are created as needed, and a
    path whose target already exists or that passes through a symlink already
    in the folder is refused before anything is written. GAP (E): the text says
    this of stored files; it is applied here to every file of the folder (shards
    and index too), and files this reader wrote into a folder that already
    existed are removed on failure as well."""
    if list(outputs) == [None]:
        _atomic_write(out_path, outputs[None])
        return [out_path]
    for rel in outputs:
        parts = rel.split("/")
        for k in range(1, len(parts) + 1):
            p = os.path.join(out_path, *parts[:k])
            if os.path.islink(p):
                raise Refused("6", "%s: %s is a symlink already in the folder" % (rel, p))
            if k < len(parts) and os.path.exists(p) and not os.path.isdir(p):
                raise Refused("6", "%s: %s exists and is not a folder" % (rel, p))
        if os.path.lexists(os.path.join(out_path, *parts)):
            raise Refused("6", "%s: the target %s already exists" % (rel, os.path.join(out_path, *parts)))
    made, written = [], []
    try:
        for rel, blob in outputs.items():
            parts = rel.split("/")
            d = out_path
            for comp in [None] + parts[:-1]:
                d = d if comp is None else os.path.join(d, comp)
                if not os.path.isdir(d):
                    os.mkdir(d)
                    made.append(d)
            target = os.path.join(out_path, *parts)
            _atomic_write(target, blob)
            written.append(target)
    except BaseException:
        for p in reversed(written):
            os.unlink(p)
        for d in reversed(made):
            os.rmdir(d)
        raise
    return written


def _atomic_write(path, blob):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".specdecode-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# Golden folders
# ---------------------------------------------------------------------------


def check_golden(folder, strict_messages=False):
    """Check a golden folder against its manifest.json: every case rebuilds to
    `rebuilt_sha256` (a file) or to `outputs` (a folder: each file's sha256),
    and each tensor to `tensor_sha256`; every error case is refused. The manifest's `error` text is compared with the refusal's
    message (a wording difference is reported; fatal with --strict-messages)."""
    with open(os.path.join(folder, "manifest.json"), "rb") as fh:
        manifest = json.load(fh)
    failures = wording = 0
    for case in manifest.get("cases", []):
        f, b = case["file"], case["base"]
        try:
            doc, tensors, outputs = read_residual(os.path.join(folder, f), os.path.join(folder, b))
        except Refused as e:
            print("FAIL  %-28s refused: %s" % (f, e))
            failures += 1
            continue
        bad = []
        for name, dtype, shape, shard, raw in tensors:
            want = case.get("tensor_sha256", {}).get(name)
            if want is not None and hashlib.sha256(raw).hexdigest() != want:
                bad.append(name)
        got = {k: hashlib.sha256(v).hexdigest() for k, v in outputs.items()}
        if "outputs" in case:
            # GAP (A3): read from the manifest: `outputs` maps each file of a
            # folder rebuild (path inside it) to its sha256.
            want = case["outputs"]
        else:
            want = {None: case["rebuilt_sha256"]}
        ok = got == want and not bad
        shown = got[None] if list(got) == [None] else "%d files" % len(got)
        print("%s  %-28s %s  sha256 %s%s" % ("ok  " if ok else "FAIL", f, case.get("mode", ""),
                                             shown, "" if not bad else "  tensors differ: " + ", ".join(bad)))
        if not ok:
            failures += 1
            for k in sorted(set(got) | set(want), key=str):
                if got.get(k) != want.get(k):
                    print("      %s: rebuilt %s, manifest says %s" % (k or "file", got.get(k), want.get(k)))
    for case in manifest.get("errors", []):
        f, b, expect = case["file"], case["base"], case["error"]
        try:
            read_residual(os.path.join(folder, f), os.path.join(folder, b))
        except Refused as e:
            same = expect.lower() in e.message.lower()
            if not same:
                wording += 1
            print("%s  %-28s refused by FORMAT.md %s: %s%s" % (
                "ok  " if same or not strict_messages else "FAIL", f + " (" + b + ")", e.rule, e.message,
                "" if same else "\n      (manifest's wording: %r)" % expect))
            continue
        print("FAIL  %-28s accepted, manifest expects a refusal: %r" % (f, expect))
        failures += 1
    if strict_messages:
        failures += wording
    print("%s: %d case(s), %d error file(s), %d failure(s), %d wording difference(s)"
          % (folder, len(manifest.get("cases", [])), len(manifest.get("errors", [])), failures, wording))
    return failures


def check_worked_examples():
    """FORMAT.md 4.3's two worked examples, as a self-check of this decoder's
    frequency table (the final frequencies and starts the text gives)."""
    f, start = frequency_table([0, 1, 2, 3, 255], bytes([232, 203, 175, 159, 134]))
    ok1 = [f[s] for s in (0, 1, 2, 3, 255)] == [22980, 6542, 1945, 972, 329] and \
        [start[s] for s in (0, 1, 2, 3, 255)] == [0, 22980, 29522, 31467, 32439]
    f, _ = frequency_table(list(range(10)) + [200], bytes([0] * 10 + [255]))
    ok2 = [f[s] for s in range(10)] == [1] * 10 and f[200] == 32758
    print("%s  FORMAT.md 4.3 worked examples (positive D, negative D)" % ("ok  " if ok1 and ok2 else "FAIL"))
    return 0 if ok1 and ok2 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="Minimal .resid decoder written from FORMAT.md alone.")
    ap.add_argument("base", nargs="?", help="base checkpoint (safetensors file or folder)")
    ap.add_argument("resid", nargs="?", help="residual file (.resid)")
    ap.add_argument("-o", "--out", help="output: a safetensors file, or a folder for a sharded checkpoint "
                    "or a model folder (v2)")
    ap.add_argument("--golden", metavar="DIR", action="append", help="check a golden folder's manifest.json")
    ap.add_argument("--strict-messages", action="store_true",
                    help="with --golden, also fail when a refusal's wording differs from the manifest's")
    a = ap.parse_args(argv)
    if a.golden:
        fails = check_worked_examples()
        fails += sum(check_golden(d, a.strict_messages) for d in a.golden)
        return 1 if fails else 0
    if not (a.base and a.resid and a.out):
        ap.error("give BASE RESID -o OUT, or --golden DIR")
    try:
        doc, tensors, outputs = read_residual(a.resid, a.base)
        written = write_checkpoint(outputs, a.out)
    except Refused as e:
        print("%s: %s" % (a.resid, e), file=sys.stderr)
        return 3
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
