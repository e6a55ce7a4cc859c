import subprocess
import sys
import textwrap

import pytest

from pyg_infdiff.training import allocator
from pyg_infdiff.training.allocator import keep_freed_memory

GLIBC = sys.platform.startswith("linux") and allocator.platform.libc_ver()[0] == "glibc"

# Allocates, touches and frees a 64 MiB block 20 times (what a sampling step does with its
# activations) and prints the minor page faults this caused; with "keep" it first calls
# keep_freed_memory(). Plain ctypes: the allocator, without torch's start-up in the way.
CHILD = textwrap.dedent("""
    import ctypes, resource, sys
    from pyg_infdiff.training.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only (a no-op elsewhere)")
def test_keeps_freed_memory_for_the_next_step():
    applied, kept = _faults("keep")
    _, default = _faults("default")
    pages = (64 << 20) // 4096
    assert applied == "True"
    # by default every block is a fresh mmap: about one fault per page per cycle (20 x 16,384)
    assert default > 10 * pages
    # kept: the pages are faulted in once (or twice), then reused
    assert kept < 3 * pages, (kept, default)


def test_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory() is False


def test_errors():
    with pytest.raises(ValueError, match="top_pad"):
        keep_freed_memory(top_pad=-1)
