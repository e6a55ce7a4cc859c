"""What every benchmark test shares: ``bench/`` on ``sys.path`` before the test modules are
imported (they import its helpers, e.g. ``from _publish import read_section``, and load its
scripts with ``bench_scripts.load_script``); and the scripts set torch's thread count, so it is
restored after each test. Tests of benchmarks on Fashion-MNIST take the ``fashion_mnist``
fixture, which skips them where the offline data set is not installed."""
import pytest
import torch
from bench_scripts import BENCH  # noqa: F401  (appends bench/ to sys.path)


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fashion_mnist():
    r"""Skips the test unless the offline Fashion-MNIST is installed (see
    :mod:`pyg_infdiff.data`)."""
    from pyg_infdiff.data import FashionMNIST

    try:
        FashionMNIST(train=False)
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not installed: {err}")
