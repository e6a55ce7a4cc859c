r"""examples/celebahq_train.py: "train at resolution R with rate s" on the built-in shapes (the
cached sparse-node path): argument defaults and a short run."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_celebahq_train_resolution_and_rate_defaults():
    module = _load("celebahq_train")
    a = module.parse_args(["--dataset", "shapes", "--resolution", "128", "--subsample", "16"])
    # preset 128's balls would hold 1.8 nodes at rate 16: the nearest preset with >= 4 is 64
    assert (a.preset, a.subsample, a.sample_resolutions) == (64, 16.0, [32, 128])
    assert a.sigma == pytest.approx(0.5 / 128)  # half a pixel of the data, not of the nodes
    a = module.parse_args(["--dataset", "shapes", "--resolution", "128", "--subsample", "16",
                           "--preset", "32"])
    assert (a.preset, a.batch_size, a.parametrization) == (32, 32, "x0")
    assert (a.cache_items, a.cache_dtype) == (2048, "float16")
    a = module.parse_args(["--dataset", "shapes"])  # unchanged: 32, rate 4, grids 32 and 64
    assert (a.preset, a.subsample, a.sample_resolutions) == (32, 4, [32, 64])
    with pytest.raises(SystemExit):
        module.parse_args(["--dataset", "shapes", "--cache-items", "-1"])


def test_celebahq_train_on_sparse_nodes_of_128_renders(tmp_path):
    module = _load("celebahq_train")
    module.main(["--dataset", "shapes", "--resolution", "128", "--subsample", "16",
                 "--preset", "32", "--steps", "2", "--batch-size", "2", "--cache-items", "4",
                 "--sample-every", "0", "--num-samples", "1", "--sample-steps", "1",
                 "--sample-resolutions", "32", "--out", str(tmp_path), "--device", "cpu",
                 "--lr-schedule", "cosine"])
    state = torch.load(tmp_path / "checkpoints" / "ckpt_00000002.pt", weights_only=True)
    assert state["trainer_config"]["lr_schedule"] == "cosine"
    info = state["model_config"]
    assert (info["data"]["resolution"], info["data"]["subsample"]) == (128, 16.0)
    assert info["diffusion"]["sigma"] == pytest.approx(0.5 / 128)
