"""The learning-rate schedule: analytic values, properties over all settings, bad input."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyg_infdiff.training import LR_SCHEDULES, lr_factor

settings = st.tuples(st.integers(0, 200), st.integers(0, 2000), st.sampled_from(LR_SCHEDULES),
                     st.floats(0.0, 1.0))


def test_analytic_values():
    assert lr_factor(25, 100, 1000) == pytest.approx(0.25)
    assert lr_factor(900, 100, 1000) == 1.0
    # Cosine: peak at the end of warm-up, half-way down at the middle of the decay, r at T.
    assert lr_factor(100, 100, 1100, "cosine") == pytest.approx(1.0)
    assert lr_factor(600, 100, 1100, "cosine", 0.2) == pytest.approx(0.6)
    assert lr_factor(350, 100, 1100, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(1100, 100, 1100, "cosine", 0.2) == pytest.approx(0.2)
    assert lr_factor(350, 100, 1100, "linear") == pytest.approx(0.75)
    assert lr_factor(5000, 100, 1100, "linear", 0.1) == pytest.approx(0.1)  # past T: stays at r
    assert lr_factor(1, 0, 0, "cosine") == 0.0  # no warm-up, no steps: already at the end


@given(settings, st.integers(1, 3000))
def test_factor_is_warmup_times_a_decay_between_min_ratio_and_one(setting, update):
    warmup, max_steps, schedule, ratio = setting
    warm = min(1.0, update / max(warmup, 1))
    factor = lr_factor(update, warmup, max_steps, schedule, ratio)
    assert warm * min(ratio, 1.0) - 1e-12 <= factor <= warm + 1e-12
    if schedule == "constant" or update <= warmup:
        assert factor == pytest.approx(warm)
    if schedule != "constant" and update >= max_steps and update > warmup:
        assert factor == pytest.approx(warm * ratio)


@given(settings)
def test_decay_never_rises_after_warmup(setting):
    warmup, max_steps, schedule, ratio = setting
    values = [lr_factor(s, warmup, max_steps, schedule, ratio)
              for s in range(max(warmup, 1), max_steps + 3)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="step"), "'schedule' must be one of"),
    (dict(min_ratio=1.5), "'min_ratio' must lie in"),
    (dict(update=0), "update >= 1"),
    (dict(max_steps=-1), "max_steps >= 0"),
])
def test_bad_input(kwargs, match):
    args = dict(update=1, warmup_steps=10, max_steps=100) | kwargs
    with pytest.raises(ValueError, match=match):
        lr_factor(**args)
