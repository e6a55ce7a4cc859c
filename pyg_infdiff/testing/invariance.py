r"""Checkers for the two kinds of invariance an operator on point-cloud graphs must have.

* **Exact invariance** (:func:`assert_permutation_invariant`): the numbering of the nodes, copies
  of a graph in the batch and other graphs in the batch change nothing.
* **Discretisation invariance** (:func:`assert_discretization_invariant`): the outputs for two
  discretisations of one smooth function agree, and agree better as the resolution grows.

Modelled on :func:`e3nn.util.test.assert_equivariant`: build the inputs, run, compare, return the
measured errors, and fail with a message that states the numbers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from pyg_infdiff.graph.lattice import lattice, pixel_to_pos
from pyg_infdiff.graph.search import radius as radius_search
from pyg_infdiff.graph.subsample import SubsampleMethod, subsample

logger = logging.getLogger(__name__)

#: The function under test, ``module_fn(x, pos, batch)`` (or with ``query_points``), a model or
#: layer on one batch of graphs, such as :func:`operator_fn` builds.
ModuleFn = Callable[..., Tensor]


@dataclass
class DiscretizationReport:
    r"""What :func:`discretization_error` measured.

    Attributes:
        shapes (list[tuple[int, ...]]): The lattice of each discretisation, coarse to fine.
        num_points (list[int]): The number of nodes of each discretisation.
        errors (list[float]): Relative error between the outputs of consecutive
            discretisations, :math:`\|y_{k+1} - y_k\| / \|y_{k+1}\|` (Frobenius norms).
        outputs (list[torch.Tensor]): The outputs, detached, in float64 on the CPU.
    """

    shapes: list[tuple[int, ...]]
    num_points: list[int]
    errors: list[float]
    outputs: list[Tensor] = field(repr=False)

    @property
    def zero_outputs(self) -> list[int]:
        r"""The indices of the discretisations whose output is numerically all zero (no
        entry larger in magnitude than the smallest normal float32, :math:`1.2 \cdot
        10^{-38}`): relative errors that involve them compare nothing."""
        tiny = torch.finfo(torch.float32).tiny
        return [
            k for k, out in enumerate(self.outputs)
            if out.numel() == 0 or float(out.abs().max()) <= tiny
        ]

    def __str__(self) -> str:
        lines = []
        for k, err in enumerate(self.errors):
            lines.append(
                f"{self.shapes[k]} ({self.num_points[k]} points) -> {self.shapes[k + 1]} "
                f"({self.num_points[k + 1]} points): relative error {err:.3e}"
            )
        return "\n".join(lines)


def _as_shape(resolution: int | Sequence[int], ndim: int | None) -> tuple[int, ...]:
    if isinstance(resolution, int):
        if ndim is None:
            raise ValueError(
                f"Integer resolution {resolution} needs 'ndim' (or 'query_points' to infer it)"
            )
        return (resolution,) * ndim
    shape = tuple(int(n) for n in resolution)
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"Resolution {shape} does not have ndim={ndim} axes")
    return shape


def _relative_error(coarse: Tensor, fine: Tensor) -> float:
    scale = float(fine.norm())
    diff = float((fine - coarse).norm())
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def discretization_error(
    module_fn: ModuleFn,
    function: Callable[[Tensor], Tensor],
    *,
    resolutions: Sequence[int | Sequence[int]],
    query_points: Tensor | None = None,
    ndim: int | None = None,
    rate: float | None = None,
    method: SubsampleMethod = "uniform",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> DiscretizationReport:
    r"""Runs :obj:`module_fn` on several discretisations of :obj:`function` and measures how much
    the outputs differ; see :func:`assert_discretization_invariant` for the arguments."""
    if len(resolutions) < 2:
        raise ValueError(f"Need at least two resolutions to compare, got {list(resolutions)}")
    if query_points is not None:
        if query_points.dim() != 2:
            raise ValueError(f"'query_points' must be [M, d], got {tuple(query_points.shape)}")
        ndim = query_points.size(1) if ndim is None else ndim
        query_points = query_points.to(device=device, dtype=dtype)
    shapes = [_as_shape(res, ndim) for res in resolutions]
    outputs, num_points = [], []
    for shape in shapes:
        if rate is None:
            pos = lattice(shape, dtype=dtype)
        else:
            pixel = subsample(shape, rate=rate, method=method, generator=generator)
            pos = pixel_to_pos(pixel, shape, dtype=dtype)
        x = function(pos.double()).to(dtype)
        if x.dim() != 2 or x.size(0) != pos.size(0):
            raise ValueError(f"'function' must map [N, d] to [N, C], got {tuple(x.shape)}")
        pos, x = pos.to(device), x.to(device)
        batch = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        with torch.no_grad():
            if query_points is None:
                out = module_fn(x, pos, batch)
            else:
                out = module_fn(x, pos, batch, query_points)
        outputs.append(out.detach().to("cpu", torch.float64))
        num_points.append(pos.size(0))
    for shape, out in zip(shapes[1:], outputs[1:], strict=True):
        if out.shape != outputs[0].shape:
            raise ValueError(
                f"The output shape changed with the discretisation ({tuple(outputs[0].shape)} "
                f"at {shapes[0]}, {tuple(out.shape)} at {shape}): return values at fixed query "
                f"points (pass 'query_points') or a per-graph summary"
            )
    errors = [_relative_error(a, b) for a, b in zip(outputs[:-1], outputs[1:], strict=True)]
    return DiscretizationReport(shapes, num_points, errors, outputs)


def assert_discretization_invariant(
    module_fn: ModuleFn,
    function: Callable[[Tensor], Tensor],
    *,
    resolutions: Sequence[int | Sequence[int]],
    query_points: Tensor | None = None,
    rtol: float = 2e-2,
    require_convergence: bool = False,
    convergence_floor: float = 1e-5,
    allow_zero: bool = False,
    ndim: int | None = None,
    rate: float | None = None,
    method: SubsampleMethod = "uniform",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> DiscretizationReport:
    r"""Asserts that :obj:`module_fn` gives the same answer for discretisations of one function
    at several resolutions, as an operator between function spaces should.

    For every resolution :math:`\mathbf{n}^{(k)}` the smooth :obj:`function` :math:`f` is
    sampled at the pixel centres of the lattice (or of a random subset of them, with
    :obj:`rate`), giving one graph ``x = f(pos)``, ``batch = 0``. Then
    ``module_fn(x, pos, batch)``, or ``module_fn(x, pos, batch, query_points)`` when
    :obj:`query_points` is given, must return outputs :math:`y_k` of one shape at every
    resolution (values at the query points, or a per-graph summary). The check is

    .. math::
        \varepsilon_k = \frac{\|y_{k+1} - y_k\|}{\|y_{k+1}\|} \le \text{rtol}
        \quad\text{and, with require\_convergence,}\quad
        \varepsilon_{k+1} \le \max(\varepsilon_k, \text{convergence\_floor}).

    The module decides how to build its edges; :func:`operator_fn` wraps a bipartite layer.

    Outputs that are all zero would pass vacuously (zero differences), so the check also fails
    when the output at any resolution is numerically all zero
    (:attr:`DiscretizationReport.zero_outputs`), unless :obj:`allow_zero` says that zeros are
    expected. A model with a zero-initialised output layer (such as the head of
    :class:`~pyg_infdiff.models.MultiscaleOperatorUNet`) gives zeros until it is trained:
    re-draw such layers first, e.g. with :func:`~pyg_infdiff.testing.redraw_zero_layers`.

    Args:
        module_fn (callable): ``(x [N, C], pos [N, d], batch [N]) -> Tensor``, or with a fourth
            argument ``query_pos [M, d]`` when :obj:`query_points` is given.
        function (callable): ``pos [N, d] -> values [N, C]``, e.g.
            :func:`pyg_infdiff.testing.random_smooth_function`. Called with float64 coordinates.
        resolutions (Sequence): Lattice shapes, coarse to fine; an integer :math:`n` means
            :math:`(n,) * d`.
        query_points (torch.Tensor, optional): Fixed points :math:`(M, d)` handed to
            :obj:`module_fn`. (default: :obj:`None`)
        rtol (float, optional): The largest relative error allowed between consecutive
            resolutions. (default: :obj:`2e-2`)
        require_convergence (bool, optional): Also require the error not to grow with the
            resolution. (default: :obj:`False`)
        convergence_floor (float, optional): Errors below this (floating-point noise) always
            count as converged. (default: :obj:`1e-5`)
        allow_zero (bool, optional): Accept outputs that are all zero (the comparison is then
            vacuous); only for a caller that truly expects zeros. (default: :obj:`False`)
        ndim (int, optional): The dimension :math:`d`, needed for integer resolutions unless
            :obj:`query_points` gives it. (default: :obj:`None`)
        rate (float, optional): Subsample each lattice at this rate instead of taking all of
            its pixels. (default: :obj:`None`)
        method (str, optional): The subsampler, see :func:`pyg_infdiff.graph.subsample`.
            (default: :obj:`"uniform"`)
        generator (torch.Generator, optional): The source of randomness for subsampling.
            (default: :obj:`None`)
        dtype (torch.dtype, optional): The dtype of ``x``, ``pos`` and the query points.
            (default: :obj:`torch.float32`)
        device (torch.device, optional): Where to run :obj:`module_fn`. (default: :obj:`None`)

    Returns:
        :class:`DiscretizationReport`: the measured errors (and outputs).

    Raises:
        AssertionError: with the table of errors, if a check fails.
    """
    __tracebackhide__ = True
    report = discretization_error(
        module_fn,
        function,
        resolutions=resolutions,
        query_points=query_points,
        ndim=ndim,
        rate=rate,
        method=method,
        generator=generator,
        dtype=dtype,
        device=device,
    )
    logger.info("Discretisation errors of %r:\n%s", module_fn, report)
    zeros = [] if allow_zero else report.zero_outputs
    if zeros:
        where = ", ".join(str(report.shapes[k]) for k in zeros)
        raise AssertionError(
            f"Vacuous check: the output is all zero at {where} ({len(zeros)} of "
            f"{len(report.outputs)} discretisations), so the relative errors compare nothing. "
            f"A zero-initialised output layer (e.g. the head 'proj' of MultiscaleOperatorUNet, "
            f"or the last layer of residual branches) gives zeros: re-initialise it before "
            f"checking (pyg_infdiff.testing.redraw_zero_layers(model) re-draws every all-zero "
            f"Linear/Conv layer), or pass allow_zero=True if zeros are truly expected."
            f"\nAll errors:\n{report}"
        )
    problems = [
        f"relative error {err:.3e} > rtol={rtol:.3e} between {report.shapes[k]} and "
        f"{report.shapes[k + 1]}"
        for k, err in enumerate(report.errors)
        if not err <= rtol
    ]
    if require_convergence:
        for k in range(1, len(report.errors)):
            prev, err = report.errors[k - 1], report.errors[k]
            if err > max(prev, convergence_floor):
                problems.append(
                    f"error grew from {prev:.3e} to {err:.3e} at {report.shapes[k + 1]} "
                    f"(no convergence)"
                )
    if problems:
        raise AssertionError(
            "Not discretisation invariant:\n  " + "\n  ".join(problems) + f"\nAll errors:\n{report}"
        )
    return report


def operator_fn(
    conv: torch.nn.Module, radius: float, *, max_num_neighbors: int | None = None
) -> Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]:
    r"""Adapts a bipartite operator layer (such as
    :class:`pyg_infdiff.nn.KernelIntegralConv`) to :func:`assert_discretization_invariant`.

    The returned ``fn(x, pos, batch, query_pos)`` links the query points of every graph to the
    nodes closer than :obj:`radius` (:func:`pyg_infdiff.graph.radius`) and returns
    ``conv((x, x_query), (pos, query_pos), edge_index)`` with ``x_query`` zero, so that the output
    is the integral part of the operator read at the query points: shape
    :math:`(B \cdot M, C_{out})`, graph after graph.

    Args:
        conv (torch.nn.Module): A layer called as ``conv((x_src, x_dst), (pos_src, pos_dst),
            edge_index)``.
        radius (float): The neighbourhood radius in domain units.
        max_num_neighbors (int, optional): Passed to :func:`pyg_infdiff.graph.radius`.
            (default: :obj:`None`)
    """

    def fn(x: Tensor, pos: Tensor, batch: Tensor, query_pos: Tensor | None = None) -> Tensor:
        if query_pos is None:
            raise ValueError(
                "operator_fn reads the operator at query points: pass 'query_points' to "
                "assert_discretization_invariant"
            )
        num_graphs = int(batch.max()) + 1 if batch.numel() > 0 else 1
        pos_dst = query_pos.to(pos.device, pos.dtype).repeat(num_graphs, 1)
        batch_dst = torch.arange(num_graphs, device=pos.device)
        batch_dst = batch_dst.repeat_interleave(query_pos.size(0))
        edge_index = radius_search(
            pos, pos_dst, radius, batch, batch_dst, max_num_neighbors=max_num_neighbors
        )
        x_dst = x.new_zeros(pos_dst.size(0), x.size(1))
        return conv((x, x_dst), (pos, pos_dst), edge_index)

    return fn


def _within_graph_permutation(batch: Tensor, generator: torch.Generator | None) -> Tensor:
    perm = torch.randperm(batch.numel(), generator=generator).to(batch.device)
    return perm[torch.sort(batch[perm], stable=True).indices]


def _max_violation(out: Tensor, ref: Tensor, atol: float, rtol: float) -> tuple[float, bool]:
    if out.shape != ref.shape:
        raise ValueError(f"Output shape {tuple(out.shape)} differs from {tuple(ref.shape)}")
    diff = (out.double() - ref.double()).abs()
    ok = bool((diff <= atol + rtol * ref.double().abs()).all())
    return (float(diff.max()) if diff.numel() else 0.0), ok


def assert_permutation_invariant(
    module_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
    x: Tensor,
    pos: Tensor,
    batch: Tensor | None = None,
    *,
    level: Literal["node", "graph"] = "node",
    atol: float = 1e-6,
    rtol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    r"""Asserts the exact invariances of a module on batches of point-cloud graphs.

    With ``y = module_fn(x, pos, batch)`` (one row per node for ``level="node"``, one row per
    graph for ``level="graph"``), three transformed batches must give the same rows:

    * ``"permutation"``: the nodes of every graph in a random order (node outputs permute
      along; graph outputs stay).
    * ``"duplication"``: the whole batch twice, as graphs :math:`B, \dots, 2B - 1` again.
    * ``"other_graphs"``: other graphs in front (the batch reflected, :math:`1 - \mathbf{p}`,
      with features :math:`-2x`), which must not leak into the original graphs.

    Each check passes when :math:`|y' - y| \le \text{atol} + \text{rtol}\,|y|` elementwise.

    Args:
        module_fn (callable): ``(x [N, C], pos [N, d], batch [N]) -> Tensor``; it must read the
            number of graphs from :obj:`batch`.
        x (torch.Tensor): Node features :math:`(N, C)`.
        pos (torch.Tensor): Coordinates in :math:`[0, 1]^d`, :math:`(N, d)`.
        batch (torch.Tensor, optional): Sorted graph index of each node. (default: :obj:`None`)
        level (str, optional): :obj:`"node"` or :obj:`"graph"` outputs. (default: :obj:`"node"`)
        atol (float, optional): Absolute tolerance. (default: :obj:`1e-6`)
        rtol (float, optional): Relative tolerance. (default: :obj:`1e-5`)
        generator (torch.Generator, optional): For the permutation. (default: :obj:`None`)

    Returns:
        dict[str, float]: the largest absolute deviation of each check.

    Raises:
        AssertionError: with the numbers, if a check fails.
    """
    __tracebackhide__ = True
    if level not in ("node", "graph"):
        raise ValueError(f"'level' must be 'node' or 'graph', got level={level!r}")
    if batch is None:
        batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
    num_nodes = x.size(0)
    num_graphs = int(batch.max()) + 1 if num_nodes > 0 else 0
    rows = num_nodes if level == "node" else num_graphs
    with torch.no_grad():
        ref = module_fn(x, pos, batch)
        if ref.size(0) != rows:
            raise ValueError(
                f"level={level!r} expects {rows} output rows, got shape {tuple(ref.shape)}"
            )
        perm = _within_graph_permutation(batch, generator)
        out = module_fn(x[perm], pos[perm], batch[perm])
        checks = {"permutation": (out, ref[perm] if level == "node" else ref)}

        batch2 = torch.cat([batch, batch + num_graphs])
        out = module_fn(torch.cat([x, x]), torch.cat([pos, pos]), batch2)
        checks["duplication"] = (out, torch.cat([ref, ref]))

        out = module_fn(torch.cat([-2 * x, x]), torch.cat([1 - pos, pos]), batch2)
        checks["other_graphs"] = (out[rows:], ref)

    errors, problems = {}, []
    for name, (out, expected) in checks.items():
        err, ok = _max_violation(out, expected, atol, rtol)
        errors[name] = err
        if not ok:
            problems.append(f"{name}: max abs deviation {err:.3e} (atol={atol:g}, rtol={rtol:g})")
    logger.info("Exact-invariance errors of %r: %s", module_fn, errors)
    if problems:
        raise AssertionError("Not invariant:\n  " + "\n  ".join(problems))
    return errors
