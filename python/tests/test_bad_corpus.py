"""No input crashes the interpreter or escapes as a panic: the codec's golden
error files (crates/resid-codec/tests/golden/*/manifest.json "errors"), the
damaged checkpoints of TESTING.md's bad-input table, and random bytes, through
every entry point that reads them. Each call must raise a resid.ResidError
other than InternalError (the class a Rust panic becomes), name the file, and
leave no output."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

import resid
from conftest import write_safetensors

GOLDEN = Path(__file__).resolve().parents[2] / "crates" / "resid-codec" / "tests" / "golden"


def golden_errors():
    out = []
    for manifest in sorted(GOLDEN.glob("*/manifest.json")):
        for e in json.loads(manifest.read_text())["errors"]:
            out.append(pytest.param(manifest.parent, e, id=f"{manifest.parent.name}/{e['file']}"))
    return out


# Golden error files whose tensors are intact: only unpack, which writes the
# stored non-tensor files, reads the damaged part.
TENSORS_INTACT = {"error-file-sha256.resid"}


def refused(call, named):
    """Runs `call`; it must raise a classified ResidError naming `named`."""
    with pytest.raises(resid.ResidError) as e:
        call()
    assert not isinstance(e.value, resid.InternalError), f"a panic: {e.value}"
    assert str(named) in str(e.value), str(e.value)
    return str(e.value)


def read_all(base, file):
    """Every way the package reads a residual file, each forced to the end."""
    yield lambda: resid.load(base, file, progress=False)
    def lazily():
        with resid.open(base, file) as r:
            for k in r.keys():
                r.get_tensor(k)
    yield lazily


@pytest.mark.parametrize("folder,case", golden_errors())
def test_golden_error_files_raise_never_panic(folder, case, tmp_path):
    file, base = folder / case["file"], folder / case["base"]
    messages = []
    # inspect reads the container only: it may accept a file whose damage
    # lies in the data (a block checksum) or needs the base (another base).
    try:
        resid.inspect(file)
    except resid.ResidError as e:
        assert not isinstance(e, resid.InternalError), f"a panic: {e}"
        messages.append(str(e))
    for call in read_all(base, file):
        if case["file"] in TENSORS_INTACT:
            call()  # the damage is in a stored file, which load/open never read
        else:
            messages.append(refused(call, file))
    out = tmp_path / "out"
    messages.append(refused(lambda: resid.unpack(base, file, out, progress=False), file))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert any(case["error"] in m for m in messages), (case["error"], messages)


def raw(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


def st(entries: dict, data: bytes) -> bytes:
    h = json.dumps(entries).encode()
    return raw(h + b" " * (-len(h) % 8), data)


# (name, bytes, what the message says): TESTING.md's damaged checkpoints.
BAD_CHECKPOINTS = [
    ("tiny", b"abc", "shorter than the 8-byte header length"),
    ("past-end", (16692).to_bytes(8, "little") + b"{}", "runs past the end"),
    ("huge-header", (1 << 40).to_bytes(8, "little") + b"{}", "exceeds"),
    ("not-json", raw(b'{"w": 1}'), "not valid JSON"),
    ("not-utf8", raw(b'{"\xff": 1}'), "not UTF-8"),
    ("overlap", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                    "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24)),
     "overlaps"),
    ("outside", st({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, bytes(16)),
     "outside"),
    ("size-mismatch", st({"a": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}},
                         bytes(16)), "needs 24 bytes"),
    ("overflow", st({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 16]}},
                    bytes(16)), "overflows"),
    ("unknown-dtype", st({"a": {"dtype": "Q4_K", "shape": [4], "data_offsets": [0, 4]}}, bytes(4)),
     "unknown dtype"),
    ("duplicate", raw(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                      b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
     "duplicate"),
    ("pickle", b"PK\x03\x04" + bytes(60), "PyTorch pickle checkpoint"),
]


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.safetensors"
    write_safetensors(p, {"w": ("F32", np.arange(16, dtype=np.float32).reshape(4, 4))})
    return p


@pytest.mark.parametrize("name,data,problem", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_damaged_checkpoints_raise_bad_input(name, data, problem, good, tmp_path):
    bad = tmp_path / f"{name}.safetensors"
    bad.write_bytes(data)
    out = tmp_path / "x.resid"
    calls = [
        lambda: resid.analyze(bad, good, progress=False),
        lambda: resid.analyze(good, bad, progress=False),
        lambda: resid.pack(good, bad, out, lossless=True, progress=False),
        lambda: resid.pack(bad, good, out, bits_per_param=1.0, progress=False),
    ]
    for call in calls:
        with pytest.raises(resid.BadInputError) as e:
            call()
        assert str(bad) in str(e.value) and problem in str(e.value), str(e.value)
    assert not out.exists()


def test_random_bytes_never_panic(good, tmp_path):
    """Random and mutated bytes as a checkpoint and as a residual file."""
    packed = tmp_path / "ok.resid"
    resid.pack(good, good, packed, lossless=True, progress=False)
    seed_file = packed.read_bytes()
    rng = random.Random(0)
    for i in range(60):
        if i % 2:
            data = bytearray(seed_file)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if i % 3 == 0:
                data = data[: rng.randrange(len(data))]
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        f = tmp_path / f"r{i}.resid"
        f.write_bytes(bytes(data))
        for call in (
            lambda: resid.inspect(f),
            lambda: resid.load(good, f, progress=False),
            lambda: resid.analyze(f, good, progress=False),
        ):
            try:
                call()
            except resid.ResidError as e:
                assert not isinstance(e, resid.InternalError), f"input {i}: a panic: {e}"
        f.unlink()
