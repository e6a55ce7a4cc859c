r"""The Gaussian mollifier (apply, undo, evaluate anywhere) and mollified noise fields that are
functions of the coordinates, all in the cosine basis with Neumann boundary."""
from pyg_infdiff.noise.cosine import (
    cosine_basis,
    dct,
    evaluate_series,
    evaluate_series_on_lattice,
    idct,
    lattice_matrix,
)
from pyg_infdiff.noise.field import MollifiedNoise, NoiseField
from pyg_infdiff.noise.mollifier import GaussianMollifier

__all__ = [
    "GaussianMollifier",
    "MollifiedNoise",
    "NoiseField",
    "cosine_basis",
    "dct",
    "evaluate_series",
    "evaluate_series_on_lattice",
    "idct",
    "lattice_matrix",
]
