"""``python -m resid ...``: runs the ``resid`` command installed with the
wheel (the CLI binary, built without the ML framework)."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig


def _binary() -> str:
    here = os.path.join(sysconfig.get_path("scripts"), "resid")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("resid")
    if found is None:
        sys.exit("resid: the resid command is not installed beside this Python")
    return found


def main() -> None:
    exe = _binary()
    os.execv(exe, [exe, *sys.argv[1:]])


if __name__ == "__main__":
    main()
