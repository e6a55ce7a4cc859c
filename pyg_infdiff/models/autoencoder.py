r"""The diffusion autoencoder of ∞-Diff: an encoder of functions and a U-Net conditioned on its
latent vector. Composition only; decoding (sampling) lives in :mod:`pyg_infdiff.diffusion`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch_geometric.typing import OptTensor

from pyg_infdiff.graph import LatticeIndex
from pyg_infdiff.models.config import UNetConfig
from pyg_infdiff.models.encoder import EncoderConfig, FunctionEncoder
from pyg_infdiff.models.unet import MultiscaleOperatorUNet
from pyg_infdiff.nn.kernel_conv import EdgeKernel


class DiffusionAutoencoder(nn.Module):
    r"""The two-stage model of `"Infinite Resolution Diffusion with Subsampled Mollified
    States" <https://arxiv.org/abs/2303.18242>`_ (Bond-Taylor & Willcocks, ICLR 2024), first
    stage: a :class:`FunctionEncoder` :math:`E` reads a function from any of its
    discretisations and gives a latent vector :math:`\mathbf{z}`, and a
    :class:`MultiscaleOperatorUNet` :math:`\epsilon_\theta` conditioned on it
    (:obj:`cond_dim` :math:`= D`) denoises.

    .. math::
        \mathbf{z}_b = E(x_b), \qquad
        \hat{\epsilon} = \epsilon_\theta(x_t, t \mid \mathbf{z}_b)

    :meth:`encode` runs the encoder; calling the module runs the conditioned denoiser with the
    :obj:`~pyg_infdiff.diffusion.Denoiser` interface plus ``cond=z``, so sampling passes the
    latent through ``model_kwargs={"cond": z}`` (:func:`~pyg_infdiff.diffusion.sample`).
    Training passes the encoder's own points instead (``enc_x``, ``enc_pos``, ...: the module
    then encodes them inside :meth:`forward`, where distributed data parallel sees the
    encoder; :class:`~pyg_infdiff.diffusion.AutoencoderLoss`), and gradients of the loss
    reach the encoder through :obj:`z`. The use cases are functions of :mod:`pyg_infdiff.diffusion`:
    :func:`~pyg_infdiff.diffusion.reconstruct` (encode from any subset of points, decode by
    DDIM at any resolution) and :func:`~pyg_infdiff.diffusion.interpolate` (slerp in
    :math:`\mathbf{z}` with one shared noise field). Like the U-Net, it reads point sets
    through a context of the training density (``sample(..., context=)``), and computes the
    operators' kernels once per point set (:meth:`context_graph`, :meth:`edge_kernels`).

    .. code-block:: python

        import torch
        from pyg_infdiff.diffusion import MollifiedDiffusion, reconstruct
        from pyg_infdiff.graph import lattice
        from pyg_infdiff.models import DiffusionAutoencoder
        from pyg_infdiff.noise import MollifiedNoise

        model = DiffusionAutoencoder.preset(28).eval()
        diffusion = MollifiedDiffusion(MollifiedNoise(1 / 28, 2))
        pos = lattice((28, 28))
        keep = torch.randperm(pos.size(0))[:196]  # encode from a quarter of the pixels
        x = torch.sin(6 * pos[keep, :1])
        out = reconstruct(model, diffusion, x, pos[keep], shape=(56, 56), steps=2,
                          progress=False)
        assert out.images.shape == (1, 1, 56, 56)

    Args:
        encoder (EncoderConfig): The encoder's hyper-parameters.
        unet (UNetConfig): The denoiser's hyper-parameters; its :obj:`cond_dim` must be the
            encoder's :obj:`latent_dim`.

    Shapes:
        - **input:** as :class:`MultiscaleOperatorUNet`, and ``cond`` :math:`(B, D)` or the
          encoder's points ``enc_x`` :math:`(M, C)`, ``enc_pos`` :math:`(M, d)`, ``enc_batch``
          :math:`(M,)`
        - **output:** :math:`(N, C_{out})`
    """

    def __init__(self, encoder: EncoderConfig, unet: UNetConfig) -> None:
        super().__init__()
        if unet.cond_dim != encoder.latent_dim:
            raise ValueError(f"The U-Net's 'cond_dim' ({unet.cond_dim}) must equal the "
                             f"encoder's 'latent_dim' ({encoder.latent_dim})")
        if unet.in_channels != encoder.in_channels or unet.ndim != encoder.ndim:
            raise ValueError(
                f"Encoder and U-Net must read the same data: in_channels "
                f"{encoder.in_channels} vs {unet.in_channels}, ndim {encoder.ndim} vs "
                f"{unet.ndim}")
        self.encoder = FunctionEncoder(encoder)
        self.unet = MultiscaleOperatorUNet(unet)

    @property
    def latent_dim(self) -> int:
        r"""The size :math:`D` of :math:`\mathbf{z}`."""
        return self.encoder.config.latent_dim

    @classmethod
    def preset(cls, resolution: int, **unet_overrides: Any) -> DiffusionAutoencoder:
        r""":meth:`EncoderConfig.preset` and :meth:`UNetConfig.preset` of one training
        resolution (28 or 32), the U-Net conditioned on the encoder's latent.

        Args:
            resolution (int): The training resolution.
            **unet_overrides: Fields of the U-Net configuration to change.
        """
        encoder = EncoderConfig.preset(resolution)
        unet = UNetConfig.preset(resolution, **{"cond_dim": encoder.latent_dim,
                                                **unet_overrides})
        return cls(encoder, unet)

    def encode(
        self,
        x: Tensor,
        pos: Tensor,
        batch: OptTensor = None,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        r"""The latent vector of each graph, :math:`(B, D)`; see :class:`FunctionEncoder`
        (its :obj:`edge_index` has the encoder's radius)."""
        return self.encoder(x, pos, batch, edge_index=edge_index, lattice=lattice,
                            num_graphs=num_graphs)

    def forward(
        self,
        x_t: Tensor,
        pos: Tensor,
        t: Tensor,
        batch: OptTensor = None,
        edge_index: OptTensor = None,
        lattice: LatticeIndex | None = None,
        cond: OptTensor = None,
        context: OptTensor = None,
        kernels: Sequence[EdgeKernel] | None = None,
        *,
        enc_x: OptTensor = None,
        enc_pos: OptTensor = None,
        enc_batch: OptTensor = None,
        enc_lattice: LatticeIndex | None = None,
    ) -> Tensor:
        r"""The conditioned denoiser, :meth:`MultiscaleOperatorUNet.forward` with
        ``cond`` :math:`(B, D)`, or with the points the latent is encoded from.

        Exactly one of :obj:`cond` and :obj:`enc_x` is given. With :obj:`enc_x` (training),
        ``cond = self.encode(enc_x, enc_pos, enc_batch, lattice=enc_lattice)`` is computed
        here, inside :meth:`forward`, so that a
        :class:`~torch.nn.parallel.DistributedDataParallel` wrapper sees the encoder's
        parameters used in its forward pass and reduces their gradients like the U-Net's
        (:class:`~pyg_infdiff.diffusion.AutoencoderLoss` calls the model this way).

        Args:
            context (torch.Tensor, optional): Sorted indices of the context nodes
                (:meth:`MultiscaleOperatorUNet.forward`). (default: :obj:`None`)
            kernels (Sequence[EdgeKernel], optional): The U-Net's kernels on
                :obj:`edge_index` (:meth:`edge_kernels`). (default: :obj:`None`)
            enc_x (torch.Tensor, optional): Values the encoder reads, :math:`(M, C)`.
                (default: :obj:`None`)
            enc_pos (torch.Tensor, optional): Their coordinates, :math:`(M, d)`.
                (default: :obj:`None`)
            enc_batch (torch.Tensor, optional): Their graph index, :math:`(M,)`; one graph if
                :obj:`None`. (default: :obj:`None`)
            enc_lattice (LatticeIndex, optional): Their lattice positions, for the encoder's
                lattice paths. (default: :obj:`None`)
        """
        if (cond is None) == (enc_x is None):
            raise ValueError("Pass exactly one of 'cond' (a latent per graph) and 'enc_x' "
                             "(with 'enc_pos': the points to encode it from)")
        if enc_x is not None:
            if enc_pos is None:
                raise ValueError("'enc_x' needs 'enc_pos'")
            cond = self.encode(enc_x, enc_pos, enc_batch, lattice=enc_lattice,
                               num_graphs=t.numel())
        return self.unet(x_t, pos, t, batch, edge_index=edge_index, lattice=lattice, cond=cond,
                         context=context, kernels=kernels)

    def edge_kernels(self, pos: Tensor, edge_index: Tensor) -> tuple[EdgeKernel, ...]:
        r"""The U-Net's kernels on fixed edges (:meth:`MultiscaleOperatorUNet.edge_kernels`),
        computed once per point set by :func:`~pyg_infdiff.diffusion.sample`."""
        return self.unet.edge_kernels(pos, edge_index)

    def context_graph(self, pos: Tensor, context: Tensor, batch: OptTensor = None) -> Tensor:
        r"""The U-Net's edges through the context nodes
        (:meth:`MultiscaleOperatorUNet.context_graph`), for :meth:`forward` with
        :obj:`context`."""
        return self.unet.context_graph(pos, context, batch)

    def to_dict(self) -> dict[str, Any]:
        r"""Both configurations as Python primitives, ``{"encoder": ..., "unet": ...}``."""
        return {"encoder": self.encoder.config.to_dict(), "unet": self.unet.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionAutoencoder:
        r"""A new model (fresh weights) from :meth:`to_dict`."""
        if set(data) != {"encoder", "unet"}:
            raise ValueError(f"Expected the keys 'encoder' and 'unet', got {sorted(data)}")
        return cls(EncoderConfig.from_dict(data["encoder"]), UNetConfig.from_dict(data["unet"]))

    def __repr__(self) -> str:
        encoder = sum(p.numel() for p in self.encoder.parameters() if p.requires_grad)
        unet = sum(p.numel() for p in self.unet.parameters() if p.requires_grad)
        return (f"{self.__class__.__name__}(latent_dim={self.latent_dim}, encoder {encoder} "
                f"parameters, unet {unet} parameters)")
