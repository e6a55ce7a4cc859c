r"""The arms of ``bench/beyond_training.py`` (issue 13): their recipe, kernel radius, noise
width, run folders and labels, from the benchmark's arguments. The benchmark trains, samples
and scores them; this module only says what each arm is."""
from __future__ import annotations

import argparse

from _infdiff import unet_config

#: The recipe of ``examples/shapes_demo.py`` (the README's main job), predicting :math:`T x_0`
#: as the CPU presets of ``examples/celebahq_train.py`` do; its Min-SNR loss weights come from
#: ``--snr-gamma``.
RECIPE = dict(batch_size=16, lr=1e-3, warmup=100, ema_decay=0.995, ema_start=100,
              parametrization="x0")
FLOOR = "held-out renders (floor)"


def recipe_of(args: argparse.Namespace) -> dict:
    r"""The :class:`Recipe` fields of every arm (smaller batches in the smoke run)."""
    recipe = dict(RECIPE, checkpoint_every=5 if args.smoke else 250,
                  snr_gamma=args.snr_gamma or None)
    if args.smoke:
        recipe.update(batch_size=4, warmup=5, ema_start=0)
    return recipe


def config_radius_px(args: argparse.Namespace) -> float:
    r"""The kernel radius of every arm in pixels of the base resolution."""
    if args.radius_px is not None:
        return args.radius_px
    return unet_config(args.preset).radius * args.base


def noise_pixels(args: argparse.Namespace, rate: float) -> float | None:
    r"""The noise's width in pixels of an arm's data (:obj:`None`: the data mollifier's, half a
    pixel): with ``--noise-at nodes``, half the spacing of the nodes of a rate."""
    if args.noise_at == "data" or rate == 1:
        return None
    return 0.5 * rate ** 0.5


def variant(args: argparse.Namespace) -> str:
    r"""The suffix of what ``--noise-at nodes`` changes (arm (iii)'s folder, the section and
    the figure): ``"_noise_nodes"``, or nothing."""
    return "_noise_nodes" if args.noise_at == "nodes" else ""


def arm_folder(args: argparse.Namespace, arm: str) -> str:
    r"""The run folder of an arm (arm (iii) with the noise at the node spacing has its own)."""
    return f"arm_{arm}" + (variant(args) if arm == "iii" else "")


def arm_names(base: int, high: int, rate: float) -> dict[str, str]:
    r"""The labels of the model arms."""
    return {"i": f"(i) {base}² lattice model", "iii": f"(iii) {high}² renders, {rate:g}× "
            "subsampled", "iv": f"(iv) {high}² renders, all pixels"}


def bicubic_name(base: int, side: int) -> str:
    r"""The label of arm (ii) at one resolution."""
    return f"(ii) bicubic ×{side // base} of (i)'s {base}² samples"
