"""Smoke test of bench/page_churn.py: both tasks in fresh children, with and without
keep_freed_memory(), and the section it writes."""

import pytest
from _publish import read_section
from bench_scripts import load_script

page_churn = load_script("page_churn")


def test_page_churn_smoke(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("<!-- bench:page_churn -->\n<!-- /bench:page_churn -->\n")
    result = page_churn.main(["--smoke", "--write", "--doc", str(doc)])
    rows = result["rows"]
    assert [(r["task"], r["mode"]) for r in rows] == [
        ("sample", "default"), ("sample", "kept"), ("train", "default"), ("train", "kept")]
    assert all(r["user"] > 0 and r["sys"] >= 0 and r["faults"] > 0 for r in rows)
    body = read_section("page_churn", doc)
    assert "keep_freed_memory()" in body and "--smoke" in body
    assert "sample 2 at 16²" in body and "train 1 steps at 16², batch 2" in body


def test_cli(capsys):
    with pytest.raises(SystemExit):
        page_churn.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--smoke" in text and "--threads" in text and "no --device" in text
