"""Rebuilt tensor bytes as arrays: numpy for what numpy has, torch for bf16
and the 8-bit floats when torch can be imported (or is asked for)."""

from __future__ import annotations

import importlib.util
from typing import Any, Optional, Sequence

import numpy as np

# Little-endian, as safetensors stores every dtype.
_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}

# Without numpy support: the raw bit patterns, as unsigned integers.
_BITS = {"BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1", "F8_E8M0": "u1"}

_TORCH = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}

_FRAMEWORKS = (None, "numpy", "np", "pt", "torch")


def check_framework(framework: Optional[str]) -> None:
    """Raises UsageError for an unknown ``framework``."""
    if framework not in _FRAMEWORKS:
        from .errors import UsageError

        raise UsageError(
            f"framework={framework!r}: choose None (numpy, torch for bf16), 'numpy' or 'pt'"
        )


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def to_array(
    data: bytearray, dtype: str, shape: Sequence[int], framework: Optional[str]
) -> Any:
    """The tensor of ``dtype`` and ``shape`` whose little-endian bytes are
    ``data``, without copying them.

    ``framework`` None: numpy, except bf16 and the 8-bit floats, which are
    ``torch.Tensor`` when torch is importable and otherwise numpy arrays of
    their bit patterns (``uint16`` for bf16: :func:`resid.bf16_to_float32`
    turns them into values). ``"numpy"``: numpy always (bit patterns for
    those dtypes). ``"pt"``: ``torch.Tensor`` always.
    """
    shape = tuple(int(s) for s in shape)
    wants_torch = framework in ("pt", "torch") or (
        framework is None and dtype not in _NUMPY and dtype in _TORCH and _torch_available()
    )
    if wants_torch and dtype in _TORCH:
        import torch

        tdt = getattr(torch, _TORCH[dtype])
        if len(data) == 0:
            return torch.empty(shape, dtype=tdt)
        return torch.frombuffer(data, dtype=tdt).reshape(shape)
    np_dtype = _NUMPY.get(dtype) or _BITS.get(dtype)
    if np_dtype is None:
        from .errors import BadInputError

        raise BadInputError(f"tensor dtype {dtype} has no array form here")
    a = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    if wants_torch:
        import torch

        return torch.from_numpy(a)
    return a


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (the ``uint16`` form of a bf16 tensor) as float32
    values, exactly: bf16 is the upper half of an IEEE float32."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"expected the uint16 bit patterns of bf16, got {bits.dtype}")
    return (bits.astype("<u4") << 16).view("<f4")
