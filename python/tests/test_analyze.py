"""resid.analyze returns exactly the record `resid analyze --json` writes."""

import json

import resid
from conftest import run_cli


def test_analyze_is_the_cli_json(pair, tmp_path):
    base, trained = pair
    r = resid.analyze(str(base), str(trained), progress=False)
    out = tmp_path / "cli.json"
    run_cli("analyze", "--base", base, "--trained", trained, "--json", out, "--quiet")
    assert r == json.loads(out.read_text())
    # The per-tensor table: one row per paired tensor, named.
    names = [t["name"] for t in r["tensors"]]
    assert len(names) == len(set(names)) > 0
    assert set(r["verdict"]) and "interlayer" in r


def test_analyze_threads_do_not_change_the_result(pair):
    one = resid.analyze(*pair, threads=1, progress=False)
    two = resid.analyze(*pair, threads=2, progress=False)
    assert one == two


def test_seed_reaches_the_nulls(pair):
    a = resid.analyze(*pair, seed=1, progress=False)
    b = resid.analyze(*pair, seed=2, progress=False)
    assert a["seed"] == 1 and b["seed"] == 2
    assert a != b


def test_subspace_mode_is_the_cli_json(pair, tmp_path):
    base, trained = pair
    r = resid.analyze(None, str(trained), subspace_of=str(base), k=4, progress=False)
    out = tmp_path / "cli.json"
    run_cli(
        "analyze", "--trained", trained, "--subspace-of", base, "--k", "4",
        "--json", out, "--quiet",
    )
    assert r == json.loads(out.read_text())
    assert r["subspace"] is not None


def test_paths_may_be_pathlike(pair):
    assert resid.analyze(*pair, progress=False) == resid.analyze(
        str(pair[0]), str(pair[1]), progress=False
    )


def test_several_trained_is_the_cli_json(pair, tmp_path):
    base, trained = pair
    r = resid.analyze(str(base), [str(trained), str(trained)], progress=False)
    out = tmp_path / "cli.json"
    run_cli(
        "analyze", "--base", base, "--trained", trained, "--trained", trained,
        "--json", out, "--quiet",
    )
    assert r == json.loads(out.read_text())
    assert len(r["residuals"]) == 2 and r["residuals"][0] == resid.analyze(*pair, progress=False)
    # A residual against itself: cosine 1, every sign agrees.
    whole = r["pairs"][0]["all"]
    assert abs(whole["cosine"] - 1.0) < 1e-9
    assert whole["sign_agreement"] == 1.0
    # A one-element list is the single-trained call.
    assert resid.analyze(str(base), [str(trained)], progress=False) == r["residuals"][0]
