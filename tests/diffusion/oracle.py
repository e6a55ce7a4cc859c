r"""An exact denoiser for Gaussian-field data, used to test the process and the samplers.

The data are a Gaussian field diagonal in the cosine basis, like the process noise:
:math:`x_0 = \sum_k d_k \phi_k`, :math:`d_k \sim \mathcal{N}(0, \lambda_k)`, and
:math:`T\epsilon = \sum_k n_k \phi_k`, :math:`n_k \sim \mathcal{N}(0, \gamma_k)` (variances).
The posterior mean of each coefficient given :math:`y = a d + s n` is

.. math::
    \mathbb{E}[d_k \mid y_k] = \frac{a \lambda_k}{a^2 \lambda_k + s^2 \gamma_k}\, y_k .

The oracle recovers the coefficients of :math:`x_t` from its node values (exactly: a DCT on full
lattices with at least :math:`K` pixels per axis, least squares on other point sets with enough
nodes), applies the gains and evaluates the resulting *function* at the nodes. It is therefore a
function-space operator, the same at every resolution.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pyg_infdiff.diffusion import MollifiedDiffusion, training_target
from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.noise import (
    MollifiedNoise,
    cosine_basis,
    dct,
    evaluate_series,
    evaluate_series_on_lattice,
)


def design_matrix(pos: Tensor, num_freq: int) -> Tensor:
    r"""The tensor-product cosine basis at points, :math:`(N, K^d)`, float64."""
    out = torch.ones(pos.size(0), 1, dtype=torch.float64)
    for j in range(pos.size(1)):
        basis = cosine_basis(pos[:, j].double(), num_freq, torch.float64)
        out = (out.unsqueeze(-1) * basis.unsqueeze(1)).reshape(pos.size(0), -1)
    return out


def relative_spectrum(noise: MollifiedNoise, scale: float = 0.8, corner: float = 3.0,
                      power: float = 1.0) -> Tensor:
    r"""Coefficient variances of mollified rough data: the noise spectrum times a power law,
    :math:`\lambda_{\mathbf{k}} = c^2 \gamma_{\mathbf{k}} \prod_j (1 + (k_j / k_0)^2)^{-p}`,
    like :math:`T` applied to a rough (Matérn-like) field, as the data of ∞-Diff are."""
    k = torch.arange(noise.num_freq, dtype=torch.float64)
    w1 = (1 + (k / corner) ** 2) ** (-power)
    w = w1
    for _ in range(noise.ndim - 1):
        w = w.unsqueeze(-1) * w1
    return scale**2 * noise.amplitudes(dtype=torch.float64).square() * w


class GaussianFieldOracle:
    r"""The posterior-mean denoiser :math:`\mathbb{E}[x_0 \mid x_t]` for Gaussian-field data
    with coefficient variances :obj:`data_var`, returning the output of
    :obj:`diffusion.parametrization`.

    Args:
        diffusion (MollifiedDiffusion): The process.
        data_var (torch.Tensor): :math:`\lambda`, shape :math:`(K, \dots, K)` like
            ``diffusion.noise.amplitudes()``.
    """

    def __init__(self, diffusion: MollifiedDiffusion, data_var: Tensor) -> None:
        noise = diffusion.noise
        self.noise_var = noise.amplitudes(dtype=torch.float64).square()
        if data_var.shape != self.noise_var.shape:
            raise ValueError(f"'data_var' must have shape {tuple(self.noise_var.shape)}")
        self.diffusion = diffusion
        self.ndim = noise.ndim
        self.num_freq = noise.num_freq
        self.data_var = data_var.double()
        self.calls = 0

    def draw_data(self, num_graphs: int, channels: int, generator: torch.Generator) -> Tensor:
        r"""Coefficients of data draws, :math:`(B, C, K, \dots, K)` float64."""
        z = torch.randn(num_graphs, channels, *self.data_var.shape, generator=generator,
                        dtype=torch.float64)
        return z * self.data_var.sqrt()

    def coefficients(self, x: Tensor, pos: Tensor, batch: Tensor, num_graphs: int,
                     lattice: LatticeIndex | None = None) -> Tensor:
        r"""The coefficients :math:`(B, C, K, \dots, K)` of the band-limited function whose
        node values are :obj:`x`."""
        x = x.double()
        if lattice is not None and lattice.is_full() and min(lattice.shape) >= self.num_freq:
            return dct(lattice.scatter(x)[0], self.ndim, self.num_freq)
        channels, freqs = x.size(1), self.noise_var.shape
        size = pos.size(0) // num_graphs
        shared = pos.view(num_graphs, size, -1) if size * num_graphs == pos.size(0) else None
        if shared is not None and torch.equal(batch, torch.arange(num_graphs).repeat_interleave(
                size)) and bool((shared == shared[:1]).all()):
            # One point set for every graph: one least-squares problem, many right-hand sides.
            rhs = x.view(num_graphs, size, channels).transpose(0, 1).reshape(size, -1)
            coef = self._lstsq(shared[0], rhs)  # [K^d, B * C]
            return coef.T.reshape(num_graphs, channels, *freqs)
        out = []
        for b in range(num_graphs):
            nodes = batch == b
            out.append(self._lstsq(pos[nodes], x[nodes]).T.reshape(channels, *freqs))
        return torch.stack(out)

    def _lstsq(self, pos: Tensor, rhs: Tensor) -> Tensor:
        phi = design_matrix(pos, self.num_freq)
        if phi.size(0) < phi.size(1):
            raise ValueError(f"{phi.size(0)} nodes are fewer than the {phi.size(1)} "
                             f"coefficients")
        return torch.linalg.lstsq(phi, rhs).solution

    def values(self, coeffs: Tensor, pos: Tensor, batch: Tensor,
               lattice: LatticeIndex | None = None) -> Tensor:
        r"""Evaluates coefficients :math:`(B, C, K..K)` at the nodes, float64 :math:`(N, C)`."""
        if lattice is not None:
            return lattice.gather(evaluate_series_on_lattice(coeffs, lattice.shape))
        return evaluate_series(coeffs, pos.double(), batch)

    def posterior_gain(self, t: Tensor) -> Tensor:
        r""":math:`a \lambda / (a^2 \lambda + s^2 \gamma)` per graph,
        :math:`(B, 1, K, \dots, K)`."""
        schedule = self.diffusion.schedule
        a = schedule.signal_scale[t].view(-1, 1, *([1] * self.ndim))
        s = schedule.noise_scale[t].view(-1, 1, *([1] * self.ndim))
        return a * self.data_var / (a**2 * self.data_var + s**2 * self.noise_var)

    def __call__(self, x_t: Tensor, pos: Tensor, t: Tensor, batch: Tensor,
                 edge_index: Tensor | None = None, lattice: LatticeIndex | None = None
                 ) -> Tensor:
        self.calls += 1
        num_graphs = t.numel()
        coeffs = self.coefficients(x_t, pos, batch, num_graphs, lattice)
        x0 = self.values(self.posterior_gain(t) * coeffs, pos, batch, lattice)
        a, s = self.diffusion.coefficients(t, batch, x_t.size(0), torch.float64)
        eps = (x_t.double() - a * x0) / s
        return training_target(x0, eps, a, s, self.diffusion.parametrization).to(x_t.dtype)

    def chain_variance(self, solver, num_inference_steps: int) -> Tensor:
        r"""The exact variance of every coefficient after running :obj:`solver` from pure
        noise with this oracle, :math:`(K, \dots, K)`.

        With a linear denoiser each step maps a coefficient as :math:`x' = A x + B \xi`; the
        factors come from :obj:`solver.step` itself, applied to coefficient vectors (the step
        is linear and acts elementwise), so this is the variance the node-level sampler must
        reproduce, discretisation error included.
        """
        solver.set_timesteps(num_inference_steps)
        lam, gam = self.data_var.reshape(-1), self.noise_var.reshape(-1)
        schedule = self.diffusion.schedule
        var = gam.clone()
        one, zero = torch.ones_like(lam), torch.zeros_like(lam)
        for t in solver.timesteps.tolist():
            a = schedule.signal_scale[t].item()
            s = schedule.noise_scale[t].item()
            gain = a * lam / (a * a * lam + s * s * gam)

            def output(x: Tensor, a=a, s=s, gain=gain) -> Tensor:
                x0 = gain * x
                return training_target(x0, (x - a * x0) / s, a, s, solver.parametrization)

            stochastic = solver.needs_noise(t)
            gain_x = solver.step(output(one), t, one, noise=zero if stochastic else None)
            var = gain_x.prev_sample.square() * var
            if stochastic:
                gain_noise = solver.step(output(zero), t, zero, noise=one).prev_sample
                var = var + gain_noise.square() * gam
        return var.view_as(self.data_var)
