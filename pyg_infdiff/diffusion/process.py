r"""The mollified forward process of ∞-Diff on graph nodes, its parametrisations and its
training loss."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from pyg_infdiff._validation import validation_enabled
from pyg_infdiff.graph.lattice import LatticeIndex
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise

from .denoiser import Denoiser, call_denoiser
from .schedules import NoiseSchedule, cosine_schedule
from .timesteps import TimestepSampler, UniformTimestepSampler

Parametrization = Literal["mollified_eps", "eps", "x0", "v"]
r"""What the model predicts at the nodes. ``"eps"`` is an alias of ``"mollified_eps"``
(see :class:`MollifiedDiffusion`)."""

_ALIASES = {"eps": "mollified_eps"}


def canonical_parametrization(parametrization: str) -> str:
    r"""Validates a :obj:`Parametrization` and resolves the alias ``"eps"`` to
    ``"mollified_eps"``."""
    if parametrization not in get_args(Parametrization):
        raise ValueError(
            f"Unknown parametrization {parametrization!r}, expected one of "
            f"{get_args(Parametrization)}"
        )
    return _ALIASES.get(parametrization, parametrization)


def predict_x0(output: Tensor, x_t: Tensor, a: Tensor | float, s: Tensor | float,
               parametrization: Parametrization) -> Tensor:
    r"""Converts a model output to the predicted clean (mollified) data.

    .. math::
        \hat x_0 = \frac{x_t - s\,\hat\epsilon}{a}, \qquad \hat x_0, \qquad
        \hat x_0 = a\, x_t - s\, \hat v

    for the parametrisations ``"mollified_eps"``, ``"x0"`` and ``"v"``, with
    :math:`a = \sqrt{\bar\alpha_t}` and :math:`s = \sqrt{1 - \bar\alpha_t}` (per node, or
    scalars).
    """
    parametrization = canonical_parametrization(parametrization)
    if parametrization == "mollified_eps":
        return (x_t - s * output) / a
    if parametrization == "x0":
        return output
    return a * x_t - s * output


def predict_noise(output: Tensor, x_t: Tensor, a: Tensor | float, s: Tensor | float,
                  parametrization: Parametrization) -> Tensor:
    r"""Converts a model output to the predicted mollified noise :math:`\widehat{T\epsilon}`.

    .. math::
        \hat\epsilon, \qquad \hat\epsilon = \frac{x_t - a\,\hat x_0}{s}, \qquad
        \hat\epsilon = s\, x_t + a\, \hat v

    for ``"mollified_eps"``, ``"x0"`` and ``"v"`` (see :func:`predict_x0`)."""
    parametrization = canonical_parametrization(parametrization)
    if parametrization == "mollified_eps":
        return output
    if parametrization == "x0":
        return (x_t - a * output) / s
    return s * x_t + a * output


def training_target(x0: Tensor, noise: Tensor, a: Tensor | float, s: Tensor | float,
                    parametrization: Parametrization) -> Tensor:
    r"""The regression target of a parametrisation: :math:`T\epsilon`, :math:`T x_0`, or
    :math:`v = a\, T\epsilon - s\, T x_0` (Salimans & Ho, 2022)."""
    parametrization = canonical_parametrization(parametrization)
    if parametrization == "mollified_eps":
        return noise
    if parametrization == "x0":
        return x0
    return a * noise - s * x0


def min_snr_weight(snr: Tensor, gamma: float, parametrization: Parametrization) -> Tensor:
    r"""The Min-SNR-:math:`\gamma` loss weight of `"Efficient Diffusion Training via Min-SNR
    Weighting Strategy" <https://arxiv.org/abs/2303.09556>`_ (Hang et al., ICCV 2023): the
    weight that turns the squared error of a parametrisation into
    :math:`\min(\mathrm{SNR}_t, \gamma)\, \lVert \hat x_0 - T x_0 \rVert^2`.

    .. math::
        w_t = \min(\mathrm{SNR}_t, \gamma), \qquad
        w_t = \min\left(1, \frac{\gamma}{\mathrm{SNR}_t}\right), \qquad
        w_t = \frac{\min(\mathrm{SNR}_t, \gamma)}{\mathrm{SNR}_t + 1}

    for ``"x0"``, ``"mollified_eps"`` and ``"v"``, with
    :math:`\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)`: the errors of the three
    parametrisations are :math:`\lVert \hat x_0 - x_0 \rVert^2` times :math:`1`,
    :math:`\mathrm{SNR}_t` and :math:`\mathrm{SNR}_t + 1`. Uniform weights put almost all of
    an :math:`x_0`-model's loss on the noisiest steps, so it learns the near-clean steps, where
    the edges of a sample are decided, last; :math:`\epsilon`- and :math:`v`-losses put
    unbounded weight on them instead. Capping the SNR balances the two.

    Args:
        snr (torch.Tensor): :math:`\mathrm{SNR}_t`, any shape, positive.
        gamma (float): The cap :math:`\gamma > 0` (5 in Hang et al.).
        parametrization (str): What the model predicts (:obj:`Parametrization`).
    """
    parametrization = canonical_parametrization(parametrization)
    if not gamma > 0:
        raise ValueError(f"'gamma' must be positive, got {gamma}")
    capped = snr.clamp(max=gamma)
    if parametrization == "x0":
        return capped
    if parametrization == "mollified_eps":
        return (gamma / snr).clamp(max=1.0)
    return capped / (snr + 1)


@dataclass
class TrainingLosses:
    r"""The outcome of :meth:`MollifiedDiffusion.training_losses`.

    Args:
        loss (torch.Tensor): The scalar loss to minimise (the node mean, each graph's
            nodes times its :obj:`weights`).
        per_graph (torch.Tensor): The unweighted mean squared error of each graph, :math:`(B,)`.
        t (torch.Tensor): The time step of each graph, :math:`(B,)`.
        weights (torch.Tensor): The weight of each graph, :math:`(B,)`: its importance weight
            times its loss weight (:meth:`MollifiedDiffusion.loss_weight`).
    """

    loss: Tensor
    per_graph: Tensor
    t: Tensor
    weights: Tensor


class MollifiedDiffusion:
    r"""The mollified diffusion process of `"∞-Diff: Infinite Resolution Diffusion with
    Subsampled Mollified States" <https://arxiv.org/abs/2303.18242>`_ (ICLR 2024), acting on
    the nodes of a batch of graphs.

    .. math::
        x_t(\mathbf{u}) = \sqrt{\bar\alpha_t}\, (T x_0)(\mathbf{u})
        + \sqrt{1 - \bar\alpha_t}\, (T \epsilon)(\mathbf{u})

    at every node coordinate :math:`\mathbf{u}`, where :math:`T` is the Gaussian mollifier,
    :math:`T x_0` the mollified data (already read at the nodes by the data pipeline, as
    ``batch.x``) and :math:`T\epsilon` one draw of :obj:`noise` per graph, a smooth random field
    evaluated at the nodes. Each graph of a batch has its own :math:`t`; coefficients reach the
    nodes through the ``batch`` vector, ``coef[t][batch]``.

    Parametrisations: ``"mollified_eps"`` (default) regresses :math:`T\epsilon` at the nodes;
    ``"x0"`` regresses :math:`T x_0`; ``"v"`` regresses
    :math:`\sqrt{\bar\alpha_t}\, T\epsilon - \sqrt{1 - \bar\alpha_t}\, T x_0`. ``"eps"`` is
    accepted as an alias of ``"mollified_eps"``: the unmollified white noise :math:`\epsilon`
    has no values at points, so at the nodes the only noise a model can predict is
    :math:`T\epsilon`. Models whose output is meant as :math:`\epsilon` in a finite basis
    should mollify it themselves.

    Args:
        noise (MollifiedNoise): The mollified noise field :math:`T\epsilon`.
        schedule (NoiseSchedule, optional): The variance schedule; :obj:`None` means
            :func:`cosine_schedule` with 1000 steps. (default: :obj:`None`)
        parametrization (str, optional): What the model predicts, see above.
            (default: :obj:`"mollified_eps"`)
        mollifier (GaussianMollifier, optional): The data mollifier :math:`T`, used by the data
            pipeline and to deblur samples; :obj:`None` means a
            :class:`~pyg_infdiff.noise.GaussianMollifier` of the noise's width.
            (default: :obj:`None`)
        snr_gamma (float, optional): Weight the loss of each time step by Min-SNR-:math:`\gamma`
            (:func:`min_snr_weight`), rescaled to mean 1 over the steps (so the loss keeps the
            scale of the uniform one); training only, sampling is unchanged. :obj:`None`
            weighs every step alike, the paper's loss. (default: :obj:`None`)
    """

    def __init__(
        self,
        noise: MollifiedNoise,
        schedule: NoiseSchedule | None = None,
        parametrization: Parametrization = "mollified_eps",
        mollifier: GaussianMollifier | None = None,
        snr_gamma: float | None = None,
    ) -> None:
        if snr_gamma is not None and not snr_gamma > 0:
            raise ValueError(f"'snr_gamma' must be positive or None, got {snr_gamma}")
        self.noise = noise
        self.snr_gamma = None if snr_gamma is None else float(snr_gamma)
        self.schedule = cosine_schedule() if schedule is None else schedule
        self.parametrization = canonical_parametrization(parametrization)
        self.mollifier = GaussianMollifier(noise.sigma) if mollifier is None else mollifier
        self._cache: dict[torch.device, tuple[NoiseSchedule, Tensor, Tensor]] = {}

    @property
    def num_steps(self) -> int:
        r"""The number of training steps :math:`T`."""
        return self.schedule.num_steps

    def coefficients(self, t: Tensor, batch: Tensor | None, num_nodes: int,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        r"""Returns :math:`(\sqrt{\bar\alpha_t}, \sqrt{1 - \bar\alpha_t})` at every node,
        each of shape :math:`(N, 1)`, indexed ``coef[t][batch]``.

        Args:
            t (torch.Tensor): Time step per graph, long, :math:`(B,)`.
            batch (torch.Tensor, optional): Graph index per node, :math:`(N,)`; :obj:`None`
                means one graph.
            num_nodes (int): :math:`N`.
            dtype (torch.dtype, optional): The output dtype. (default: :obj:`torch.float32`)
        """
        if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64) or t.numel() == 0:
            raise ValueError(f"'t' must be a non-empty 1-D integer tensor, got {t.dtype} "
                             f"of shape {tuple(t.shape)}")
        if batch is None:
            if t.numel() != 1:
                raise ValueError(f"Without a 'batch' vector 't' must hold one step, got "
                                 f"{t.numel()}")
            batch = torch.zeros(num_nodes, dtype=torch.long, device=t.device)
        if batch.shape != (num_nodes,):
            raise ValueError(f"'batch' must have shape ({num_nodes},), got {tuple(batch.shape)}")
        if validation_enabled():  # the values, in one read back to the host
            self._check_values(t, batch)
        signal, noise = self._scales(t.device)
        a = signal[t.long()][batch]
        s = noise[t.long()][batch]
        return a.to(dtype).unsqueeze(-1), s.to(dtype).unsqueeze(-1)

    def _check_values(self, t: Tensor, batch: Tensor) -> None:
        values = [t.min(), t.max()]
        if batch.numel() > 0:
            values += [batch.min().to(t.device), batch.max().to(t.device)]
        t_low, t_high, *extent = torch.stack(values).tolist()
        if t_low < 0 or t_high >= self.num_steps:
            raise ValueError(f"Time steps must lie in [0, {self.num_steps - 1}], got "
                             f"[{t_low}, {t_high}]")
        if extent and (extent[0] < 0 or extent[1] >= t.numel()):
            raise ValueError(f"'batch' values must lie in [0, {t.numel() - 1}] (one per "
                             f"entry of 't'), got [{extent[0]}, {extent[1]}]")

    def _scales(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # (sqrt(abar), sqrt(1 - abar)) on a device, cached for the current schedule.
        cached = self._cache.get(device)
        if cached is None or cached[0] is not self.schedule:
            cached = (self.schedule, self.schedule.signal_scale.to(device),
                      self.schedule.noise_scale.to(device))
            self._cache[device] = cached
        return cached[1], cached[2]

    def loss_weight(self, t: Tensor) -> Tensor:
        r"""The loss weight of each time step :obj:`t`: :func:`min_snr_weight` of
        :obj:`snr_gamma` divided by its mean over all :math:`T` steps, or ones without
        :obj:`snr_gamma`.

        Args:
            t (torch.Tensor): Time steps, long, any shape.

        Shapes:
            - **output:** the shape of :obj:`t`, float32.
        """
        if self.snr_gamma is None:
            return torch.ones(t.shape, device=t.device)
        signal, noise = self._scales(t.device)
        weight = min_snr_weight((signal / noise).pow(2), self.snr_gamma, self.parametrization)
        return (weight / weight.mean())[t.long()].float()

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, batch: Tensor | None = None
                 ) -> Tensor:
        r"""Draws :math:`x_t \sim q(x_t \mid x_0)` at the nodes.

        .. math::
            x_t = \sqrt{\bar\alpha_{t_{b(n)}}}\, x_0 + \sqrt{1 - \bar\alpha_{t_{b(n)}}}\, \xi

        Args:
            x0 (torch.Tensor): Mollified data at the nodes, :math:`(N, C)`.
            t (torch.Tensor): Time step per graph, :math:`(B,)`.
            noise (torch.Tensor): The mollified noise field at the nodes, :math:`(N, C)`.
            batch (torch.Tensor, optional): Graph index per node, :math:`(N,)`.
                (default: :obj:`None`)
        """
        if noise.shape != x0.shape or x0.dim() != 2:
            raise ValueError(f"'x0' and 'noise' must both be [N, C], got {tuple(x0.shape)} and "
                             f"{tuple(noise.shape)}")
        a, s = self.coefficients(t, batch, x0.size(0), x0.dtype)
        return a * x0 + s * noise

    def predict_x0(self, output: Tensor, x_t: Tensor, t: Tensor, batch: Tensor | None = None
                   ) -> Tensor:
        r"""The clean mollified data predicted by a model output (see :func:`predict_x0`)."""
        a, s = self.coefficients(t, batch, x_t.size(0), x_t.dtype)
        return predict_x0(output, x_t, a, s, self.parametrization)

    def predict_noise(self, output: Tensor, x_t: Tensor, t: Tensor,
                      batch: Tensor | None = None) -> Tensor:
        r"""The mollified noise predicted by a model output (see :func:`predict_noise`)."""
        a, s = self.coefficients(t, batch, x_t.size(0), x_t.dtype)
        return predict_noise(output, x_t, a, s, self.parametrization)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor, batch: Tensor | None = None
               ) -> Tensor:
        r"""The regression target of the parametrisation (see :func:`training_target`)."""
        a, s = self.coefficients(t, batch, x0.size(0), x0.dtype)
        return training_target(x0, noise, a, s, self.parametrization)

    def draw_noise(self, num_graphs: int, channels: int, pos: Tensor,
                   batch: Tensor | None = None, lattice: LatticeIndex | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        r"""Draws one mollified noise field per graph and channel and reads it at the nodes
        (through the lattice fast path when :obj:`lattice` is given).

        The same generator state gives the same fields whatever the nodes, so noise drawn for
        two discretisations of the domain agrees where their nodes coincide.

        Shapes:
            - **output:** :math:`(N, C)`, dtype of :obj:`pos`.
        """
        field = self.noise.draw(num_graphs, channels, generator=generator, device=pos.device,
                                dtype=pos.dtype)
        values = field.at(lattice) if lattice is not None else field.evaluate(pos, batch)
        return values.to(pos.dtype)

    def training_noise(self, num_graphs: int, channels: int, pos: Tensor,
                       batch: Tensor | None = None, lattice: LatticeIndex | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        r"""Draws the noise of a training step at the nodes: on lattice pixels (a
        :obj:`lattice`) from :meth:`MollifiedNoise.sample_lattice
        <pyg_infdiff.noise.MollifiedNoise.sample_lattice>`, the fields' distribution on that
        lattice from fewer random numbers (about 3× faster at :math:`128^2` with half a pixel
        of mollifier; ``bench/edge_sum.py``), gathered at the nodes; elsewhere
        :meth:`draw_noise`.

        A training step needs the noise at its nodes only, in distribution; unlike
        :meth:`draw_noise` (which sampling uses), two lattices of different shapes do not read
        one function for the same generator state.

        Shapes:
            - **output:** :math:`(N, C)`, dtype of :obj:`pos`.
        """
        if lattice is None:
            return self.draw_noise(num_graphs, channels, pos, batch, None, generator)
        values = self.noise.sample_lattice(lattice.shape, num_graphs, channels, generator,
                                           device=pos.device, dtype=pos.dtype)
        return lattice.gather(values).to(pos.dtype)

    def training_losses(
        self,
        model: Denoiser,
        batch,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        timestep_sampler: TimestepSampler | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> TrainingLosses:
        r"""Computes the denoising loss at the nodes, with its per-graph parts.

        .. math::
            \mathcal{L} = \frac{1}{N C} \sum_{n, c} w_{b(n)}
            \left(f_\theta(x_t, t)_{n,c} - y_{n,c}\right)^2

        where :math:`y` is the target of the parametrisation and :math:`w` the weight of each
        graph's time step: its importance weight (1 for uniform sampling) times
        :meth:`loss_weight` (1 without :obj:`snr_gamma`). The model is called through
        :func:`call_denoiser`: ``model(x_t, pos, t, batch, edge_index=...)``, plus
        ``lattice=...`` when the nodes are lattice pixels and the model takes it.

        Random draws, in order: the time steps (unless :obj:`t` is given), then the noise
        (unless :obj:`noise` is given, by :meth:`training_noise`), both from
        :obj:`generator`. A loss-aware
        :obj:`timestep_sampler` is updated with the per-graph losses.

        Args:
            model (callable): The denoiser.
            batch (torch_geometric.data.Batch): Graphs with ``x`` (mollified data at the nodes,
                :math:`(N, C)`), ``pos`` and ``batch``; optionally ``edge_index``, and
                ``pixel`` with ``lattice_shape`` (then, if all graphs share one lattice shape,
                the model also gets a :class:`~pyg_infdiff.graph.LatticeIndex` and the noise
                uses the lattice path).
            t (torch.Tensor, optional): Time step per graph. (default: :obj:`None`)
            noise (torch.Tensor, optional): Mollified noise at the nodes. (default: :obj:`None`)
            generator (torch.Generator, optional): Source of randomness. (default: :obj:`None`)
            timestep_sampler (TimestepSampler, optional): Draws :obj:`t` and importance weights;
                :obj:`None` means uniform. (default: :obj:`None`)
            model_kwargs (Mapping, optional): More keyword arguments of the model, e.g.
                ``{"cond": z}`` with one row of :math:`z` per graph for a conditioned model;
                gradients flow into them (an encoder trained with the model). (default:
                :obj:`None`)
        """
        x0, pos, batch_vec, num_graphs, lattice = _graph_inputs(batch)
        if t is None:
            sampler = timestep_sampler
            if sampler is None:
                sampler = UniformTimestepSampler(self.num_steps)
            t, weights = sampler.sample(num_graphs, generator=generator, device=x0.device)
        elif timestep_sampler is not None:
            raise ValueError("Pass either 't' or 'timestep_sampler', not both")
        else:
            weights = torch.ones(t.numel(), device=x0.device)
        if t.numel() != num_graphs:
            raise ValueError(f"'t' must hold one step per graph ({num_graphs}), got {t.numel()}")
        if noise is None:
            noise = self.training_noise(num_graphs, x0.size(1), pos, batch_vec, lattice,
                                        generator)
        elif noise.shape != x0.shape:
            raise ValueError(f"'noise' must have the shape of 'x' {tuple(x0.shape)}, got "
                             f"{tuple(noise.shape)}")

        # The coefficients once (their checks read back to the host), for x_t and the target.
        a, s = self.coefficients(t, batch_vec, x0.size(0), x0.dtype)
        x_t = a * x0 + s * noise
        output = call_denoiser(model, x_t, pos, t, batch_vec, getattr(batch, "edge_index", None),
                               lattice, model_kwargs)
        if output.shape != x0.shape:
            raise ValueError(f"The model returned {tuple(output.shape)}, expected "
                             f"{tuple(x0.shape)}")
        target = training_target(x0, noise, a, s, self.parametrization)
        per_node = (output - target).pow(2).mean(dim=-1)
        per_graph = scatter(per_node, batch_vec, dim=0, dim_size=num_graphs, reduce="mean")
        weights = (weights * self.loss_weight(t)).to(per_node.dtype)
        loss = (weights[batch_vec] * per_node).mean()
        if timestep_sampler is not None:
            timestep_sampler.update(t, per_graph.detach())
        return TrainingLosses(loss, per_graph, t, weights)

    def training_loss(
        self,
        model: Denoiser,
        batch,
        t: Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        timestep_sampler: TimestepSampler | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> Tensor:
        r"""The scalar loss of :meth:`training_losses` (same arguments)."""
        return self.training_losses(model, batch, t, noise, generator=generator,
                                    timestep_sampler=timestep_sampler,
                                    model_kwargs=model_kwargs).loss

    def __repr__(self) -> str:
        gamma = "" if self.snr_gamma is None else f", snr_gamma={self.snr_gamma:g}"
        return (f"{self.__class__.__name__}(noise={self.noise!r}, schedule={self.schedule!r}, "
                f"parametrization={self.parametrization!r}{gamma})")


def _graph_inputs(batch) -> tuple[Tensor, Tensor, Tensor, int, LatticeIndex | None]:
    # (x, pos, batch vector, number of graphs, lattice index or None) of a Data / Batch.
    x0, pos = getattr(batch, "x", None), getattr(batch, "pos", None)
    if x0 is None or pos is None or x0.dim() != 2 or pos.dim() != 2 or x0.size(0) != pos.size(0):
        raise ValueError("The batch needs 'x' [N, C] and 'pos' [N, d] with equal N")
    batch_vec = getattr(batch, "batch", None)
    if batch_vec is None:
        batch_vec = torch.zeros(x0.size(0), dtype=torch.long, device=x0.device)
    num_graphs = getattr(batch, "num_graphs", None)
    num_graphs = int(num_graphs) if num_graphs else int(batch_vec.max()) + 1
    lattice = None
    shapes = getattr(batch, "lattice_shape", None)
    pixel = getattr(batch, "pixel", None)
    if pixel is not None and shapes is not None:
        shapes = shapes.view(-1, shapes.size(-1)).tolist()  # the one read back of a batch
        if all(shape == shapes[0] for shape in shapes):  # mixed resolutions: no common lattice
            lattice = LatticeIndex(tuple(shapes[0]), pixel, batch_vec, num_graphs)
            lattice.is_full()  # decided here, eagerly (free unless every pixel is a node), so
            # that a compiled model reads a known answer instead of breaking its graph
    return x0, pos, batch_vec, num_graphs, lattice
