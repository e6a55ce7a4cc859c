"""Tests of bench/training_horizon.py (issue 13, #3): its defaults, the choice of the main job's
checkpoint at each snapshot time, and (slow: worker processes) its ``--smoke`` configuration end to
end (the demo's own ``--smoke`` and a tiny dense model side by side, 8 samples of 2 steps, SWD),
written into a temporary doc. No scores are asserted."""
import json

import pytest
from _publish import read_section
from bench_scripts import load_script

pytest.importorskip("diffusers")
training_horizon = load_script("training_horizon")


def test_defaults_and_bad_arguments():
    args = training_horizon.parse_args([])
    assert (args.minutes, args.snapshots, args.threads) == (40.0, [5.0, 10.0, 20.0, 40.0], 1)
    assert (args.dense_lr, args.dense_batch, args.kid) == (5e-3, 32, True)
    assert args.score_threads >= 1
    assert training_horizon.parse_args(["--snapshots", "20,5"]).snapshots == [5.0, 20.0]
    for bad in (["--snapshots", "50"], ["--snapshots", "0,5"], ["--snapshots", "five"],
                ["--dense-lr", "0"], ["--checkpoint-every", "0"], ["--score-threads", "0"]):
        with pytest.raises(SystemExit):
            training_horizon.parse_args(bad)


def test_snapshots_take_the_last_checkpoint_saved_in_time(tmp_path):
    # 10 steps a minute, a checkpoint every 25 steps: at 6 minutes (60 steps) the one of
    # step 50; before the first checkpoint, the first one
    log = [{"event": "start", "step": 0}] + [
        {"event": "train", "step": s, "elapsed_s": 6.0 * s} for s in range(10, 101, 10)]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(e) for e in log))
    (tmp_path / "checkpoints").mkdir()
    for step in (25, 50, 75, 100):
        (tmp_path / "checkpoints" / f"ckpt_{step:08d}.pt").touch()
    taken = training_horizon.infdiff_snapshots(tmp_path, [1.0, 6.0, 10.0])
    assert [t["steps"] for t in taken] == [25, 50, 100]
    assert [t["seconds"] for t in taken] == [120.0, 300.0, 600.0]
    assert taken[1]["path"].endswith("ckpt_00000050.pt")


@pytest.mark.slow  # worker processes end to end: 30-65 s on 2 cores
def test_smoke(tmp_path):
    out, doc, figures = tmp_path / "out", tmp_path / "benchmarks.md", tmp_path / "figures"
    result = training_horizon.main(["--smoke", "--threads", "1", "--out", str(out), "--write",
                                    "--doc", str(doc), "--figures", str(figures)])
    for arm in ("infdiff", "dense"):
        taken = result["snapshots"][arm]
        assert [t["minutes"] for t in taken] == [0.02, 0.05]
        assert taken[0]["steps"] <= taken[1]["steps"]
        assert all(t["scores"]["swd"] > 0 and t["scores"]["detail"] >= 0 for t in taken)
    # the demo's --smoke trains 3 steps; which of them are saved by a snapshot's time depends
    # on the machine's load
    assert all(1 <= t["steps"] <= 3 for t in result["snapshots"]["infdiff"])
    body = read_section("training_horizon", doc)
    assert body.count("| ∞-Diff (the main job) |") == 2
    assert body.count("| dense DDPM (diffusers) |") == 2
    assert (figures / "bench_training_horizon.png").is_file()
