"""The exceptions resid raises.

Every error of the Rust libraries has a class (``resid_io::ErrorClass``): the
same one that chooses the CLI's exit code chooses the exception here, and the
message is the one the CLI prints, naming the file and the problem.

=====================  =========  ===============================================
exception              CLI exit   raised when
=====================  =========  ===============================================
:class:`UsageError`    2          the request is invalid (conflicting settings)
:class:`BadInputError` 3          an input is malformed: a truncated or lying
                                  header, shapes that do not pair, NaN refused
:class:`MismatchError` 4          a residual file is damaged, or was made
                                  against another base
:class:`ResidIOError`  5          the operating system failed a read or write
                                  (missing file, full disk)
:class:`InternalError` 1          a bug in resid (a Rust panic)
=====================  =========  ===============================================

All derive from :class:`ResidError`; :class:`UsageError` and
:class:`BadInputError` are also :class:`ValueError`, :class:`ResidIOError` is
also :class:`OSError`.
"""

from __future__ import annotations

__all__ = [
    "ResidError",
    "UsageError",
    "BadInputError",
    "MismatchError",
    "ResidIOError",
    "InternalError",
]


class ResidError(Exception):
    """Base class of every error resid raises."""

    #: The CLI's exit code for this kind of error.
    exit_code = 1


class UsageError(ResidError, ValueError):
    """The request itself is invalid (conflicting or out-of-range settings)."""

    exit_code = 2


class BadInputError(ResidError, ValueError):
    """An input is not what it claims to be: a malformed checkpoint, NaN where
    refused, shapes that do not pair."""

    exit_code = 3


class MismatchError(ResidError):
    """A residual file is damaged, or was made against another base."""

    exit_code = 4


class ResidIOError(ResidError, OSError):
    """The operating system failed a read or a write (missing file, full disk)."""

    exit_code = 5

    def __str__(self) -> str:
        # OSError formats single-argument errors as their argument already;
        # keep the message exactly as resid wrote it.
        return str(self.args[0]) if self.args else ""


class InternalError(ResidError):
    """A bug in resid: a Rust panic, turned into an exception. Please report it."""
