"""The documentation builds from a clean tree with no warnings, and its figures stay small."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "_static" / "figures"
MAX_FIGURE_BYTES = 200 * 1024


def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "myst_parser", "furo"):
        pytest.importorskip(module, reason="the docs extras are not installed (.[docs])")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    assert (tmp_path / "html" / "index.html").is_file()


def test_committed_figures_are_small():
    figures = sorted(FIGURES.glob("*.png"))
    assert {p.name for p in figures} >= {
        "noise_resolutions.png", "subsampled_graph.png", "mollifier.png"
    }
    for path in figures:
        assert path.stat().st_size < MAX_FIGURE_BYTES, f"{path} is {path.stat().st_size} bytes"


@pytest.mark.slow
def test_figure_script_runs(tmp_path):
    # Regenerates the figures into a temporary folder (the committed ones are not touched).
    command = [sys.executable, str(ROOT / "docs" / "figures" / "make_figures.py"),
               "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    for name in ("noise_resolutions.png", "subsampled_graph.png", "mollifier.png"):
        size = (tmp_path / name).stat().st_size
        assert 0 < size < MAX_FIGURE_BYTES, (name, size)
