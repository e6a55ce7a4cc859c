r"""Weights for property tests of untrained models: zero-initialised layers re-drawn, so that a
model with random weights says something a discretisation check can compare."""
from __future__ import annotations

import math

import torch
from torch import nn

#: The layer types that :func:`redraw_zero_layers` re-draws.
RedrawnLayers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def redraw_zero_layers(
    module: nn.Module, *, gain: float = 1.0, generator: torch.Generator | None = None
) -> list[str]:
    r"""Re-draws every linear or convolutional layer of :obj:`module` whose weight is all zero,
    in place, and returns their names.

    Diffusion models often zero-initialise their output layer and the last layer of every
    residual branch (the head ``proj`` of :class:`~pyg_infdiff.models.MultiscaleOperatorUNet`,
    the ``lin2`` of its operator blocks, the second convolution and the attention output of
    the dense U-Net), so that an untrained model outputs exactly zero, which would make any
    comparison of outputs vacuous. Each such layer gets weights and bias drawn uniformly from
    :math:`[-b, b]` with :math:`b = \text{gain} / \sqrt{\text{fan\_in}}`, the bound of the
    default initialisation of :class:`torch.nn.Linear`. Layers with any non-zero weight are
    left alone.

    .. code-block:: python

        import torch
        from pyg_infdiff.models import MultiscaleOperatorUNet, UNetConfig
        from pyg_infdiff.testing import redraw_zero_layers

        model = MultiscaleOperatorUNet(UNetConfig.preset(28))
        names = redraw_zero_layers(model, generator=torch.Generator().manual_seed(0))
        assert "proj" in names and bool(model.proj.weight.any())

    Args:
        module (torch.nn.Module): The model, changed in place.
        gain (float, optional): The scale :math:`\text{gain}` of the bound. (default:
            :obj:`1.0`)
        generator (torch.Generator, optional): A CPU generator, for reproducible weights.
            (default: :obj:`None`)

    Returns:
        list[str]: the qualified names of the re-drawn layers.
    """
    if not gain > 0 or not math.isfinite(gain):
        raise ValueError(f"'gain' must be positive and finite, got gain={gain}")
    names = []
    with torch.no_grad():
        for name, layer in module.named_modules():
            if not isinstance(layer, RedrawnLayers) or bool(layer.weight.any()):
                continue
            bound = gain / math.sqrt(layer.weight[0].numel())
            for param in (layer.weight, layer.bias):
                if param is None:
                    continue
                values = torch.empty(param.shape, dtype=torch.float64)
                values.uniform_(-bound, bound, generator=generator)
                param.copy_(values.to(param.dtype))
            names.append(name)
    return names
