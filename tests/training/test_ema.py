import pytest
import torch
from torch import nn

from pyg_infdiff.training import create_ema, ema_decay, update_ema


def _toy_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if v.is_floating_point()}


def test_ema_matches_manual_average():
    model = _toy_model()
    decay, start = 0.9, 2
    ema = create_ema(model, decay, warmup=False)
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
    frozen = create_ema(model, 1.0, warmup=False)
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


def test_ema_warmup_follows_the_schedule():
    # With warm-up the n-th update (n = updates since the copy) uses min(decay, (1+n)/(10+n)).
    model = nn.Linear(3, 2)
    ema = create_ema(model, 0.99)
    gen = torch.Generator().manual_seed(2)
    manual = None
    for step in range(1, 40):
        with torch.no_grad():
            model.weight.add_(torch.randn(model.weight.shape, generator=gen))
        update_ema(ema, model, step)
        current = model.weight.detach().clone()
        beta = min(0.99, (1 + step - 1) / (10 + step - 1))
        manual = current if manual is None else beta * manual + (1 - beta) * current
        torch.testing.assert_close(ema.module.weight, manual, rtol=1e-5, atol=1e-6)
    assert ema_decay(0.99, 1) == 2 / 11 and ema_decay(0.99, 10_000) == 0.99
    assert ema_decay(0.99, 1, warmup=False) == 0.99


def test_ema_warmup_forgets_the_initial_weights():
    # The failure it prevents: with decay 0.999 and no warm-up, a zero-initialised layer that
    # moved to 1 after the first step is still at ~0.4 of its value after 500 updates.
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    plain, warm = create_ema(model, 0.999, warmup=False), create_ema(model, 0.999)
    update_ema(plain, model, 1)
    update_ema(warm, model, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(2, 502):
        update_ema(plain, model, step)
        update_ema(warm, model, step)
    assert float(plain.module.weight) < 0.45
    assert float(warm.module.weight) > 0.99
