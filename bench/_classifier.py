r"""The small Fashion-MNIST classifier of the consistency benchmarks (``bench/consistency.py``,
``bench/radius_density.py``): whether a seed keeps its class across resolutions.

A :class:`SmallCNN` trained on the Fashion-MNIST training set mollified with a checkpoint's own
mollifier (what the model samples), cached in a folder by mollifier width
(:func:`fit_classifier`); :func:`predict` gives the argmax class of any batch of images, read
as 28² grey images (:func:`classifier_input`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_infdiff.data import FashionMNIST
from pyg_infdiff.training import save_checkpoint  # atomic: parallel runs share the cache

CLASSIFIER_SIDE = 28


class SmallCNN(nn.Module):
    r"""Two 3×3 convolutions (16 and 32 channels, each followed by ReLU and 2×2 max pooling) and
    two linear layers: a Fashion-MNIST classifier of 28² grey images in :math:`[-1, 1]`."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
                                  nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def classifier_input(images: Tensor) -> Tensor:
    r"""Images :math:`(B, C, H, W)` as the classifier reads them: grey (the mean over
    channels) and :math:`28^2` (bilinear, antialiased, when they are of another size)."""
    x = images.float().mean(1, keepdim=True)
    if x.shape[-2:] != (CLASSIFIER_SIDE, CLASSIFIER_SIDE):
        x = F.interpolate(x, size=(CLASSIFIER_SIDE, CLASSIFIER_SIDE), mode="bilinear",
                          align_corners=False, antialias=True)
    return x


def _mollified_split(train: bool, mollifier, num: int | None) -> tuple[Tensor, Tensor]:
    data = FashionMNIST(train=train)
    images = data.images if num is None else data.images[:num]
    labels = data.labels if num is None else data.labels[:num]
    x = images.float().div(127.5).sub(1.0).unsqueeze(1)
    return torch.cat([mollifier.apply(c, 2) for c in x.split(4096)]), labels


def fit_classifier(out: Path, mollifier, *, smoke: bool, seed: int = 0) -> dict:
    r"""The :class:`SmallCNN` trained on the mollified Fashion-MNIST training set (2 epochs;
    2,000 images and 1 epoch with :obj:`smoke`), cached in :obj:`out` by mollifier width and
    size; returns ``{"model", "accuracy", "train", "epochs", "seconds", "path", "cached"}``."""
    sigma = float(getattr(mollifier, "sigma", 0.0))
    num_train, num_test, epochs = (2000, 1000, 1) if smoke else (None, None, 2)
    tag = f"classifier_sigma{sigma:.6g}_{'smoke' if smoke else 'full'}.pt"
    path = Path(out) / tag
    model = SmallCNN()
    if path.exists():
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        info = {k: state[k] for k in ("accuracy", "train", "epochs", "seconds")}
        return {"model": model.eval(), **info, "path": path, "cached": True}
    start = time.perf_counter()
    x, y = _mollified_split(True, mollifier, num_train)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * math.ceil(x.size(0) / 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(x.size(0), generator=gen).split(128):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    xt, yt = _mollified_split(False, mollifier, num_test)
    accuracy = float((predict(model, xt) == yt).float().mean())
    seconds = time.perf_counter() - start
    save_checkpoint({"model": model.state_dict(), "accuracy": accuracy, "train": x.size(0),
                     "epochs": epochs, "seconds": seconds}, path)
    print(f"classifier: {x.size(0)} images, {epochs} epochs, {seconds:.0f} s, test accuracy "
          f"{accuracy:.1%} -> {path}", flush=True)
    return {"model": model, "accuracy": accuracy, "train": x.size(0), "epochs": epochs,
            "seconds": seconds, "path": path, "cached": False}


@torch.no_grad()
def predict(model: nn.Module, images: Tensor) -> Tensor:
    r"""The argmax class of each image (:func:`classifier_input` first)."""
    x = classifier_input(images)
    return torch.cat([model(c).argmax(1) for c in x.split(512)])
