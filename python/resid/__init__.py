"""resid: measure and store what training adds to a model.

Given a base checkpoint and a trained one, resid measures the structure of the
residual ``W_trained - W_base`` and stores it compactly, so that base +
residual file rebuilds the trained model, bit-exact or at a chosen rate.
These functions call the same Rust libraries as the ``resid`` command and
return what its ``--json`` writes::

    import pandas as pd, resid
    r = resid.analyze("base/", "finetuned/")          # the analysis record
    pd.DataFrame(r["tensors"])                        # one row per tensor
    resid.pack("base/", "finetuned/", "ft.resid", lossless=True)
    sd = resid.load("base/", "ft.resid")              # {name: array}, bit-exact

A checkpoint is a ``.safetensors`` file or a Hugging Face folder
(``model.safetensors``, or ``model.safetensors.index.json`` with its
shards), or a repo id (``org/name[@revision]``) already in the local Hugging
Face cache (nothing is downloaded); paths may be ``str`` or ``os.PathLike``. Long calls release the GIL,
draw a progress bar on ``sys.stderr`` (``progress=False`` turns it off) and
stop at the next tensor on Ctrl-C, leaving no half-written output. Errors
raise :class:`ResidError` subclasses (see :mod:`resid.errors`).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from . import _arrays, _progress, _resid
from ._arrays import bf16_to_float32
from .errors import (
    BadInputError,
    InternalError,
    MismatchError,
    ResidError,
    ResidIOError,
    UsageError,
)

__version__: str = _resid.__version__

__all__ = [
    "analyze",
    "pack",
    "unpack",
    "load",
    "open",
    "inspect",
    "ResidualReader",
    "bf16_to_float32",
    "ResidError",
    "UsageError",
    "BadInputError",
    "MismatchError",
    "ResidIOError",
    "InternalError",
]

PathLike = Union[str, "os.PathLike[str]"]


def _run(label: str, unit: str, progress: bool, call, *args, **kwargs):
    bar = _progress.bar(progress, label, unit)
    try:
        return call(*args, progress=bar, **kwargs)
    finally:
        if bar is not None:
            bar.close()


def analyze(
    base: Optional[PathLike],
    trained: Union[PathLike, Sequence[PathLike]],
    *,
    subspace_of: Optional[PathLike] = None,
    k: int = 8,
    seed: int = 0,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    deny_nonfinite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Measures the structure of the residual ``trained - base``.

    Returns the record ``resid analyze --json`` writes (same function, same
    defaults): ``r["tensors"]`` is the per-tensor table
    (``pandas.DataFrame(r["tensors"])``), ``r["components"]`` and
    ``r["layers"]`` its aggregates, ``r["interlayer"]`` the adjacent-layer
    correlations, ``r["verdict"]`` the four hypotheses (smooth, coordinated,
    sparse, clustered) against their Gaussian nulls.

    With several trained checkpoints (a list: checkpoints of one run, or
    fine-tunes of one base) the record is the one ``resid analyze --trained A
    --trained B --json`` writes: ``r["residuals"]``, one report per residual,
    and ``r["pairs"]``, per pair of residuals the cosine, sign agreement and
    TIES agreement, overall, per component and per tensor.

    Args:
        base: the base checkpoint; None with ``subspace_of``.
        trained: the trained checkpoint, or a list of them (one base).
        subspace_of: instead of a base, project each weight matrix of
            ``trained`` off the top ``k`` eigenvectors of E^T E of this
            checkpoint's token embedding and analyse what is left.
        k: directions projected out with ``subspace_of``.
        seed: seed of every null and sample.
        threads: worker threads (None: all cores); results do not depend on it.
        max_memory: bytes of tensors in flight (None: a quarter of the memory
            available, at most 1 GiB).
        deny_nonfinite: fail on the first tensor holding NaN/Inf instead of
            measuring its finite entries (with a ``RuntimeWarning``).
        progress: draw a progress bar on ``sys.stderr``.

    Raises:
        ResidError: a subclass naming the file and the problem.
    """
    if not isinstance(trained, (str, os.PathLike)):
        several = [str(t) for t in trained]
        if len(several) != 1:
            if base is None or subspace_of is not None:
                raise ValueError("several trained checkpoints need a base (not subspace_of)")
            r = json.loads(
                _run(
                    "analyze",
                    "",
                    progress,
                    _resid.analyze_several,
                    base,
                    several,
                    seed=seed,
                    threads=threads,
                    max_memory=max_memory,
                    deny_nonfinite=deny_nonfinite,
                )
            )
            return r
        trained = several[0]
    r = json.loads(
        _run(
            "analyze",
            "",
            progress,
            _resid.analyze,
            base,
            trained,
            subspace_of=subspace_of,
            k=k,
            seed=seed,
            threads=threads,
            max_memory=max_memory,
            deny_nonfinite=deny_nonfinite,
        )
    )
    for t in r.get("tensors", []):
        if t.get("nan", 0) + t.get("inf", 0) > 0:
            why = t.get("note") or "non-finite values"
            warnings.warn(f"tensor '{t['name']}': {why}", RuntimeWarning, stacklevel=2)
    return r


def pack(
    base: PathLike,
    trained: PathLike,
    out: PathLike,
    *,
    lossless: bool = False,
    bits_per_param: Optional[float] = None,
    keep: Optional[float] = None,
    max_error: Optional[float] = None,
    seed: int = 0,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    allow_nonfinite: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Stores the residual of ``trained`` against ``base`` in the file ``out``.

    Give exactly one mode, as with ``resid pack``: ``lossless=True``
    (bit-exact rebuild), ``bits_per_param`` (target bits per parameter of the
    whole file), ``keep`` (fraction of residual entries kept) or
    ``max_error`` (largest relative Frobenius error of the residual). The
    file appears only once complete.

    Returns the record ``resid pack --json`` writes: ``file_bytes``,
    ``bits_per_param``, ``ratio``, the errors reached and ``tensors``.
    """
    modes = [
        (name, value)
        for name, value, given in (
            ("lossless", None, bool(lossless)),
            ("bits_per_param", bits_per_param, bits_per_param is not None),
            ("keep", keep, keep is not None),
            ("max_error", max_error, max_error is not None),
        )
        if given
    ]
    if len(modes) != 1:
        raise UsageError(
            "give exactly one of lossless=True, bits_per_param=, keep=, max_error="
            + (f" (got {', '.join(m for m, _ in modes)})" if modes else "")
        )
    mode, value = modes[0]
    return json.loads(
        _run(
            "pack",
            "B",
            progress,
            _resid.pack,
            base,
            trained,
            out,
            mode,
            None if value is None else float(value),
            seed=seed,
            threads=threads,
            max_memory=max_memory,
            allow_nonfinite=allow_nonfinite,
        )
    )


def unpack(
    base: PathLike,
    file: PathLike,
    out: PathLike,
    *,
    threads: Optional[int] = None,
    max_memory: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Rebuilds the trained checkpoint from ``base`` and the residual
    ``file`` into ``out`` (a ``.safetensors`` file, or a folder when the
    trained side was sharded), as ``resid unpack`` does.

    Returns ``{"tensors": n, "bytes": n, "outputs": [paths]}``.
    """
    return json.loads(
        _run(
            "unpack",
            "B",
            progress,
            _resid.unpack,
            base,
            file,
            out,
            threads=threads,
            max_memory=max_memory,
        )
    )


def inspect(file: PathLike) -> Dict[str, Any]:
    """Describes a residual file: the record ``resid inspect --json`` writes
    (format version, mode, settings, sizes, per-tensor encodings)."""
    return json.loads(_resid.inspect(file))


class ResidualReader:
    """A residual file with its base, read one tensor at a time, like
    safetensors' ``safe_open``::

        with resid.open("base/", "ft.resid") as f:
            f.keys()                       # tensor names
            f.metadata()                   # the trained checkpoint's __metadata__
            w = f.get_tensor("model.layers.0.mlp.up_proj.weight")

    ``get_tensor`` decodes only that tensor (checking the base's fingerprint
    and, when lossless, the trained checksum), so one layer of a large
    fine-tune is read without rebuilding the rest. See :func:`load` for the
    array types.
    """

    def __init__(self, base: PathLike, file: PathLike, *, framework: Optional[str] = None):
        _arrays.check_framework(framework)
        self._r = _resid.Reader(base, file)
        self._framework = framework

    def keys(self) -> List[str]:
        """Tensor names, in the trained checkpoint's order."""
        return self._r.keys()

    def metadata(self) -> Dict[str, str]:
        """The trained checkpoint's ``__metadata__`` (merged over shards)."""
        return self._r.metadata()

    def dtype(self, name: str) -> str:
        """The safetensors dtype of tensor ``name`` (``"BF16"``, ``"F32"``, ...)."""
        return self._r.info(name)[0]

    def shape(self, name: str) -> List[int]:
        """The shape of tensor ``name``."""
        return list(self._r.info(name)[1])

    def get_tensor(self, name: str) -> Any:
        """Tensor ``name``, rebuilt: a numpy array, or a ``torch.Tensor``
        (see :func:`load`). Raises ``KeyError`` for an unknown name."""
        dtype, shape = self._r.info(name)
        return _arrays.to_array(self._r.read(name), dtype, shape, self._framework)

    @property
    def path(self) -> str:
        """The residual file's path."""
        return str(self._r.path)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __enter__(self) -> "ResidualReader":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __repr__(self) -> str:
        return f"<resid.ResidualReader {self.path!r}: {len(self)} tensors>"


def open(base: PathLike, file: PathLike, *, framework: Optional[str] = None) -> ResidualReader:
    """Opens the residual ``file`` made against ``base`` for lazy reading
    (headers only until :meth:`ResidualReader.get_tensor`)."""
    return ResidualReader(base, file, framework=framework)


def load(
    base: PathLike,
    file: PathLike,
    *,
    framework: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """The trained checkpoint rebuilt in memory: ``{name: array}``.

    Arrays share the decoded bytes (no further copy) and are writable:

    - F32, F16, F64 and the integer dtypes: numpy arrays;
    - BF16 (and the 8-bit floats): ``torch.Tensor`` of that dtype when torch
      can be imported, otherwise numpy ``uint16`` (``uint8``) arrays of their
      bit patterns; :func:`bf16_to_float32` gives the values.

    ``framework="numpy"`` asks for numpy always (bit patterns for bf16),
    ``framework="pt"`` for ``torch.Tensor`` always. The whole model is held
    in memory; for one tensor at a time use :func:`open`.
    """
    bar = _progress.bar(progress, "load")
    try:
        with open(base, file, framework=framework) as f:
            names = f.keys()
            out: Dict[str, Any] = {}
            for i, name in enumerate(names):
                if bar is not None:
                    bar(i, len(names), name)
                out[name] = f.get_tensor(name)
            return out
    finally:
        if bar is not None:
            bar.close()
