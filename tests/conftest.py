"""Test-suite configuration: slow tests run only with ``PYG_INFDIFF_FULL_TEST=1``."""
import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

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
