"""What every benchmark test shares: ``bench/`` on ``sys.path`` before the test modules are
imported (they import its helpers, e.g. ``from _publish import read_section``, and load its
scripts with ``bench_scripts.load_script``); and the scripts set torch's thread count, so it is
restored after each test."""
import pytest
import torch
from bench_scripts import BENCH  # noqa: F401  (appends bench/ to sys.path)


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
