r"""pyg_infdiff's layers inside your own PyTorch Geometric model, on irregular point clouds.

The task is operator learning: given a smooth random field f sampled at random points of the
unit square, predict its Laplacian Δf at the same points. The model mixes

* KernelIntegralConv: integral-kernel operators over radius neighbourhoods (local, in domain
  units, so the weights do not depend on how densely the points sample the square), and
* GridPool -> Conv2d -> GridUnpool: a global branch on a fixed 8x8 lattice,

and the data pipeline is plain PyG: Data objects with radius graphs from
pyg_infdiff.graph.radius_graph, batched by torch_geometric.loader.DataLoader. It trains for a
few hundred steps (under a minute on a CPU) and then tests on fresh fields sampled with 4x more
points than it was trained on.

    python examples/custom_pyg_model.py [--steps 300] [--threads 1]
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from pyg_infdiff.graph import radius_graph
from pyg_infdiff.nn import GridPool, GridUnpool, KernelIntegralConv

MAX_FREQ = 3  # fields are cosine series with frequencies 0..3 per axis
SCALE = math.pi**2 * 4  # Laplacians are divided by this to be O(1)


def random_field(num_points, radius, generator):
    r"""One graph: a random smooth field f (Neumann cosine series) at uniform random points,
    its Laplacian as the target, and radius edges."""
    k = torch.arange(MAX_FREQ + 1, dtype=torch.float32)
    decay = torch.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 8)
    coef = torch.randn(MAX_FREQ + 1, MAX_FREQ + 1, generator=generator) * decay
    pos = torch.rand(num_points, 2, generator=generator)
    cx, cy = torch.cos(math.pi * pos[:, :1] * k), torch.cos(math.pi * pos[:, 1:] * k)
    f = torch.einsum("nk,kl,nl->n", cx, coef, cy)
    lap = torch.einsum("nk,kl,nl->n", cx, -(math.pi**2) * (k[:, None] ** 2 + k[None, :] ** 2)
                       * coef, cy)
    return Data(x=f[:, None], pos=pos, y=lap[:, None] / SCALE,
                edge_index=radius_graph(pos, radius, loop=True))


class OperatorNet(nn.Module):
    r"""Lift -> kernel integral -> global grid branch -> kernel integral -> head, with residual
    connections."""

    def __init__(self, radius, hidden=32, grid=8):
        super().__init__()
        self.lift = nn.Linear(1 + 2, hidden)
        self.conv1 = KernelIntegralConv(hidden, hidden, radius)
        self.pool = GridPool((grid, grid))  # the tent window: one integral at any resolution
        self.grid_conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.unpool = GridUnpool()
        self.conv2 = KernelIntegralConv(hidden, hidden, radius)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, data):
        x, pos, edge_index, batch = data.x, data.pos, data.edge_index, data.batch
        h = self.lift(torch.cat([x, pos], dim=-1))
        h = h + F.gelu(self.conv1(h, pos, edge_index))
        grid = self.grid_conv(self.pool(h, pos, batch, num_graphs=data.num_graphs))
        h = h + self.unpool(F.gelu(grid), pos, batch)
        h = h + F.gelu(self.conv2(h, pos, edge_index))
        return self.head(h)


@torch.no_grad()
def relative_error(model, loader):
    r"""The relative L2 error ||pred - y|| / ||y|| over a whole loader."""
    num = den = 0.0
    for data in loader:
        num += float((model(data) - data.y).pow(2).sum())
        den += float(data.y.pow(2).sum())
    return math.sqrt(num / den)


def main(argv=None):
    p = argparse.ArgumentParser(description="Learn the Laplacian on irregular point clouds with "
                                "KernelIntegralConv and GridPool in a plain PyG model.")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps")
    p.add_argument("--points", type=int, default=256, help="points per training graph")
    p.add_argument("--radius", type=float, default=0.15, help="kernel radius (domain units)")
    p.add_argument("--batch-size", type=int, default=8, help="graphs per batch")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    # Training graphs with a varying number of points; test graphs at 1x and 4x the density.
    train = [random_field(int(args.points * (0.75 + 0.5 * i / 255)), args.radius, g)
             for i in range(256)]
    tests = {n: [random_field(n, args.radius, g) for _ in range(32)]
             for n in (args.points, 4 * args.points)}
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    test_loaders = {n: DataLoader(d, batch_size=args.batch_size) for n, d in tests.items()}

    model = OperatorNet(args.radius)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {len(train)} training "
          f"graphs of ~{args.points} points, radius {args.radius}")
    start, step = time.perf_counter(), 0
    while step < args.steps:
        for data in loader:
            loss = F.mse_loss(model(data), data.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 50 == 0 or step == args.steps:
                seconds = time.perf_counter() - start
                print(f"step {step:4d}  mse {loss.item():.4f}  ({seconds:.0f} s)")
            if step == args.steps:
                break

    model.eval()
    print("relative L2 error of the predicted Laplacian on fresh fields (predicting 0 gives 1.0):")
    for n, test_loader in test_loaders.items():
        print(f"  {n:5d} points per field: {relative_error(model, test_loader):.3f}")


if __name__ == "__main__":
    main()
