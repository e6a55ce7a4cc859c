"""Tests of bench/context_until.py (issue 13): the arguments, and ``--smoke`` end to end into a
temporary doc (a tiny model, a plain lattice and two context readings). No scores are
asserted."""
import pytest
from _publish import read_section
from bench_scripts import load_script

context_until = load_script("context_until")


def test_arguments():
    args = context_until.parse_args(["--checkpoint", "runs/shapes_demo"])
    assert args.untils == [-1, 30, 60, 150, 300] and (args.side, args.num) == (128, 64)
    assert args.kid and args.etas == [0.0] and args.section == "context_until"
    assert context_until.detail_band(128) == (16, 65)  # bench/noise_width.py's band
    for bad in ([], ["--checkpoint", "x", "--num", "0"]):
        with pytest.raises(SystemExit):
            context_until.parse_args(bad)


def test_smoke(tmp_path):
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures"
    result = context_until.main(["--smoke", "--out", str(tmp_path / "out"), "--write", "--doc",
                                 str(doc), "--figures", str(figures)])
    assert list(result["scores"]) == [context_until.PLAIN, "context to the end",
                                      "context, lattice from t = 500"]
    for score in result["scores"].values():
        assert score["swd"] > 0 and score["detail"] >= 0 and score["cpu_seconds"] > 0
    body = read_section("context_until", doc)
    assert "context to the end" in body and "--smoke" in body
    assert (figures / "bench_context_until.png").stat().st_size > 0


def test_smoke_with_etas_into_its_own_section(tmp_path):
    doc, figures = tmp_path / "benchmarks.md", tmp_path / "figures"
    result = context_until.main(["--smoke", "--out", str(tmp_path / "out"), "--write", "--doc",
                                 str(doc), "--figures", str(figures), "--etas", "0,1",
                                 "--section", "context_eta"])
    assert list(result["scores"]) == [context_until.PLAIN] + [
        f"{reading}, η = {eta}" for reading in ("context to the end",
                                                "context, lattice from t = 500")
        for eta in (0, 1)]
    body = read_section("context_eta", doc)
    assert "deterministic or stochastic DDIM (η = 0, 1)" in body
    assert "context to the end, η = 1" in body
    assert (figures / "bench_context_eta.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        context_until.parse_args(["--checkpoint", "x", "--etas", "-1"])
