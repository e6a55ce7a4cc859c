"""What every benchmark test shares: the scripts set torch's thread count, so it is restored
after each test."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
