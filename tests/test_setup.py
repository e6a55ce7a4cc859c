r"""The set-up of a fresh machine (``scripts/setup.sh``, ``scripts/_python.sh``), dry-run in new,
empty virtual environments: nothing is installed, so these run in seconds and offline.

The full fresh path (install, then the README's two commands) is what ``.ci/run`` does on every
CI run, from a virtual environment made for that run."""
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"
# What an empty environment lacks: every install step of setup.sh, the package included.
EVERYTHING = ("torch (", "torch-cluster (", "the FID Inception weights",
              "pyg_infdiff[test,docs,bench] installed")
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}"


def _env(**extra: str) -> dict[str, str]:
    r"""The caller's environment without any choice of interpreter or environment in it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PYG_INFDIFF_VENV",
                        "PYG_INFDIFF_BASE_PYTHON", "PYG_INFDIFF_EXTRAS", "PYG_INFDIFF_NO_FID",
                        "TORCH_SPEC", "PYTHONPATH")}
    env.update(extra)
    return env


def _activated(venv_dir: Path, **extra: str) -> dict[str, str]:
    r"""The environment of a shell that ran ``source venv_dir/bin/activate``."""
    env = _env(**extra)
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _setup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SETUP), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def empty_venv(tmp_path_factory) -> Path:
    r"""A new virtual environment with pip and nothing else, as ``python3 -m venv`` makes it."""
    path = tmp_path_factory.mktemp("setup") / "venv"
    venv.EnvBuilder(with_pip=True).create(path)
    return path


def _missing(stdout: str) -> list[str]:
    return [line.removeprefix("[setup] missing: ") for line in stdout.splitlines()
            if line.startswith("[setup] missing: ")]


def test_check_in_an_empty_venv_lists_everything(empty_venv):
    proc = _setup("--check", env=_activated(empty_venv))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    missing = _missing(proc.stdout)
    for what in EVERYTHING:
        assert any(line.startswith(what) for line in missing), (what, proc.stdout)
    assert len(missing) == len(EVERYTHING), proc.stdout  # the active venv itself is not missing
    assert "FAILED" not in proc.stderr


def test_check_outside_any_environment_names_the_project_venv(tmp_path):
    # No environment active: set-up would create the project's own venv (PEP 668 machines
    # refuse pip install into the system Python); --check only says so and creates nothing.
    target = tmp_path / "project-venv"
    proc = _setup("--check", env=_env(PYG_INFDIFF_VENV=str(target),
                                      PYG_INFDIFF_BASE_PYTHON=str(BASE_PYTHON)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    missing = _missing(proc.stdout)
    assert missing[0].startswith("a virtual environment") and str(target) in missing[0]
    for what in EVERYTHING:
        assert any(line.startswith(what) for line in missing), (what, proc.stdout)
    assert not target.exists()


def test_a_failing_step_says_which_and_what_to_do(empty_venv):
    # An install that fails at once and offline (no index, a version that does not exist).
    proc = _setup(env=_activated(empty_venv, TORCH_SPEC="--no-index torch==0.0.1"))
    assert proc.returncode != 0
    assert "[setup] FAILED (exit" in proc.stderr
    assert "while installing --no-index torch==0.0.1" in proc.stderr
    assert "[setup] What to do:" in proc.stderr and "TORCH_SPEC" in proc.stderr


def test_a_missing_interpreter_is_named():
    proc = _setup(env=_env(PYTHON="/nonexistent/python3"))
    assert proc.returncode != 0
    assert "FAILED" in proc.stderr and "/nonexistent/python3" in proc.stderr


def _chosen(env: dict[str, str]) -> tuple[str, str]:
    script = 'source scripts/_python.sh; pyg_infdiff_choose_python; ' \
             'echo "$PYTHON"; echo "$PYG_INFDIFF_PROJECT_VENV"'
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    python, project_venv = proc.stdout.split("\n")[:2]
    return python, project_venv


def test_all_three_scripts_choose_one_python(empty_venv, tmp_path):
    # setup.sh, demo.sh and test.sh all source scripts/_python.sh, so they agree.
    for name in ("setup.sh", "demo.sh", "test.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert "source scripts/_python.sh" in text and "pyg_infdiff_choose_python" in text, name
    assert _chosen(_env(PYTHON="/some/python")) == ("/some/python", "")
    assert _chosen(_activated(empty_venv)) == ("python3", "")
    target = tmp_path / "v"
    assert _chosen(_env(PYG_INFDIFF_VENV=str(target),
                        PYG_INFDIFF_BASE_PYTHON=str(BASE_PYTHON))) == (
        str(target / "bin" / "python"), str(target))


def test_ci_runs_the_test_command_from_a_new_environment():
    text = (ROOT / ".ci" / "run").read_text()
    assert "-m venv" in text and "bash scripts/test.sh" in text
