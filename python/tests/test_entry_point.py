"""The wheel puts the `resid` command on PATH: the CLI built without burn."""

import subprocess
import sys

import resid
from conftest import resid_cli, run_cli


def test_resid_command_is_installed_and_runs():
    p = run_cli("--version")
    assert p.stdout.strip() == f"resid {resid.__version__}"
    helptext = run_cli("--help").stdout
    for cmd in ("analyze", "pack", "unpack", "inspect", "synth"):
        assert cmd in helptext
    # Built without the ML framework: no training commands.
    assert "\n  train" not in helptext


def test_python_m_resid_runs_the_same_command():
    p = subprocess.run([sys.executable, "-m", "resid", "--version"],
                       capture_output=True, text=True, check=True)
    assert p.stdout == subprocess.run([resid_cli(), "--version"], capture_output=True,
                                      text=True).stdout
