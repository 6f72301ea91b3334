"""A one-line progress bar on ``sys.stderr`` (so it shows in a terminal and
in a notebook alike), drawn from the figures the Rust side reports."""

from __future__ import annotations

import sys
import time
from typing import Optional


def _fmt(n: int, unit: str) -> str:
    if unit != "B":
        return str(n)
    for u in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or u == "TB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1000
    return str(n)


class Bar:
    """``bar(done, total, name)`` redraws; ``bar.close()`` clears the line."""

    def __init__(self, label: str, unit: str = "", stream=None, width: int = 30):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.monotonic()
        self.drawn = 0

    def __call__(self, done: int, total: int, name: str) -> None:
        frac = done / total if total else 0.0
        fill = int(frac * self.width)
        bar = "=" * fill + (">" if fill < self.width else "") + " " * max(self.width - fill - 1, 0)
        line = f"{self.label:<8} [{bar}] {_fmt(done, self.unit)}/{_fmt(total, self.unit)}"
        elapsed = time.monotonic() - self.start
        if done and total and elapsed > 0.5:
            line += f" eta {max(elapsed / frac - elapsed, 0):.0f}s"
        if name:
            line += f" {name}"
        line = line[:120]
        self.stream.write("\r" + line.ljust(self.drawn))
        self.stream.flush()
        self.drawn = len(line)

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
            self.drawn = 0


def bar(enabled: bool, label: str, unit: str = "") -> Optional[Bar]:
    """A bar when ``enabled``, else None (no progress reported at all)."""
    return Bar(label, unit) if enabled else None
