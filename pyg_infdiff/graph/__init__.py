r"""Coordinates, lattices, subsampling, image-to-graph transforms and neighbour search."""
from pyg_infdiff.graph.lattice import LatticeIndex, check_nodes, lattice, pixel_to_pos
from pyg_infdiff.graph.search import context_graph, knn, max_neighbors_bound, radius, radius_graph
from pyg_infdiff.graph.subsample import halton, morton_order, subsample, subsample_size
from pyg_infdiff.graph.transforms import ImageToGraph

__all__ = [
    "ImageToGraph",
    "LatticeIndex",
    "check_nodes",
    "context_graph",
    "halton",
    "knn",
    "lattice",
    "max_neighbors_bound",
    "morton_order",
    "pixel_to_pos",
    "radius",
    "radius_graph",
    "subsample",
    "subsample_size",
]
