"""Errors raise resid.ResidError subclasses with the CLI's message, naming the
file, and leave no output behind."""

import pytest

import resid
from conftest import run_cli


def test_missing_file_raises_io_error_naming_it(pair, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(resid.ResidIOError) as e:
        resid.analyze(missing, pair[1], progress=False)
    assert str(missing) in str(e.value)
    assert isinstance(e.value, OSError) and isinstance(e.value, resid.ResidError)
    with pytest.raises(resid.ResidIOError, match="nope.resid"):
        resid.inspect(tmp_path / "nope.resid")
    with pytest.raises(resid.ResidIOError, match="nope.resid"):
        resid.open(pair[0], tmp_path / "nope.resid")


def test_message_is_the_clis(pair, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(resid.ResidError) as e:
        resid.pack(missing, pair[1], tmp_path / "x.resid", lossless=True, progress=False)
    p = run_cli("pack", "--base", missing, "--trained", pair[1], "--lossless",
                "-o", tmp_path / "x.resid", "--quiet", check=False)
    assert p.returncode != 0
    assert p.stderr.strip() == f"resid: error: {e.value}"


@pytest.mark.parametrize("damage", ["truncate", "flip-header", "not-resid"])
def test_damaged_residual_file_raises_naming_it(pair, packed, tmp_path, damage):
    raw = bytearray(packed.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 10]
    elif damage == "flip-header":
        raw[-40] ^= 0x01  # inside the JSON header, before the footer
    else:
        raw[:8] = b"NOTRESID"
    bad = tmp_path / f"{damage}.resid"
    bad.write_bytes(bytes(raw))
    # Not a residual file at all is bad input; a damaged one, a mismatch.
    cls = resid.BadInputError if damage == "not-resid" else resid.MismatchError
    for call in (
        lambda: resid.inspect(bad),
        lambda: resid.load(pair[0], bad, progress=False),
        lambda: resid.unpack(pair[0], bad, tmp_path / "out.safetensors", progress=False),
    ):
        with pytest.raises(cls) as e:
            call()
        assert str(bad) in str(e.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_wrong_base_raises_and_writes_nothing(pair, packed, other_base, tmp_path):
    out = tmp_path / "rebuilt.safetensors"
    with pytest.raises(resid.MismatchError, match="another base") as e:
        resid.unpack(other_base, packed, out, progress=False)
    assert str(packed) in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(resid.MismatchError, match="another base"):
        resid.load(other_base, packed, progress=False)
    name = resid.open(other_base, packed).keys()[0]
    with pytest.raises(resid.MismatchError, match=name):
        resid.open(other_base, packed).get_tensor(name)


def test_usage_errors(pair, tmp_path):
    with pytest.raises(resid.UsageError, match="exactly one"):
        resid.pack(*pair, tmp_path / "x.resid", progress=False)
    with pytest.raises(resid.UsageError, match="exactly one"):
        resid.pack(*pair, tmp_path / "x.resid", lossless=True, keep=0.1, progress=False)
    with pytest.raises(resid.UsageError):
        resid.analyze(pair[0], pair[1], subspace_of=pair[0], progress=False)
    with pytest.raises(resid.UsageError):
        resid.open(*pair, framework="jax")
    assert isinstance(resid.UsageError("x"), ValueError)
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoint_is_bad_input(pair, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((1000).to_bytes(8, "little") + b"{")
    with pytest.raises(resid.BadInputError, match="bad.safetensors"):
        resid.analyze(pair[0], bad, progress=False)


def test_exception_class_is_the_clis_exit_code(pair, packed, other_base, tmp_path):
    """The same ErrorClass picks the CLI's exit code and the exception."""
    cases = [
        (lambda: resid.inspect(tmp_path / "nope.resid"), ("inspect", tmp_path / "nope.resid")),
        (lambda: resid.unpack(other_base, packed, tmp_path / "o", progress=False),
         ("unpack", "--base", other_base, packed, "-o", tmp_path / "o", "--quiet")),
    ]
    for call, args in cases:
        with pytest.raises(resid.ResidError) as e:
            call()
        assert run_cli(*args, check=False).returncode == e.value.exit_code
