r"""The switch of the input checks that read tensor values back to the host.

Checking a value of a tensor (``bool(tensor)``, ``tensor.item()``, ``int(tensor)``,
``tensor.tolist()``) makes the host wait for the device: on a GPU every such check inside a
``forward`` stalls the pipeline, and under :func:`torch.compile` it is a graph break. Checks of
shapes, dtypes and Python arguments cost nothing and always run. The checks of *values*
(coordinates in :math:`[0, 1]^d`, ``batch`` within the number of graphs, positions matching a
:class:`~pyg_infdiff.graph.LatticeIndex`, time steps within the schedule, a node in every graph)
run where inputs enter the library, and only while validation is enabled (the default):

* the public call of a layer used on its own (:class:`~pyg_infdiff.nn.KernelIntegralConv`,
  :class:`~pyg_infdiff.nn.GridPool`, :class:`~pyg_infdiff.nn.GridUnpool`);
* the public call of :class:`~pyg_infdiff.models.MultiscaleOperatorUNet`, which checks its
  inputs once and runs its inner layers with validation disabled (:func:`validation`), so one
  forward reads back a fixed, small number of values whatever its depth;
* :meth:`~pyg_infdiff.diffusion.MollifiedDiffusion.training_losses` (the collated batch, the
  time steps: once per step, not once per use);
* :func:`~pyg_infdiff.diffusion.sample`, which checks its inputs once and runs every model call
  after the first with validation disabled.

Disable it around code whose inputs are known to be valid, e.g. a training loop on batches of
:class:`~pyg_infdiff.data.GraphCollator` on a GPU: then the inner layers of the model and the
training loss read nothing back (``tests/models/test_host_syncs.py`` counts it).

.. code-block:: python

    import torch
    from pyg_infdiff import validation, validation_enabled

    assert validation_enabled()
    with validation(False):
        assert not validation_enabled()  # value checks skipped inside this block
    assert validation_enabled()

The switch is a process-wide flag, like :func:`torch.autograd.set_detect_anomaly`; it is not
thread-local. Code compiled by :func:`torch.compile` never runs the value checks (each would
be a graph break), whatever the switch says; check inputs with an eager call where needed.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["set_validation", "validation", "validation_enabled"]

# A one-element list, mutated in place. Traced code (torch.compile) neither reads nor writes it.
_ENABLED: list[bool] = [True]


def validation_enabled() -> bool:
    r"""Whether the input checks that read tensor values back to the host run (see
    :func:`validation`): the switch is on and the caller is not being traced by
    :func:`torch.compile` (where a read back would be a graph break: call a compiled model
    eagerly once to check its inputs)."""
    # is_compiling() first: traced code then never reads the flag (no guard, no recompilation
    # when it changes between calls of a compiled model).
    return not torch.compiler.is_compiling() and _ENABLED[0]


def set_validation(enabled: bool) -> None:
    r"""Enables or disables the value checks of the library, process-wide.

    Args:
        enabled (bool): Run the checks.
    """
    _ENABLED[0] = bool(enabled)


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    r"""A context manager that enables or disables the value checks inside its block and
    restores the previous setting on exit (see the module notes in the API reference:
    where the checks run, and why they are switched off inside the model).

    Args:
        enabled (bool): Run the checks inside the block.
    """
    if torch.compiler.is_compiling():  # compiled code runs no value checks whatever the flag
        yield
        return
    previous = _ENABLED[0]
    _ENABLED[0] = bool(enabled)
    try:
        yield
    finally:
        _ENABLED[0] = previous
