"""Tests of bench/rate_quality.py (issue 14 #2): the defaults, the step of the equal-step models,
the goal line, and (slow: worker processes) ``--smoke`` end to end into a temporary doc (both
models of each rate, the unused checkpoints pruned, a rerun reusing everything). No scores are
asserted."""
import pytest
from _publish import read_section
from bench_scripts import load_script

rate_quality = load_script("rate_quality")


def test_defaults_and_bad_arguments():
    args = rate_quality.parse_args([])
    assert args.rates == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert (args.minutes, args.sample_steps, args.num_samples, args.num_real) == (10.0, 50,
                                                                                 1000, 2000)
    assert (args.jobs, args.threads) == (2, 1)
    assert rate_quality.parse_args(["--rates", "8,1,2"]).rates == [1.0, 2.0, 8.0]
    for bad in (["--rates", "0.5,1"], ["--minutes", "0"], ["--sample-steps", "0"],
                ["--num-samples", "0"], ["--jobs", "0"]):
        with pytest.raises(SystemExit):
            rate_quality.parse_args(bad)
    # every rate keeps all its checkpoints until the scores are in
    assert rate_quality.recipe(args).keep_last is None


def test_shapes_defaults():
    args = rate_quality.parse_args(["--dataset", "shapes"])
    assert args.rates == [1.0, 2.0, 4.0, 8.0, 16.0] and args.resolution == 64
    assert (args.minutes, args.num_samples, args.num_real) == (8.0, 128, 128)
    assert args.out.name == "rate_quality_shapes"
    # the main job's model and recipe
    assert rate_quality.model_config(args).in_channels == 3
    assert rate_quality.model_config(args).grid_shape == (16, 16)
    recipe = rate_quality.recipe(args)
    assert (recipe.lr, recipe.batch_size, recipe.snr_gamma, recipe.parametrization) == (
        1e-3, 16, 5.0, "x0")
    assert recipe.keep_last is None
    # the full lattice takes the dense path; Fashion-MNIST keeps its radius graph
    assert not rate_quality.radius_edges(args, 1.0) and rate_quality.radius_edges(args, 2.0)
    assert rate_quality.radius_edges(rate_quality.parse_args([]), 1.0)
    fashion = rate_quality.parse_args([])
    assert fashion.out.name == "rate_quality" and fashion.resolution == 28
    assert rate_quality.recipe(fashion).snr_gamma is None


def test_equal_steps():
    runs = {1.0: {"steps": 2130}, 4.0: {"steps": 2710}, 16.0: {"steps": 3002}}
    assert rate_quality.equal_steps(runs, 250) == 2000
    assert rate_quality.equal_steps({1.0: {"steps": 500}}, 250) == 500
    with pytest.raises(ValueError, match="train longer"):
        rate_quality.equal_steps({1.0: {"steps": 240}, 4.0: {"steps": 900}}, 250)


def test_goal_line():
    args = rate_quality.parse_args([])

    def row(rate, fid):
        return {"rate": rate, "scores": {"steps": {"fid": fid}, "time": {"fid": fid - 1}}}

    line, = rate_quality.goal_lines(args, {"rows": [row(1.0, 100.0), row(4.0, 114.0)]})
    assert "114.0 vs 100.0 (1.14×)" in line and line.endswith("**met**")
    line, = rate_quality.goal_lines(args, {"rows": [row(1.0, 100.0), row(4.0, 116.0)]})
    assert line.endswith("**NOT met**")
    # without both rates, or with --smoke (SWD), there is no goal line
    assert rate_quality.goal_lines(args, {"rows": [row(1.0, 100.0), row(2.0, 90.0)]}) == []
    assert rate_quality.goal_lines(rate_quality.parse_args(["--smoke"]),
                                   {"rows": [row(1.0, 100.0), row(4.0, 90.0)]}) == []


def test_real_statistics_are_cached_before_the_workers_score(monkeypatch):
    calls = []
    monkeypatch.setattr(rate_quality, "inception_metrics",
                        lambda fakes, real, num, name, **kw: calls.append(("stats", fakes, name)))
    monkeypatch.setattr(rate_quality, "launch",
                        lambda args, phase, extra=None: calls.append((phase, extra)))
    monkeypatch.setattr(rate_quality, "renders", lambda num, side, channels, seed: None)
    args = rate_quality.parse_args(["--dataset", "shapes"])
    rate_quality.score_all(args, 250)
    assert calls == [("stats", {}, rate_quality.held_out_name()), ("score", ["--step", "250"])]
    calls.clear()
    rate_quality.score_all(rate_quality.parse_args(["--smoke"]), 5)  # SWD only: no statistics
    assert calls == [("score", ["--step", "5"])]


@pytest.mark.slow  # worker processes end to end: 30-65 s on 2 cores
def test_smoke(tmp_path, fashion_mnist):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = rate_quality.main(["--smoke", "--out", str(out), "--write", "--doc", str(doc),
                                "--figures", str(figures)])
    step = result["equal_steps"]
    assert [row["rate"] for row in result["rows"]] == [1.0, 4.0]
    for row in result["rows"]:
        assert row["steps"] >= step and row["peak_bytes"] > 0 and row["seconds_per_step"] > 0
        assert row["scores"]["steps"]["step"] == step
        assert row["scores"]["time"]["step"] == row["steps"]
        assert all(s["swd"] > 0 for s in row["scores"].values())
        # only the checkpoints of the two scored models are left
        kept = rate_quality.checkpoints(rate_quality.run_folder(
            rate_quality.parse_args(["--smoke", "--out", str(out)]), row["rate"]))
        assert set(kept) == {step, row["steps"]}
    nodes = {row["rate"]: row["ball"] for row in result["rows"]}
    assert nodes[1.0] == pytest.approx(4 * nodes[4.0])  # a quarter of the nodes per ball
    body = read_section("rate_quality", doc)
    assert "nodes per ball" in body and "--smoke" in body
    assert (figures / "bench_rate_quality.png").stat().st_size > 0
    assert (figures / "bench_rate_quality_samples.png").stat().st_size > 0
    # a rerun reuses every finished part
    again = rate_quality.main(["--smoke", "--out", str(out), "--doc", str(doc)])
    assert again["rows"] == result["rows"]


@pytest.mark.slow
def test_smoke_shapes(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = rate_quality.main(["--dataset", "shapes", "--smoke", "--out", str(out), "--write",
                                "--doc", str(doc), "--figures", str(figures)])
    assert [row["rate"] for row in result["rows"]] == [1.0, 4.0]
    assert all(s["swd"] > 0 for row in result["rows"] for s in row["scores"].values())
    body = read_section("rate_quality_shapes", doc)
    assert "shapes 64²" in body and "context=" in body
    samples, = figures.glob("bench_rate_quality_shapes_samples.*")
    assert 0 < samples.stat().st_size <= 200_000 and samples.name in body


def test_subsample_method_reaches_the_collator_and_has_its_own_section(monkeypatch, tmp_path):
    default = rate_quality.parse_args([])
    assert rate_quality.recipe(default).subsample_method == "uniform"
    args = rate_quality.parse_args(["--subsample-method", "stratified"])
    assert args.section == "rate_quality_stratified" and args.out.name == args.section
    assert rate_quality.parse_args(["--dataset", "shapes", "--subsample-method", "halton"]
                                   ).section == "rate_quality_shapes_halton"
    recipe = rate_quality.recipe(args)
    assert recipe.subsample_method == "stratified"
    # train_infdiff hands the recipe's method to the collator (stopped right there)
    import _infdiff

    seen = {}

    class Stop(Exception):
        pass

    def collator(*a, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(_infdiff, "GraphCollator", collator)
    with pytest.raises(Stop):
        _infdiff.train_infdiff(tmp_path, [], rate_quality.model_config(args), 28, 4.0,
                               0.01, recipe)
    assert seen["method"] == "stratified" and seen["rate"] == 4.0
    with pytest.raises(SystemExit):
        rate_quality.parse_args(["--subsample-method", "sobol"])
