r"""Coordinates, lattices, subsampling, image-to-graph transforms and neighbour search."""
from pyg_infdiff.graph.lattice import LatticeIndex, lattice, pixel_to_pos

__all__ = ["LatticeIndex", "lattice", "pixel_to_pos"]
