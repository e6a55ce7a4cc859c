"""Tests of bench/radius_density.py (issue 12, item 3): the radius of k expected nodes per ball,
the recommendation rule, and its ``--smoke`` configuration (the tiny model, 2 arms of a 3 s
budget as worker processes, 8 samples of 2 DDIM steps, 4 consistency seeds, SWD) end to end,
written into a temporary doc. No timings or scores are asserted."""
import math

import pytest
from _publish import read_section
from bench_scripts import load_script

radius_density = load_script("radius_density")


def test_radius_for():
    r = radius_density.radius_for(20, 196)
    assert math.isclose(196 * math.pi * r**2, 20)
    assert math.isclose(r, math.sqrt(20 / (196 * math.pi)))
    # preset 28's radius, 2.5 pixels of 28², holds about 5 of the 196 nodes of rate 4
    assert math.isclose(28 * radius_density.radius_for(5, 196), 2.5, rel_tol=0.02)
    assert radius_density.num_nodes(4.0) == 196 and radius_density.num_nodes(3.0) == 262


def test_arm_configs_differ_only_in_the_radius():
    args = radius_density.parse_args([])
    assert args.nodes_per_ball == [5, 10, 20, 40] and args.minutes == 8 and args.parallel == 2
    assert (args.num_samples, args.sample_steps, args.consistency_seeds) == (500, 50, 32)
    a, b = (radius_density.arm_config(args, k).to_dict() for k in (5, 40))
    assert math.isclose(b.pop("radius") / a.pop("radius"), math.sqrt(8))
    assert a == b


def _arm(k, quality, changes):
    return {"metrics": {"fid": quality}, "consistency": {"class_changes": changes}}


def test_recommend():
    recommend = radius_density.recommend
    assert recommend({}) is None
    # k 5 is too poor, k 10 changes class too often: k 20 (within 10% and within 1 change)
    arms = {5: _arm(5, 30.0, 0), 10: _arm(10, 21.0, 3), 20: _arm(20, 21.5, 1),
            40: _arm(40, 20.0, 0)}
    assert recommend(arms) == 20
    # no arm of good quality is consistent enough: the smallest of good quality
    arms = {5: _arm(5, 30.0, 0), 10: _arm(10, 20.0, 4), 20: _arm(20, 21.0, 5)}
    assert recommend(arms) == 10


@pytest.mark.usefixtures("fashion_mnist")
def test_smoke(tmp_path):
    out, doc = tmp_path / "arms", tmp_path / "benchmarks.md"
    doc.write_text("<!-- bench:radius_density -->\n<!-- /bench:radius_density -->\n")
    result = radius_density.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc)])
    assert sorted(result["arms"]) == [5, 20]
    for k, r in result["arms"].items():
        assert r["steps"] > 0 and r["median_step_seconds"] > 0 and r["nodes_per_ball"] > 1
        assert math.isfinite(r["metrics"]["swd"])
        assert set(r["consistency"]["psnr"]) == {"2", "4"}
        assert (out / f"arm_k{k:g}.json").exists()
    body = read_section("radius_density", doc)
    assert body.startswith(radius_density.TITLE)
    assert "| k (expected nodes / ball) | radius (28² px) |" in body
    assert "| 5 | 2.52 |" in body and "| 20 | 5.05 |" in body
    assert "- **Rule** (fixed before the run): the smallest k whose SWD" in body
    assert "**Chosen: k = " in body and "--smoke" in body
    # a rerun reads the cached arms back
    again = radius_density.main(["--smoke", "--out", str(out)])
    assert again["arms"] == result["arms"]
