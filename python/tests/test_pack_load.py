"""pack, load, open, unpack and inspect: bit-exact against the trained
tensors as written on disk, and the same bytes and records as the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

import resid
from conftest import read_safetensors, run_cli, tree_bytes, write_safetensors


def test_pack_writes_the_cli_file_and_record(pair, packed, tmp_path):
    base, trained = pair
    cli_out = tmp_path / "cli.resid"
    cli_json = tmp_path / "cli.json"
    run_cli(
        "pack", "--base", base, "--trained", trained, "--lossless",
        "-o", cli_out, "--json", cli_json, "--quiet",
    )
    assert packed.read_bytes() == cli_out.read_bytes()
    rep = resid.pack(base, trained, tmp_path / "again.resid", lossless=True, progress=False)
    assert rep == json.loads(cli_json.read_text())
    assert rep["mode"] == "lossless" and rep["file_bytes"] == packed.stat().st_size


def test_load_is_bit_exact_bf16(pair, packed):
    base, trained = pair
    want, _ = read_safetensors(trained)
    got = resid.load(base, packed, framework="numpy", progress=False)
    assert sorted(got) == sorted(want)
    for name, (dtype, shape, raw) in want.items():
        a = got[name]
        assert dtype == "BF16"
        assert a.dtype == np.uint16 and list(a.shape) == shape
        assert a.tobytes() == raw, name
        assert a.flags.writeable


def test_bf16_values(pair, packed):
    base, trained = pair
    name, (dtype, shape, raw) = next(iter(read_safetensors(trained)[0].items()))
    bits = resid.open(base, packed, framework="numpy").get_tensor(name)
    # bf16 is the upper half of a float32: an independent decode.
    want = np.frombuffer(
        b"".join(b"\0\0" + raw[i : i + 2] for i in range(0, len(raw), 2)), "<f4"
    ).reshape(shape)
    np.testing.assert_array_equal(resid.bf16_to_float32(bits), want)


def test_bf16_as_torch_when_importable(pair, packed):
    torch = pytest.importorskip("torch")
    base, trained = pair
    want, _ = read_safetensors(trained)
    got = resid.load(base, packed, progress=False)
    for name, (_, shape, raw) in want.items():
        assert got[name].dtype == torch.bfloat16 and list(got[name].shape) == shape
        assert got[name].view(torch.int16).numpy().tobytes() == raw


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A pair with every numpy dtype resid stores, written here."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("mixed")
    shapes = {"F32": (16, 24), "F16": (8, 40), "F64": (30,), "I64": (5, 3), "I32": (7,),
              "U8": (64,), "BOOL": (9,), "BF16": (12, 12)}
    base, trained = {}, {}
    for dt, shape in shapes.items():
        if dt == "BOOL":
            b = rng.random(shape) < 0.5
            t = b ^ (rng.random(shape) < 0.2)
        elif dt in ("I64", "I32", "U8"):
            b = rng.integers(0, 100, shape).astype({"I64": "<i8", "I32": "<i4", "U8": "u1"}[dt])
            t = b + rng.integers(0, 3, shape).astype(b.dtype)
        elif dt == "BF16":
            b = (rng.standard_normal(shape).astype("<f4").view("<u4") >> 16).astype("<u2")
            t = b ^ rng.integers(0, 4, shape).astype("<u2")
        else:
            np_dt = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dt]
            b = rng.standard_normal(shape).astype(np_dt)
            t = (b + 0.01 * rng.standard_normal(shape)).astype(np_dt)
        base[f"w.{dt.lower()}"] = (dt, b)
        trained[f"w.{dt.lower()}"] = (dt, t)
    write_safetensors(d / "base.safetensors", base, {"format": "pt"})
    write_safetensors(d / "trained.safetensors", trained, {"format": "pt", "step": "100"})
    out = d / "mixed.resid"
    resid.pack(d / "base.safetensors", d / "trained.safetensors", out, lossless=True,
               progress=False)
    return d / "base.safetensors", d / "trained.safetensors", out, trained


def test_load_every_dtype_bit_exact(mixed):
    base, _, file, trained = mixed
    got = resid.load(base, file, framework="numpy", progress=False)
    assert list(got) == list(trained)
    for name, (dt, want) in trained.items():
        a = got[name]
        assert a.shape == want.shape, name
        if dt == "BF16":
            assert a.dtype == np.uint16
        else:
            assert a.dtype == want.dtype, name
        assert a.tobytes() == want.tobytes(), name


def test_open_reads_one_tensor_and_the_metadata(mixed):
    base, trained_path, file, trained = mixed
    with resid.open(base, file) as f:
        assert f.keys() == list(trained) and len(f) == len(trained)
        assert "w.f32" in f and "nope" not in f
        assert f.metadata() == {"format": "pt", "step": "100"}
        assert f.dtype("w.f16") == "F16" and f.shape("w.f16") == [8, 40]
        np.testing.assert_array_equal(f.get_tensor("w.f32"), trained["w.f32"][1])
        with pytest.raises(KeyError, match="nope"):
            f.get_tensor("nope")


def test_open_decodes_only_the_tensor_asked_for(pair, packed, tmp_path):
    """Damage one place in the coded blocks: the tensor holding it fails
    (naming the file), every other tensor still reads bit-exact."""
    base, trained = pair
    want, _ = read_safetensors(trained)
    raw = bytearray(packed.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    bad = tmp_path / "damaged.resid"
    bad.write_bytes(bytes(raw))
    f = resid.open(base, bad, framework="numpy")
    failed, good = [], []
    for name in f.keys():
        try:
            a = f.get_tensor(name)
        except resid.MismatchError as e:
            assert str(bad) in str(e) and name in str(e)
            failed.append(name)
        else:
            assert a.tobytes() == want[name][2], name
            good.append(name)
    assert len(failed) == 1 and len(good) == len(want) - 1


def test_unpack_rebuilds_the_trained_checkpoint(pair, packed, tmp_path):
    base, trained = pair
    out = tmp_path / "rebuilt"  # the trained side is a shard index: a folder
    rep = resid.unpack(base, packed, out, progress=False)
    want, wmeta = read_safetensors(trained)
    assert rep["tensors"] == len(want) and all(Path(p).parent == out for p in rep["outputs"])
    got, gmeta = read_safetensors(out)
    assert got == want and gmeta == wmeta
    cli_out = tmp_path / "cli"
    run_cli("unpack", "--base", base, packed, "-o", cli_out, "--quiet")
    assert tree_bytes(out) == tree_bytes(cli_out)


def test_unpack_single_file(mixed, tmp_path):
    base, trained_path, file, _ = mixed
    out = tmp_path / "rebuilt.safetensors"
    assert resid.unpack(base, file, out, progress=False)["outputs"] == [str(out)]
    assert read_safetensors(out) == read_safetensors(trained_path)


def test_lossy_pack_meets_its_target_and_loads(pair, tmp_path):
    base, trained = pair
    out = tmp_path / "lossy.resid"
    rep = resid.pack(base, trained, out, max_error=0.2, progress=False)
    assert rep["mode"] == "lossy" and rep["residual_rel_error"] <= 0.2
    got = resid.load(base, out, framework="numpy", progress=False)
    assert set(got) == set(read_safetensors(trained)[0])


def test_inspect_is_the_cli_json(packed, tmp_path):
    out = tmp_path / "cli.json"
    run_cli("inspect", packed, "--json", out)
    r = resid.inspect(packed)
    assert r == json.loads(out.read_text())
    assert r["mode"] == "lossless" and r["file_bytes"] == packed.stat().st_size
