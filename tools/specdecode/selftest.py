#!/usr/bin/env python3
"""Refusals the golden error files do not cover: each case edits a golden
file (its header JSON or one block, with every checksum made consistent
again: block xxh3, header xxh3, and for version 2 the header recompressed)
so that exactly one FORMAT.md rule is broken, and checks that
resid_specdecode refuses it under that rule. Also checks acceptances that
FORMAT.md states (section 7 and others) or that SPEC-GAPS records as this
decoder's reading.

    python selftest.py crates/resid-codec/tests/golden/v1
    python selftest.py crates/resid-codec/tests/golden/v2

The folder's manifest.json `version` picks the cases: version 1 cases edit
v1 golden files, version 2 cases edit v2 golden files (and a few v1 ones).
"""

import hashlib
import json
import os
import struct
import sys
import tempfile

import xxhash
import zstandard

import resid_specdecode as R


class Stored(bytes):
    """Header bytes to store as they are (no JSON, no compression): for 1.3 edits."""


def split(data):
    ho, hl, _ = struct.unpack_from("<QQQ", data, len(data) - 32)
    return data[:ho], data[ho:ho + hl]


def header_text(stored, version):
    """The JSON text of a stored header (1.3: v2 headers are zstd)."""
    return stored if version == 1 else zstandard.ZstdDecompressor().decompress(stored)


def assemble(body, header, version=1):
    """body (preamble + blocks) + header + footer; a version-2 JSON header is
    compressed first (1.3), a `Stored` one kept as it is."""
    if version >= 2 and not isinstance(header, Stored):
        header = zstandard.ZstdCompressor(level=19).compress(header)
    foot = struct.pack("<QQQ", len(body), len(header), xxhash.xxh3_64_intdigest(header)) + b"RESIDEND"
    return body + header + foot


def tensor(h, name):
    return next(t for t in h["tensors"] if t["name"] == name)


def set_block_bytes(body, h, name, k, new_bytes):
    """Replace block k of tensor `name` (same length) and fix its xxh3."""
    t = tensor(h, name)
    enc = t["encoding"]
    blocks = enc.get("blocks") or (enc["factors"] + enc["remainder"] + ([enc["escapes"]] if enc.get("escapes") else []))
    b = blocks[k]
    assert len(new_bytes) == b["len"]
    body = body[:b["offset"]] + new_bytes + body[b["offset"] + b["len"]:]
    b["xxh3"] = "%016x" % xxhash.xxh3_64_intdigest(new_bytes)
    return body


def block_bytes(body, h, name, k):
    enc = tensor(h, name)["encoding"]
    blocks = enc.get("blocks") or (enc["factors"] + enc["remainder"] + ([enc["escapes"]] if enc.get("escapes") else []))
    b = blocks[k]
    return body[b["offset"]:b["offset"] + b["len"]]


def m_json(fn):
    def mutate(body, h):
        fn(h)
        return body, json.dumps(h, separators=(",", ":")).encode()
    return mutate


def m_raw(fn):
    """fn(body, header_dict) -> (body, header_text) for edits JSON cannot express."""
    return fn


def flip_last_word(body, h):
    raw = bytearray(block_bytes(body, h, "w", 0))
    raw[-1] ^= 0x01
    body = set_block_bytes(body, h, "w", 0, bytes(raw))
    return body, json.dumps(h).encode()


def unknown_kind(body, h):
    body = set_block_bytes(body, h, "tiny", 2, b"\x07\x00")
    return body, json.dumps(h).encode()


def kind2_in_planes(body, h):
    body = set_block_bytes(body, h, "tiny", 2, b"\x02\x00")
    return body, json.dumps(h).encode()


def one_symbol_rans(body, h):
    raw = bytearray(block_bytes(body, h, "w", 0))
    raw[1:33] = b"\x01" + b"\x00" * 31  # bitmap: only symbol 0
    body = set_block_bytes(body, h, "w", 0, bytes(raw))
    return body, json.dumps(h).encode()


def text_edit(old, new):
    """An edit of the compact header text that JSON objects cannot express."""
    def mutate(body, h):
        text = json.dumps(h, separators=(",", ":"))
        assert old in text
        return body, text.replace(old, new, 1).encode()
    return mutate


dup_field = text_edit('"seed":0', '"seed":0,"seed":0')
dup_metadata = text_edit('"metadata":{"format":"pt"}', '"metadata":{"format":"np","format":"pt"}')
nan_literal = text_edit('"residual_rel_error":0.0', '"residual_rel_error":NaN')
chunk_as_float = text_edit('"chunk":4096', '"chunk":4096.0')


def gap_before_header(body, h):
    return body + b"\xAA" * 13, json.dumps(h).encode()


def nan_from_valid_file(body, h):
    """A file every FORMAT.md rule accepts whose rebuild computes inf - inf
    (SPEC-GAPS B3): `bias` gets rank 1 with factor_step 1e38, so f32(A*B)
    overflows to inf and r = +inf, and a remainder level -1 whose recon[0] =
    1e300 rounds to f32 -inf; r + v is then a NaN whose sign IEEE leaves open."""
    t = tensor(h, "bias")
    enc = t["encoding"]
    blocks = []
    for n, sym in ((1, 2), (36, 2), (36, 1)):  # A: q=1; B: q=1; remainder: q=-1
        raw = bytes([0, sym])
        blocks.append({"offset": len(body), "len": 2, "xxh3": "%016x" % xxhash.xxh3_64_intdigest(raw),
                       "n": n, "bits": 0.0})
        body += raw
    enc.update(rank=1, factor_step=1e38, factors=blocks[:2], remainder=blocks[2:])
    enc["recon"][0] = 1e300
    return body, json.dumps(h).encode()


def set_(path_fn):
    return m_json(path_fn)


LOSSLESS = "lossless-f32.resid"
LOSSY = "lossy-f32.resid"
LOSSY_ESC = "lossy-f16.resid"

REFUSALS = [
    # (golden file, base, mutation, FORMAT.md rule, words the refusal must contain)
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w").update(trained_xxh3="0" * 16)),
     "2.3", "trained checksum"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["base"].update(xxh3="0" * 16)),
     "2.3", "fingerprint mismatch"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w").update(name="w2")),
     "2.3", "no such tensor"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w").update(dtype="U8")),
     "3.2", "same dtype and shape"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "bias")["encoding"]["blocks"][0].update(
        offset=tensor(h, "w")["encoding"]["blocks"][0]["offset"])), "4", "overlaps"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "bias")["encoding"]["blocks"][0].update(len=0)),
     "4", "zero-length"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "bias")["encoding"]["blocks"].pop()),
     "3.2", "blocks"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "bias")["encoding"]["blocks"][0].update(n=35)),
     "3.2", "n = 35"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: h.update(version=2)), "2", "differs from the preamble"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: h["trained"]["shards"].append(
        {"file": "b.safetensors", "metadata": {}})), "2.2", "unsharded"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: h["trained"]["shards"][0].update(file="..")),
     "2.2", "plain file name"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w").update(shard=1)), "2.3", "shard 1"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "same").update(trained_xxh3=None)),
     "3.1", "trained_xxh3"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "head").pop("trained_xxh3")),
     "3.2", "trained_xxh3"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"].update(extra=1)),
     "2", "unknown field"),
    (LOSSLESS, "base-f32.safetensors", set_(lambda h: h["settings"].update(chunk=1 << 25)), "2.1", "outside"),
    (LOSSLESS, "base-f32.safetensors", m_raw(flip_last_word), "4.2", "does not end"),
    (LOSSLESS, "base-f32.safetensors", m_raw(unknown_kind), "4", "unknown block kind"),
    (LOSSLESS, "base-f32.safetensors", m_raw(kind2_in_planes), "4", "zstd block where a symbol block"),
    (LOSSLESS, "base-f32.safetensors", m_raw(one_symbol_rans), "4.2", "1 present symbol"),
    (LOSSLESS, "base-f32.safetensors", m_raw(dup_field), "2", "appears twice"),
    (LOSSLESS, "base-f32.safetensors", m_raw(nan_literal), "2", "not RFC 8259"),
    (LOSSLESS, "base-f32.safetensors", m_raw(chunk_as_float), "2", "integer"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: h.update(mode="lossless")), "3.3", "lossless file"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: h["settings"].update(rate=None)), "2.1", "rate"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"].update(rank=41)), "3.3", "rank"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"].update(rows=20)), "3.3", "rows * cols"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"].update(step=0.0)), "3.3", "step"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"]["recon"].append(1.0)),
     "3.3", "at most 16"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w")["encoding"]["remainder"].clear() or
                                         tensor(h, "w")["encoding"]["factors"].pop()), "3.3", "factor blocks"),
    (LOSSY_ESC, "base-f16.safetensors", set_(lambda h: tensor(h, "w")["encoding"].update(escapes=None)),
     "3.4", "more escape symbols than escaped values"),
    (LOSSY_ESC, "base-f16.safetensors", set_(lambda h: tensor(h, "w")["encoding"]["escapes"].update(n=3)),
     "4.4", "holds 2 values"),
    (LOSSY_ESC, "base-f16.safetensors", set_(lambda h: tensor(h, "w")["encoding"]["escapes"].update(n=1)),
     "4.4", "holds 2 values"),
]

ACCEPTS = [
    (LOSSLESS, "base-f32.safetensors", m_raw(dup_metadata), "7: a repeated metadata key keeps its last value"),
    (LOSSLESS, "base-f32.safetensors", m_raw(gap_before_header), "1: bytes no block covers are ignored"),
    (LOSSY, "base-f32.safetensors", set_(lambda h: tensor(h, "w").pop("trained_xxh3")),
     "2: a null field may be left out"),
    (LOSSY, "base-f32.safetensors", m_raw(nan_from_valid_file),
     "3.3/3.5: factors that overflow f32 (the rebuild holds NaN; SPEC-GAPS B3)"),
]


# ---------------------------------------------------------------------------
# Version 2 cases (folder crates/resid-codec/tests/golden/v2)
# ---------------------------------------------------------------------------

FOLDER = "lossless-folder.resid"  # a model folder: one shard with `original` + sha256, 4 stored files
LOSSY_FOLDER = "lossy-folder.resid"  # the same folder, lossy: `original` without sha256
PYBASE = "py/base.safetensors"
V2_LOSSY = "lossy-f32.resid"  # has the zero-length tensor `empty` at the offset where `head` begins
V1_LOSSLESS = "../v1/lossless-f32.resid"
V1_BASE = "../v1/base-f32.safetensors"


def compact(h):
    return json.dumps(h, separators=(",", ":")).encode()


def v2_json(fn):
    """An edit of the header dict; the header is re-serialised (and, v2, recompressed)."""
    def mutate(body, h):
        fn(h)
        return body, compact(h)
    return mutate


def stored_file(h, path):
    return next(f for f in h["files"] if f["path"] == path)


def new_block(body, raw, n):
    """Append a block body at the end of the blocks (gaps are allowed, 1) and
    return (body, its Block with a correct xxh3)."""
    b = {"offset": len(body), "len": len(raw), "xxh3": "%016x" % xxhash.xxh3_64_intdigest(raw), "n": n, "bits": 0.0}
    return body + raw, b


def zstd_block(content):
    return b"\x02" + zstandard.ZstdCompressor(level=3).compress(content)


def set_path(path):
    return v2_json(lambda h: stored_file(h, "config.json").update(path=path))


def add_file(path, content):
    """A new stored file (its block, size and sha256 all correct)."""
    def mutate(body, h):
        body, b = new_block(body, zstd_block(content), len(content))
        h["files"].append({"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "block": b})
        return body, compact(h)
    return mutate


def replace_file_block(path, raw):
    """Store `raw` as the block of stored file `path` (xxh3 fixed, size/n/sha256 kept)."""
    def mutate(body, h):
        f = stored_file(h, path)
        body, b = new_block(body, raw, f["size"])
        f["block"] = b
        return body, compact(h)
    return mutate


def config_json_bytes(folder):
    with open(os.path.join(folder, "py", "trained", "config.json"), "rb") as fh:
        return fh.read()


def resize_config(delta):
    """config.json restored with `size` (and `n`) off by delta; its block and sha256 kept."""
    def fn(h):
        f = stored_file(h, "config.json")
        f["size"] += delta
        f["block"]["n"] += delta
    return v2_json(fn)


def original_edit(fn, shard=0):
    """Edit the parsed `original.header` of a shard (re-serialised compactly,
    keys in the order given), keeping everything else."""
    def mutate(body, h):
        orig = h["trained"]["shards"][shard]["original"]
        pairs = json.loads(orig["header"], object_pairs_hook=lambda kv: [list(p) for p in kv])
        orig["header"] = fn(pairs)
        return body, compact(h)
    return mutate


def pairs_json(pairs):
    def enc(v):
        if isinstance(v, list) and v and all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) for x in v):
            return "{" + ",".join(json.dumps(k) + ":" + enc(x) for k, x in v) + "}"
        return json.dumps(v, separators=(",", ":"))
    return enc(pairs)


def orig_repeat_key(pairs):
    return pairs_json(pairs + [pairs[-1]])


def orig_drop_last(pairs):
    return pairs_json(pairs[:-1])


def orig_extra_tensor(pairs):
    return pairs_json(pairs + [["extra", [["dtype", "U8"], ["shape", [0]], ["data_offsets", [8960, 8960]]]]])


def orig_swap_first_two(pairs):
    """position_ids [0,384] and embed.weight [384,6528] laid out the other way round."""
    d = {k: dict(v) for k, v in pairs if k != "__metadata__"}
    d["embed.weight"]["data_offsets"] = [0, 6144]
    d["position_ids"]["data_offsets"] = [6144, 6528]
    return pairs_json([[k, [[kk, d[k][kk]] for kk in ("dtype", "shape", "data_offsets")]] if k in d else [k, v]
                       for k, v in pairs])


def orig_shift(pairs):
    """Every tensor 8 bytes further: the first is not at offset 0."""
    out = []
    for k, v in pairs:
        if k != "__metadata__":
            v = [[kk, [x + 8 for x in vv]] if kk == "data_offsets" else [kk, vv] for kk, vv in v]
        out.append([k, v])
    return pairs_json(out)


def orig_extra_field(pairs):
    k, v = pairs[1]
    return pairs_json([pairs[0], [k, v + [["extra", 1]]]] + pairs[2:])


def orig_move_empty_last(pairs):
    """lossy-f32: the zero-length `empty` ([6288,6288]) written after `head`
    ([6288,6448]) in the JSON text (same offsets)."""
    e = next(p for p in pairs if p[0] == "empty")
    rest = [p for p in pairs if p[0] != "empty"]
    i = next(j for j, p in enumerate(rest) if p[0] == "head")
    return pairs_json(rest[:i + 1] + [e] + rest[i + 1:])


def header_plain_json(body, h):
    return body, Stored(compact(h))


def header_cut(body, h):
    return body, Stored(zstandard.ZstdCompressor(level=19).compress(compact(h))[:-3])


def header_trailing(body, h):
    return body, Stored(zstandard.ZstdCompressor(level=19).compress(compact(h)) + b"\x00\x01\x02")


def header_two_frames(body, h):
    text = compact(h)
    c = zstandard.ZstdCompressor(level=3)
    return body, Stored(c.compress(text[:100]) + c.compress(text[100:]))


def header_skippable_first(body, h):
    skip = struct.pack("<II", 0x184D2A50, 4) + b"resid"[:4]
    return body, Stored(skip + zstandard.ZstdCompressor(level=3).compress(compact(h)))


def header_too_large(body, h):
    """The JSON text followed by spaces, 256 MiB + 1 bytes in all (valid JSON
    if it were decoded whole): refused by 1.3's limit."""
    text = compact(h)
    c = zstandard.ZstdCompressor(level=1)
    obj = c.compressobj()
    parts = [obj.compress(text)]
    left = 256 * R.MIB + 1 - len(text)
    spaces = b" " * (1 << 20)
    while left > 0:
        parts.append(obj.compress(spaces[:min(left, len(spaces))]))
        left -= len(spaces)
    parts.append(obj.flush())
    return body, Stored(b"".join(parts))


def preamble_version(v):
    def mutate(body, h):
        h["version"] = v
        return body[:8] + struct.pack("<I", v) + body[12:], compact(h)
    return mutate


def many_files(body, h):
    f = h["files"][0]
    h["files"] = [f] * 100_001
    return body, compact(h)


def file_block_on_tensor(body, h):
    f = stored_file(h, "config.json")
    f["block"] = dict(tensor(h, "embed.weight")["encoding"]["blocks"][0], n=f["size"])
    return body, compact(h)


def v1_with(field):
    def fn(h):
        if field == "files":
            h["files"] = []
        elif field == "folder":
            h["trained"]["folder"] = False
        elif field == "original":
            h["trained"]["shards"][0]["original"] = {"header": "{}"}
    return v2_json(fn)


def two_accented_names(body, h):
    """Stored files `\u00e9.txt` and `\u00c9.txt`: not ASCII letters, so not the same file (2.4)."""
    body, _ = add_file("\u00e9.txt", b"a")(body, h)
    return add_file("\u00c9.txt", b"b")(body, h)


def sharded_two(body, h):
    """lossless-f32 (v2) made sharded: `w` in a.safetensors, the rest in
    b.safetensors, no `original` headers (so the canonical layout of 6)."""
    h["trained"]["sharded"] = True
    h["trained"]["shards"] = [{"file": "a.safetensors", "metadata": {}},
                              {"file": "b.safetensors", "metadata": {"format": "pt"}}]
    for t in h["tensors"]:
        t["shard"] = 0 if t["name"] == "w" else 1
    return body, compact(h)


def sharded_with_stored_index(body, h):
    """As `sharded_two`, in a folder that stores its own index file."""
    body, _ = sharded_two(body, h)
    h["trained"]["folder"] = True
    h["files"] = []
    return add_file(R.INDEX_NAME, b'{"kept": true}')(body, h)


def check_sharded(folder, case_file):
    """Each tensor rebuilds to the manifest's tensor_sha256; a.safetensors holds
    `w` alone; the index maps every tensor to its shard (6)."""
    def check(doc, tensors, outputs):
        with open(os.path.join(folder, "manifest.json")) as fh:
            case = next(c for c in json.load(fh)["cases"] if c["file"] == case_file)
        for name, _, _, _, raw in tensors:
            if hashlib.sha256(raw).hexdigest() != case["tensor_sha256"][name]:
                return "tensor %s differs" % name
        if sorted(outputs) != ["a.safetensors", "b.safetensors", R.INDEX_NAME]:
            return "outputs %r" % sorted(outputs)
        (n,) = struct.unpack_from("<Q", outputs["a.safetensors"])
        if list(json.loads(outputs["a.safetensors"][8:8 + n])) != ["w"]:
            return "a.safetensors holds %r" % list(json.loads(outputs["a.safetensors"][8:8 + n]))
        index = json.loads(outputs[R.INDEX_NAME])
        want = {name: ("a.safetensors" if name == "w" else "b.safetensors") for name, *_ in tensors}
        total = sum(len(raw) for *_, raw in tensors)
        if index != {"metadata": {"total_size": total}, "weight_map": want}:
            return "index %r" % index
        return None
    return check


def check_stored_index(doc, tensors, outputs):
    return None if outputs.get(R.INDEX_NAME) == b'{"kept": true}' else "index %r" % outputs.get(R.INDEX_NAME)


def check_empty_file(doc, tensors, outputs):
    return None if outputs.get("empty.txt") == b"" else "empty.txt not rebuilt as 0 bytes"


def check_only_shard(doc, tensors, outputs):
    return None if list(outputs) == ["model.safetensors"] else "outputs %r" % list(outputs)


def check_same_outputs(folder, fname, base):
    """The rebuild equals the unedited golden file's."""
    def check(doc, tensors, outputs):
        _, _, want = R.read_residual(os.path.join(folder, fname), os.path.join(folder, base))
        return None if outputs == want else "the rebuild differs from the unedited file's"
    return check


def check_both_names(doc, tensors, outputs):
    return None if {"\u00e9.txt", "\u00c9.txt"} <= set(outputs) else "outputs %r" % sorted(outputs, key=str)


V2_REFUSALS = [
    # 1.1 / 1.3 / 2: version and header encoding
    (FOLDER, PYBASE, preamble_version(3), "1.1", "newer than this resid reads (2)"),
    (FOLDER, PYBASE, header_plain_json, "1.3", "compressed header does not decode"),
    (FOLDER, PYBASE, header_cut, "1.3", "compressed header does not decode"),
    (FOLDER, PYBASE, header_trailing, "1.3", "compressed header does not decode"),
    (FOLDER, PYBASE, header_too_large, "1.3", "more than 268435456 bytes"),
    (V1_LOSSLESS, V1_BASE, v1_with("files"), "2", "'files' is not part of format version 1"),
    (V1_LOSSLESS, V1_BASE, v1_with("folder"), "2", "'trained.folder' is not part of format version 1"),
    (V1_LOSSLESS, V1_BASE, v1_with("original"), "2", "'shards[].original' is not part of format version 1"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"].update(folder=1)), "2", "boolean"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0].update(file=".")), "2.2", "plain file name"),
    # 2.4 stored files: paths
    (FOLDER, PYBASE, set_path(""), "2.4", "absolute path"),
    (FOLDER, PYBASE, set_path("a//b"), "2.4", "empty component"),
    (FOLDER, PYBASE, set_path("a/"), "2.4", "empty component"),
    (FOLDER, PYBASE, set_path("./config.json"), "2.4", "'..' or '.' component"),
    (FOLDER, PYBASE, set_path("a/.."), "2.4", "'..' or '.' component"),
    (FOLDER, PYBASE, set_path("a\\b"), "2.4", "not allowed"),
    (FOLDER, PYBASE, set_path("c:config.json"), "2.4", "not allowed"),
    (FOLDER, PYBASE, set_path("a\x01b"), "2.4", "not allowed"),
    (FOLDER, PYBASE, set_path("a\x7fb"), "2.4", "not allowed"),
    (FOLDER, PYBASE, set_path("a\u0085b"), "2.4", "not allowed"),
    (FOLDER, PYBASE, set_path("model.safetensors"), "2.4", "names the same file as the shard"),
    (FOLDER, PYBASE, set_path("Model.SafeTensors"), "2.4", "names the same file as the shard"),
    (FOLDER, PYBASE, set_path("tokenizer.json/config.json"), "2.4", "its folder 'tokenizer.json'"),
    (FOLDER, PYBASE, set_path("1_POOLING/config.json/x"), "2.4", "its folder '1_pooling/config.json'"),
    (FOLDER, PYBASE, set_path("model.safetensors/config.json"), "2.4", "names the same file as a shard"),
    # 2.4 stored files: the other fields
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json").update(size=1 << 48)), "2.4", ">= 2^48"),
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json").update(
        sha256=stored_file(h, "config.json")["sha256"].upper())), "2.4", "64 lower-case hex"),
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json").update(
        sha256=stored_file(h, "config.json")["sha256"][:63])), "2.4", "64 lower-case hex"),
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json")["block"].update(n=84)), "2.4", "block n = 84"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"].pop("folder")), "2.4", "requires trained.folder"),
    (FOLDER, PYBASE, many_files, "2.4", "at most 100,000"),
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json").update(mode=420)), "2", "unknown field"),
    # 4 / 4.4 the stored file's block
    (FOLDER, PYBASE, v2_json(lambda h: stored_file(h, "config.json")["block"].update(xxh3="0" * 16)),
     "4", "stored file 'config.json' block fails its checksum"),
    (FOLDER, PYBASE, file_block_on_tensor, "4", "overlaps"),
    (FOLDER, PYBASE, replace_file_block("config.json", b"\x00\x41"), "4", "symbol block (kind 0)"),
    (FOLDER, PYBASE, replace_file_block("config.json", b"\x09\x41"), "4", "unknown block kind 9"),
    (FOLDER, PYBASE, resize_config(-1), "4.4", "more than 84 bytes"),
    (FOLDER, PYBASE, resize_config(+1), "4.4", "decodes to 85 bytes, size is 86"),
    # 2.2 kept safetensors headers; 6 the byte-identical rebuild
    (FOLDER, PYBASE, original_edit(orig_repeat_key), "2.2", "repeats the key"),
    (FOLDER, PYBASE, original_edit(orig_drop_last), "2.2", "does not list tensor 'layer.0.attn.weight'"),
    (FOLDER, PYBASE, original_edit(orig_extra_tensor), "2.2", "lists tensor 'extra'"),
    (FOLDER, PYBASE, original_edit(orig_swap_first_two), "2.2", "places tensor 'position_ids'"),
    (FOLDER, PYBASE, original_edit(orig_shift), "2.2", "places tensor 'position_ids' at [8, 392]"),
    (FOLDER, PYBASE, original_edit(orig_extra_field), "2.2", "not a safetensors entry"),
    (FOLDER, PYBASE, original_edit(lambda pairs: pairs_json(pairs)[:-1]), "2.2", "not a safetensors header"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0]["original"].update(sha256="0" * 64)),
     "6", "differs from the original file"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0]["original"].update(sha256="0" * 16)),
     "2.2", "64 lower-case hex"),
    (FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0]["original"].update(text="")), "2", "unknown field"),
    # 2.5 provenance
    (FOLDER, PYBASE, v2_json(lambda h: h["provenance"].pop("resid_version")), "2", "missing field 'resid_version'"),
    (FOLDER, PYBASE, v2_json(lambda h: h["provenance"].update(host="x")), "2", "unknown field 'host'"),
    (FOLDER, PYBASE, v2_json(lambda h: h["provenance"].update(base_repo=7)), "2", "provenance.base_repo must be a string"),
    (FOLDER, PYBASE, v2_json(lambda h: h["provenance"].update(base_repo=None)), "2", "provenance.base_repo must be a string"),
]


def _v2_accepts(folder):
    return [
        (FOLDER, PYBASE, add_file("empty.txt", b""), "7: a stored file of 0 bytes", check_empty_file),
        (FOLDER, PYBASE, two_accented_names,
         "2.4: only ASCII letters compare without case (e.txt with an acute accent, upper and lower)",
         check_both_names),
        (FOLDER, PYBASE, v2_json(lambda h: h.pop("files")), "2.2/2.4: trained.folder with no files (a folder "
         "holding only the shard; SPEC-GAPS E)", check_only_shard),
        (FOLDER, PYBASE, v2_json(lambda h: h["files"].reverse()), "2.4: stored files in another order than "
         "sorted (sorting is the writer's rule)", check_same_outputs(folder, FOLDER, PYBASE)),
        (FOLDER, PYBASE, v2_json(lambda h: h.pop("provenance")), "2: v2 without provenance",
         check_same_outputs(folder, FOLDER, PYBASE)),
        (FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0]["original"].pop("sha256")),
         "2.2: a lossless `original` without sha256 (SPEC-GAPS E)", check_same_outputs(folder, FOLDER, PYBASE)),
        (LOSSY_FOLDER, PYBASE, v2_json(lambda h: h["trained"]["shards"][0]["original"].update(sha256="0" * 64)),
         "7: a lossy file's original sha256 is not checked", check_same_outputs(folder, LOSSY_FOLDER, PYBASE)),
        (FOLDER, PYBASE, header_two_frames, "1.3: a header of two zstd frames (SPEC-GAPS E)",
         check_same_outputs(folder, FOLDER, PYBASE)),
        (FOLDER, PYBASE, header_skippable_first, "1.3: a skippable frame before the header's frame (SPEC-GAPS E)",
         check_same_outputs(folder, FOLDER, PYBASE)),
        ("lossless-f32.resid", V1_BASE, sharded_two, "6: a sharded v2 file without `original` (canonical "
         "shards and the index)", check_sharded(folder, "lossless-f32.resid")),
        ("lossless-f32.resid", V1_BASE, sharded_with_stored_index, "6: a sharded folder that stores its own "
         "index: the stored one is written, not a new one", check_stored_index),
        (V2_LOSSY, V1_BASE, original_edit(orig_move_empty_last),
         "2.2: a zero-length tensor listed after the tensor that shares its offset (SPEC-GAPS E)", None),
    ]


def nothing_written_cases(folder):
    """FORMAT.md 2.4 / 6, through the command line: a stored name `../x` is
    refused with nothing written (neither the output folder nor `x` beside
    it); an output folder that already holds a target, or a symlink on a
    path, is refused and left as it was."""
    fails = 0
    with tempfile.TemporaryDirectory() as tmp:
        resid = os.path.join(tmp, "dotdot.resid")
        with open(resid, "wb") as fh:
            fh.write(edited(folder, FOLDER, set_path("../x")))
        out = os.path.join(tmp, "deep", "out")
        os.makedirs(os.path.dirname(out))
        rc = R.main([os.path.join(folder, PYBASE), resid, "-o", out])
        left = sorted(os.listdir(os.path.join(tmp, "deep")))
        ok = rc == 3 and left == []
        print("%s  2.4 stored file '../x': exit %d, written beside the output: %r" % ("ok  " if ok else "FAIL", rc, left))
        fails += not ok
        good = os.path.join(folder, FOLDER)
        for what in ("existing config.json", "symlink 1_Pooling"):
            out = os.path.join(tmp, what.split()[0])
            os.makedirs(out)
            if what.startswith("existing"):
                with open(os.path.join(out, "config.json"), "wb") as fh:
                    fh.write(b"keep")
            else:
                os.makedirs(os.path.join(tmp, "elsewhere"))
                os.symlink(os.path.join(tmp, "elsewhere"), os.path.join(out, "1_Pooling"))
            before = sorted(os.listdir(out))
            rc = R.main([os.path.join(folder, PYBASE), good, "-o", out])
            after = sorted(os.listdir(out))
            elsewhere = os.path.join(tmp, "elsewhere")
            ok = rc == 3 and before == after and (not os.path.isdir(elsewhere) or os.listdir(elsewhere) == [])
            print("%s  6 output folder holding %s: exit %d, folder before %r after %r"
                  % ("ok  " if ok else "FAIL", what, rc, before, after))
            fails += not ok
    return fails


def edited(folder, fname, mutate):
    """The bytes of golden file `fname` after `mutate(body, header dict)`."""
    with open(os.path.join(folder, fname), "rb") as fh:
        data = fh.read()
    version = struct.unpack_from("<I", data, 8)[0]
    body, stored = split(data)
    body, header = mutate(body, json.loads(header_text(stored, version)))
    return assemble(body, header, version)


def run_one(folder, fname, base, mutate):
    with tempfile.NamedTemporaryFile(suffix=".resid", delete=False) as tmp:
        tmp.write(edited(folder, fname, mutate))
    try:
        return R.read_residual(tmp.name, os.path.join(folder, base))
    finally:
        os.unlink(tmp.name)


def main(folder):
    with open(os.path.join(folder, "manifest.json")) as fh:
        version = json.load(fh)["version"]
    if version == 1:
        refusals = REFUSALS
        accepts = [(f, b, m, w, None) for f, b, m, w in ACCEPTS]
    else:
        refusals, accepts = V2_REFUSALS, _v2_accepts(folder)
    fails = 0
    for fname, base, mutate, rule, words in refusals:
        try:
            run_one(folder, fname, base, mutate)
        except R.Refused as e:
            ok = e.rule == rule and words.lower() in e.message.lower()
            print("%s  refused by %-4s %s" % ("ok  " if ok else "FAIL", e.rule, e.message[:200]))
            if not ok:
                print("      expected FORMAT.md %s with %r" % (rule, words))
                fails += 1
            continue
        print("FAIL  accepted; expected a refusal by FORMAT.md %s (%r)" % (rule, words))
        fails += 1
    for fname, base, mutate, what, check in accepts:
        try:
            doc, tensors, outputs = run_one(folder, fname, base, mutate)
        except R.Refused as e:
            print("FAIL  refused (%s); FORMAT.md %s" % (e, what))
            fails += 1
            continue
        problem = check(doc, tensors, outputs) if check else None
        print("%s  accepted: FORMAT.md %s%s" % ("FAIL" if problem else "ok  ", what, "; " + problem if problem else ""))
        fails += bool(problem)
        if "NaN" in what:
            raw = next(r for (n, _, _, _, r) in tensors if n == "bias")
            print("      bias[0] rebuilt as f32 bits %s on this machine (%s)"
                  % (raw[:4][::-1].hex(), os.uname().machine))
        if "metadata" in what and doc["trained"]["shards"][0]["metadata"] != {"format": "pt"}:
            print("FAIL  the metadata kept is %r" % doc["trained"]["shards"][0]["metadata"])
            fails += 1
    extra = 0
    if version >= 2:
        extra = 3
        fails += nothing_written_cases(folder)
    print("selftest: %d refusal case(s), %d acceptance case(s), %d output case(s), %d failure(s)"
          % (len(refusals), len(accepts), extra, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
