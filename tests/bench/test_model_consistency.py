"""Smoke test of bench/model_consistency.py (issue 12): the ``--smoke`` configuration (preset 32 on
8², 24², 72² lattices and subsets of 32², one seed, two in the radius table, seconds) runs end to
end and writes its section into a temporary copy of the docs. No numbers are asserted beyond their
shape: the measurement itself is the benchmark's published table."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.append(str(BENCH))  # appended: bench/kernel_conv.py must not shadow the standard module

import model_consistency  # noqa: E402
from _publish import read_section  # noqa: E402


def test_model_consistency_smoke(tmp_path):
    doc = tmp_path / "benchmarks.md"
    result = model_consistency.main(["--smoke", "--write", "--doc", str(doc)])
    rows = result["rows"]
    assert [(r["variant"], r["pool"]) for r in rows] == [
        (v, p) for v in model_consistency.VARIANTS for p in model_consistency.POOLS]
    # two lattice steps and (per draw, mean of draws) for the one rate
    assert all(len(r["errors"]) == 4 and all(e >= 0 for e in r["errors"]) for r in rows)
    preset = model_consistency.preset_radius_px()
    assert [(r["radius_px"], r["pool"]) for r in result["radius_rows"]] == [
        (2.5, "tent"), (preset, "tent")]
    for row in result["radius_rows"]:  # two seeds: means, standard errors, worst seeds
        assert len(row["per_seed"]) == 2 and all(len(row[k]) == 2
                                                 for k in ("errors", "stderr", "worst"))
        assert all(w >= m for w, m in zip(row["worst"], row["errors"], strict=True))
    body = read_section("model_consistency", doc)
    assert "| model | 0.5 | `tent` |" in body and "| 8² vs 24² |" in body
    assert "Targets of issue 12 for the default pool (`tent`)" in body
    assert "mean over 2 seeds" in body and f"| {preset:.3g} (preset) | `tent` |" in body
    assert "| radius (train px) | pool | 8² vs 24² mean ± s.e. | 8² vs 24² worst |" in body
    assert "- Machine:" in body and "Command: `python bench/model_consistency.py --smoke" in body


def test_parse_args_defaults():
    args = model_consistency.parse_args([])
    assert args.pools == ["tent", "box", "idw"] and args.sigmas == [0.25, 0.5, 1.0]
    assert args.radii == [2.5, 3.0, 5.0]
    assert not args.write and not args.smoke
