"""Shared test utilities: the installed `resid` command, checkpoint pairs made
by `resid synth` or written here, and a small safetensors reader/writer that
is independent of resid (the expectation the tests compare against)."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

# dtype name -> numpy dtype, for writing and reading test checkpoints.
ST_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # bit patterns
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def resid_cli() -> str:
    """The `resid` command the wheel installed beside this Python."""
    exe = Path(sysconfig.get_path("scripts")) / "resid"
    assert exe.is_file(), f"{exe}: the wheel did not install the resid command"
    return str(exe)


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([resid_cli(), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"resid {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p


def write_safetensors(
    path: Path, tensors: Dict[str, Tuple[str, np.ndarray]], metadata: Dict[str, str] = None
) -> None:
    """Writes `{name: (dtype, array)}` as a safetensors file (bf16 given as
    uint16 bit patterns)."""
    header = {}
    blobs = []
    off = 0
    for name, (dtype, a) in tensors.items():
        data = np.ascontiguousarray(a, dtype=ST_NUMPY[dtype]).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(a.shape),
            "data_offsets": [off, off + len(data)],
        }
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path: Path):
    """`({name: (dtype, shape, bytes)}, metadata)` of a safetensors file, in
    header order; for a folder, of its model.safetensors or of the shards its
    model.safetensors.index.json names (metadata of the first shard)."""
    path = Path(path)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if not index.exists():
            return read_safetensors(path / "model.safetensors")
        shards = dict.fromkeys(json.loads(index.read_text())["weight_map"].values())
        out, meta = {}, None
        for s in shards:
            t, m = read_safetensors(path / s)
            out.update(t)
            meta = m if meta is None else meta
        return out, meta
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        s, t = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], raw[base + s : base + t])
    return out, meta


def tree_bytes(path: Path) -> Dict[str, bytes]:
    """Every file under a folder (or the file itself): relative name -> bytes."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def synth(out: Path, shape: str, dtype: str = "bf16", seed: int = 0, residual: str = "sparse"):
    run_cli(
        "synth", "--shape", shape, "--dtype", dtype, "--residual", residual,
        "--seed", seed, "--out", out, "--quiet",
    )
    return out / "base", out / "trained"


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """A small bf16 Llama-shaped pair from `resid synth` (2 layers, d=64)."""
    return synth(tmp_path_factory.mktemp("pair"), "custom:2,64,160,256")


@pytest.fixture(scope="session")
def other_base(tmp_path_factory):
    """A base of the same shapes as `pair`'s, drawn with another seed."""
    return synth(tmp_path_factory.mktemp("other"), "custom:2,64,160,256", seed=7)[0]


@pytest.fixture(scope="session")
def big_pair(tmp_path_factory):
    """A pair whose pack and analysis take a second or more (25M params)."""
    return synth(tmp_path_factory.mktemp("big"), "llama-25m")


@pytest.fixture(scope="session")
def packed(pair, tmp_path_factory):
    """`pair` packed lossless by the Python API."""
    import resid

    out = tmp_path_factory.mktemp("packed") / "ft.resid"
    resid.pack(*pair, out, lossless=True, progress=False)
    return out
