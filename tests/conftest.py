"""Test-suite configuration: slow tests run only with ``PYG_INFDIFF_FULL_TEST=1``."""
import os

import pytest
import torch
from hypothesis import settings

# Everyone who runs the test command (CI, a user, a developer) replays the same derandomized
# examples: a user's run passes exactly as reliably as CI's. Fresh random examples are for
# hunting bugs on purpose: PYG_INFDIFF_HYPOTHESIS=explore (a failure prints its reproduction
# blob; keep the example with @example or fix the tolerance, then commit).
settings.register_profile("replay", deadline=None, print_blob=True, derandomize=True)
settings.register_profile("explore", deadline=None, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("PYG_INFDIFF_HYPOTHESIS", "replay")
if HYPOTHESIS_PROFILE not in ("replay", "explore"):
    raise ValueError(
        f"PYG_INFDIFF_HYPOTHESIS must be 'replay' or 'explore', got {HYPOTHESIS_PROFILE!r}"
    )
settings.load_profile(HYPOTHESIS_PROFILE)

FULL_TEST = os.environ.get("PYG_INFDIFF_FULL_TEST", "0") == "1"

# Most tests run small tensors, where thread start-up dominates: one thread is faster, and far
# faster on a shared machine. PYG_INFDIFF_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("PYG_INFDIFF_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if FULL_TEST:
        return
    skip = pytest.mark.skip(reason="slow test: set PYG_INFDIFF_FULL_TEST=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
