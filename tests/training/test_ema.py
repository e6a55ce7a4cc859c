import pytest
import torch
from torch import nn

from pyg_infdiff.training import create_ema, update_ema


def _toy_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if v.is_floating_point()}


def test_ema_matches_manual_average():
    model = _toy_model()
    decay, start = 0.9, 2
    ema = create_ema(model, decay)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.parameters())

    manual = None
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 8):
        with torch.no_grad():  # a fake optimiser step that also moves the BN buffers
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
            model[1].running_mean.add_(torch.randn(4, generator=gen))
        update_ema(ema, model, step, start=start)
        current = _state(model)
        if step <= start:
            manual = current
        else:
            manual = {k: decay * manual[k] + (1 - decay) * current[k] for k in current}
        averaged = _state(ema.module)
        assert averaged.keys() == manual.keys()
        for k in manual:
            torch.testing.assert_close(averaged[k], manual[k], rtol=1e-5, atol=1e-6)


def test_ema_extremes_and_validation():
    model = nn.Linear(2, 2)
    copy = create_ema(model, 0.0)
    frozen = create_ema(model, 1.0)
    first = _state(model)
    for step in range(1, 4):
        with torch.no_grad():
            model.weight.add_(1.0)
        update_ema(copy, model, step)
        update_ema(frozen, model, step)
    torch.testing.assert_close(copy.module.weight, model.weight)
    torch.testing.assert_close(frozen.module.weight, first["weight"] + 1.0)
    with pytest.raises(ValueError, match="decay"):
        create_ema(model, 1.5)


def test_ema_state_dict_roundtrip():
    model = nn.Linear(2, 2)
    ema = create_ema(model, 0.5)
    update_ema(ema, model, 1)
    with torch.no_grad():
        model.weight.mul_(3.0)
    update_ema(ema, model, 2)
    other = create_ema(nn.Linear(2, 2), 0.5)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.module.weight, ema.module.weight)
    assert int(other.n_averaged) == 2
