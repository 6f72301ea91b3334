#!/usr/bin/env python3
"""Refusals the golden error files do not cover: each case edits a golden
file (its header JSON or one block, with every checksum made consistent
again) so that exactly one FORMAT.md rule is broken, and checks that
resid_specdecode refuses it under that rule. Also checks two acceptances
from FORMAT.md 7 (a repeated metadata key keeps its last value; bytes
between blocks are ignored).

    python selftest.py crates/resid-codec/tests/golden/v1
"""

import json
import os
import struct
import sys
import tempfile

import xxhash

import resid_specdecode as R


def split(data):
    ho, hl, _ = struct.unpack_from("<QQQ", data, len(data) - 32)
    return data[:ho], data[ho:ho + hl]


def assemble(body, header_bytes):
    foot = struct.pack("<QQQ", len(body), len(header_bytes), xxhash.xxh3_64_intdigest(header_bytes)) + b"RESIDEND"
    return body + header_bytes + foot


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


def run_one(folder, fname, base, mutate):
    with open(os.path.join(folder, fname), "rb") as fh:
        data = fh.read()
    body, header = split(data)
    body, header = mutate(body, json.loads(header))
    with tempfile.NamedTemporaryFile(suffix=".resid", delete=False) as tmp:
        tmp.write(assemble(body, header))
    try:
        return R.read_residual(tmp.name, os.path.join(folder, base))
    finally:
        os.unlink(tmp.name)


def main(folder):
    fails = 0
    for fname, base, mutate, rule, words in REFUSALS:
        try:
            run_one(folder, fname, base, mutate)
        except R.Refused as e:
            ok = e.rule == rule and words.lower() in e.message.lower()
            print("%s  refused by %-4s %s" % ("ok  " if ok else "FAIL", e.rule, e.message))
            if not ok:
                print("      expected FORMAT.md %s with %r" % (rule, words))
                fails += 1
            continue
        print("FAIL  accepted; expected a refusal by FORMAT.md %s (%r)" % (rule, words))
        fails += 1
    for fname, base, mutate, what in ACCEPTS:
        try:
            doc, tensors, _ = run_one(folder, fname, base, mutate)
        except R.Refused as e:
            print("FAIL  refused (%s); FORMAT.md %s" % (e, what))
            fails += 1
            continue
        print("ok    accepted: FORMAT.md %s" % what)
        if "NaN" in what:
            raw = next(r for (n, _, _, _, r) in tensors if n == "bias")
            print("      bias[0] rebuilt as f32 bits %s on this machine (%s)"
                  % (raw[:4][::-1].hex(), os.uname().machine))
        if "metadata" in what and doc["trained"]["shards"][0]["metadata"] != {"format": "pt"}:
            print("FAIL  the metadata kept is %r" % doc["trained"]["shards"][0]["metadata"])
            fails += 1
    print("selftest: %d refusal case(s), %d acceptance case(s), %d failure(s)" % (len(REFUSALS), len(ACCEPTS), fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
