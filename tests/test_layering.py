"""The subpackages import each other one way only (CONTRIBUTING.md, "How the code reads")."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyg_infdiff"

# What each subpackage may import from the others. A layer only looks down.
ALLOWED: dict[str, set[str]] = {
    "_dist": set(),
    "_validation": set(),
    "graph": set(),
    "noise": {"graph", "_validation"},
    "nn": {"graph", "_validation"},
    "testing": {"graph"},
    "diffusion": {"graph", "noise", "_validation"},
    "models": {"graph", "nn", "_validation"},
    "data": {"_dist", "graph"},
    "metrics": {"data"},
    "training": {"_dist", "graph", "noise", "nn", "models", "diffusion", "data", "metrics"},
}


def _subpackage(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_subpackages(source: str, path: Path) -> set[str]:
    """The :mod:`pyg_infdiff` subpackages that one file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-node.level]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pyg_infdiff" and len(parts) > 1:
                found.add(parts[1])
    return found


FILES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_subpackage_has_a_rule():
    subpackages = {_subpackage(p) for p in FILES}
    assert subpackages == set(ALLOWED), "add the new subpackage to ALLOWED"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path):
    own = _subpackage(path)
    illegal = _imported_subpackages(path.read_text(), path) - ALLOWED[own] - {own}
    assert not illegal, f"{path.relative_to(PACKAGE)} imports {sorted(illegal)}"


def test_the_checker_sees_a_violation():
    # The rule must be able to fail: nn importing diffusion, absolutely or relatively, is caught.
    path = PACKAGE / "nn" / "kernel.py"
    for line in ("from pyg_infdiff.diffusion import MollifiedDiffusion",
                 "from ..diffusion import process", "import pyg_infdiff.diffusion.process"):
        source = path.read_text() + f"\ndef late():\n    {line}\n"
        assert _imported_subpackages(source, path) - ALLOWED["nn"] - {"nn"} == {"diffusion"}
