"""Stubs of the extension module resid._resid (crates/resid-py). Use the
package :mod:`resid`: these are its building blocks."""

import os
from typing import Callable, Dict, List, Optional, Tuple, Union

_Path = Union[str, os.PathLike[str]]
_Progress = Optional[Callable[[int, int, str], None]]

__version__: str

def analyze(
    base: Optional[_Path],
    trained: _Path,
    subspace_of: Optional[_Path] = None,
    k: int = 8,
    seed: int = 0,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    deny_nonfinite: bool = False,
    progress: _Progress = None,
) -> str:
    """The JSON record of ``resid analyze --json``."""

def pack(
    base: _Path,
    trained: _Path,
    out: _Path,
    mode: str,
    value: Optional[float] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    allow_nonfinite: bool = False,
    progress: _Progress = None,
) -> str:
    """The JSON record of ``resid pack --json``; ``mode`` is lossless,
    bits_per_param, keep or max_error."""

def unpack(
    base: _Path,
    file: _Path,
    out: _Path,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    progress: _Progress = None,
) -> str:
    """The JSON record of what ``resid unpack`` wrote."""

def inspect(file: _Path) -> str:
    """The JSON record of ``resid inspect --json``."""

class Reader:
    """A residual file and its base, decoded one tensor at a time."""

    def __init__(self, base: _Path, file: _Path) -> None: ...
    def keys(self) -> List[str]: ...
    def metadata(self) -> Dict[str, str]: ...
    def info(self, name: str) -> Tuple[str, List[int]]: ...
    def read(self, name: str) -> bytearray: ...
    @property
    def path(self) -> str: ...
