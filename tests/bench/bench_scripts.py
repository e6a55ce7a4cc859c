"""Loads a benchmark script of ``bench/`` in a test, under a module name of its own.

``bench/`` goes at the end of ``sys.path`` (the scripts import ``_common``, ``_skeleton``, ...;
appended, so that a generic script name such as ``data`` or ``noise`` never shadows a package),
and the script is loaded from its file as ``bench_<name>``: ``tests/data`` and ``tests/noise``
are folders too, and ``bench/`` may sit anywhere on ``sys.path``."""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))


def load_script(name: str) -> ModuleType:
    """The script ``bench/<name>.py``, loaded once per test session."""
    module_name = f"bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
