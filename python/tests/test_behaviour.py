"""What a Python user expects of a long call: the GIL released, Ctrl-C
stopping it with nothing half-written, progress on stderr, panics as
exceptions."""

import os
import signal
import threading
import time

import pytest

import resid
from resid import _resid


def test_gil_is_released_while_working(big_pair, tmp_path):
    done = threading.Event()
    err = []

    def work():
        try:
            resid.pack(*big_pair, tmp_path / "x.resid", lossless=True, progress=False)
        except BaseException as e:  # noqa: BLE001
            err.append(e)
        finally:
            done.set()

    t = threading.Thread(target=work)
    t0 = time.monotonic()
    t.start()
    spins = 0
    while not done.is_set():
        spins += 1
    t.join()
    assert not err, err
    elapsed = time.monotonic() - t0
    # Holding the GIL for the whole call would leave this loop a handful of
    # turns; released, it turns millions of times a second.
    assert elapsed > 0.2, f"pack took {elapsed:.3f} s: too short to tell"
    assert spins > 10_000 * elapsed, (spins, elapsed)


def test_sigint_stops_pack_and_leaves_nothing(big_pair, tmp_path):
    out = tmp_path / "x.resid"
    calls = []

    def progress(done, total, name):
        calls.append(done)
        signal.raise_signal(signal.SIGINT)  # Python's handler: KeyboardInterrupt here

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _resid.pack(*big_pair, out, "lossless", progress=progress)
    total = sum(p.stat().st_size for p in big_pair[1].iterdir())
    assert len(calls) == 1 and calls[0] < total
    assert list(tmp_path.iterdir()) == [], "a half-written output was left"
    # Still usable afterwards.
    resid.pack(*big_pair, out, lossless=True, progress=False)
    assert out.exists()
    assert time.monotonic() - t0 < 120


def test_ctrl_c_from_outside_interrupts_analyze(big_pair):
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            resid.analyze(*big_pair, progress=False)
    finally:
        timer.cancel()
    interrupted_after = time.monotonic() - t0
    t1 = time.monotonic()
    resid.analyze(*big_pair, progress=False)
    full = time.monotonic() - t1
    assert interrupted_after < full, (interrupted_after, full)


def test_progress_goes_to_stderr(pair, tmp_path, capsys):
    resid.pack(*pair, tmp_path / "a.resid", lossless=True)
    err = capsys.readouterr().err
    assert "pack" in err and "\r" in err
    resid.pack(*pair, tmp_path / "b.resid", lossless=True, progress=False)
    assert capsys.readouterr().err == ""


def test_a_panic_becomes_an_exception():
    with pytest.raises(resid.InternalError, match="a test panic"):
        _resid._panic_for_test("a test panic")
    # And the module still works.
    assert resid.__version__
