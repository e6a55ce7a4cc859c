"""Runs every Python example of the docstrings of :mod:`pyg_infdiff` (the examples the API
reference shows), one test per example, so the docstrings cannot rot.

Discovery: every module of the package (walked with :mod:`pkgutil` and imported), its docstring,
and the docstrings of the classes and functions it defines (re-exports are skipped: an object is
visited in the module that defines it, and only once), of their methods, properties and nested
classes. In a docstring, an example is

* the content of a ``.. code-block::`` (or ``.. code::``, ``.. sourcecode::``) directive whose
  language is ``python``, ``py``, ``python3`` or none (Sphinx's default language is Python);
* a ``::`` literal block (Sphinx highlights it as Python, so it must be Python; use
  ``.. code-block:: text`` or ``bash`` for anything else);
* a doctest block (``>>>`` lines), also inside a ``pycon`` code-block: run with :mod:`doctest`.

Each example runs dedented, as ``__main__``, in a fresh namespace and in a fresh temporary working
folder, so it must be self-contained (its own imports, tiny sizes: a few seconds on a CPU).
Tracebacks point at the lines of the source file.

An example that truly cannot run here (a GPU, hours of training) is skipped by an RST comment
line ``.. skip-test: reason`` just before its directive (for the Markdown docs the same opt-out is
``<!-- skip-test: reason -->``, see ``tests/docs/test_snippets.py``).
"""
from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import pyg_infdiff

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(pyg_infdiff.__file__).resolve().parent

PYTHON = {"", "python", "py", "python3", "ipython", "ipython3"}
DOCTEST = {"pycon", "doscon"}
DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?:code-block|code|sourcecode)::\s*(?P<lang>\S*)\s*$")
OTHER_DIRECTIVE = re.compile(r"^\s*\.\.\s+(?P<name>[\w:-]+?)::")
# Directives whose content is not reStructuredText (so never holds an example).
OPAQUE = {"math", "raw", "csv-table", "parsed-literal", "graphviz", "highlight"}
OPTION = re.compile(r"^\s*:[\w-]+:")
SKIP = re.compile(r"^\s*\.\.\s+skip-test:\s*(?P<reason>\S.*?)\s*$")
# Modules of the package that are not imported for discovery (none so far).
EXCLUDED_MODULES: frozenset[str] = frozenset()
# Examples that must be found (the guard against a discovery that silently finds nothing).
KNOWN = {
    "pyg_infdiff.data.shapes.ContinuousShapes:0",
    "pyg_infdiff.data.images.save_rows:0",
    "pyg_infdiff.training.callbacks.SampleGrid:0",
    "pyg_infdiff.testing.strategies:0",
}


@dataclass(frozen=True)
class Example:
    owner: str  # "module" or "module.qualname"
    index: int  # position among the examples of that docstring
    code: str  # dedented
    kind: str  # "exec" or "doctest"
    origin: str  # "code-block", "literal" (after "::") or "doctest" (a ">>>" paragraph)
    path: Path | None  # source file
    line: int  # 1-based line of the first code line in path (0: unknown)
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.owner}:{self.index}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _dedent_docstring(doc: str) -> list[str]:
    """The lines of a docstring dedented as :func:`inspect.cleandoc` does, but keeping the leading
    and trailing blank lines, so that line ``i`` is the ``i``-th line of the docstring literal."""
    lines = doc.expandtabs().split("\n")
    margin = min((_indent(line) for line in lines[1:] if line.strip()), default=0)
    return [lines[0].strip()] + [line[margin:] for line in lines[1:]]


def _block(lines: list[str], start: int, parent: int) -> tuple[int, int]:
    """The content lines ``[first, end)`` of the block that starts at line ``start`` and is
    indented more than ``parent`` (leading blank lines and directive options are not content)."""
    i = start
    while i < len(lines) and (not lines[i].strip()
                              or (_indent(lines[i]) > parent and OPTION.match(lines[i]))):
        i += 1
    first = end = i
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > parent):
        end += 1
    while end > first and not lines[end - 1].strip():
        end -= 1
    return first, end


def _dedent(lines: list[str]) -> str:
    margin = min((_indent(line) for line in lines if line.strip()), default=0)
    return "\n".join(line[margin:] for line in lines)


def parse_docstring(doc: str) -> list[tuple[int, str, str, str, str | None]]:
    """The examples of a docstring: ``(line offset in the docstring, code, kind, origin, skip
    reason)``, see :class:`Example`."""
    lines = _dedent_docstring(doc)
    found, i = [], 0

    def skip_reason(at: int) -> str | None:
        previous = next((lines[j] for j in range(at - 1, -1, -1) if lines[j].strip()), "")
        match = SKIP.match(previous)
        return match["reason"] if match else None

    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        if directive is not None:
            first, end = _block(lines, i + 1, _indent(line))
            lang = directive["lang"].lower()
            if end > first and (lang in PYTHON or lang in DOCTEST):
                code = _dedent(lines[first:end])
                kind = "doctest" if code.lstrip().startswith(">>>") else "exec"
                found.append((first, code, kind, "code-block", skip_reason(i)))
            i = max(end, i + 1)
            continue
        other = OTHER_DIRECTIVE.match(line)
        if other is not None:  # skip the content of math, raw, ...; read that of note, ...
            opaque = other["name"] in OPAQUE
            i = max(_block(lines, i + 1, _indent(line))[1], i + 1) if opaque else i + 1
            continue
        if line.rstrip().endswith("::") and line.strip():  # "Example::" or a lone "::"
            first, end = _block(lines, i + 1, _indent(line))
            if end > first and _indent(lines[first]) > _indent(line):
                code = _dedent(lines[first:end])
                kind = "doctest" if code.lstrip().startswith(">>>") else "exec"
                found.append((first, code, kind, "literal", skip_reason(i)))
            i = max(end, i + 1)
            continue
        if line.lstrip().startswith(">>>"):  # a doctest block: up to the next blank line
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            found.append((i, _dedent(lines[i:end]), "doctest", "doctest", skip_reason(i)))
            i = end
            continue
        i += 1
    return found


def _docstring_line(path: Path | None, start: int) -> int:
    """The 1-based line of the opening quotes of the first docstring at or after line
    ``start`` of ``path`` (0 when not found)."""
    if path is None:
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    for number in range(max(start, 1), len(lines) + 1):
        if re.search(r"(?:^|[^\w'\"])[rRuU]?(\"\"\"|''')", lines[number - 1]):
            return number
    return 0


def _source(obj: object) -> tuple[Path | None, int]:
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
        start = 1 if inspect.ismodule(obj) else inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None, 0
    return path, start


def _members(cls: type, prefix: str, module: str, seen: set[int]):
    """``(qualname, object)`` for the methods, properties and nested classes that ``cls``
    defines (not inherits)."""
    for name, value in vars(cls).items():
        target = value
        if isinstance(value, (staticmethod, classmethod)):
            target = value.__func__
        elif isinstance(value, property):
            target = value.fget
        elif hasattr(value, "func") and hasattr(value, "attrname"):  # functools.cached_property
            target = value.func
        if target is None or id(target) in seen:
            continue
        if inspect.isclass(target) and getattr(target, "__module__", None) == module:
            seen.add(id(target))
            yield f"{prefix}.{name}", target
            yield from _members(target, f"{prefix}.{name}", module, seen)
        elif inspect.isfunction(target) and target.__module__ == module:
            seen.add(id(target))
            yield f"{prefix}.{name}", target


def documented_objects(module: ModuleType, seen: set[int]):
    """``(owner, object)`` for a module and the classes and functions defined in it."""
    yield module.__name__, module
    for name, value in vars(module).items():
        if id(value) in seen or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value):
            seen.add(id(value))
            yield f"{module.__name__}.{name}", value
            yield from _members(value, f"{module.__name__}.{name}", module.__name__, seen)
        elif inspect.isfunction(value):
            seen.add(id(value))
            yield f"{module.__name__}.{name}", value


def modules() -> list[ModuleType]:
    names = [pyg_infdiff.__name__] + [
        info.name for info in pkgutil.walk_packages(pyg_infdiff.__path__, "pyg_infdiff.")]
    return [importlib.import_module(name) for name in names if name not in EXCLUDED_MODULES]


def discover() -> list[Example]:
    examples, seen = [], set()
    for module in modules():
        for owner, obj in documented_objects(module, seen):
            doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
            if not doc:
                continue
            found = parse_docstring(doc)
            if not found:
                continue
            path, start = _source(obj)
            opening = _docstring_line(path, start)
            for index, (offset, code, kind, origin, skip) in enumerate(found):
                line = opening + offset if opening else 0
                if line and path is not None:  # check the mapping; else report no line
                    source = path.read_text(encoding="utf-8").splitlines()
                    first = code.strip().splitlines()[0].strip()
                    if line > len(source) or source[line - 1].strip() != first:
                        line = 0
                examples.append(Example(owner, index, code, kind, origin, path, line, skip))
    return examples


EXAMPLES = discover()


def test_examples_found():
    ids = {example.id for example in EXAMPLES}
    missing = KNOWN - ids
    assert not missing, f"docstring examples not discovered: {sorted(missing)}"
    assert len(ids) == len(EXAMPLES), "two examples share an id"


def test_every_code_block_discovered():
    """Every Python ``.. code-block::`` written in the package's sources is discovered (none hides
    in a docstring that the walk over modules, classes and functions does not reach)."""
    written = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = DIRECTIVE.match(line)
            if match is not None and match["lang"].lower() in PYTHON | DOCTEST:
                written.append(f"{path.relative_to(ROOT)}:{number}")
    discovered = [e for e in EXAMPLES if e.origin == "code-block"]
    assert len(discovered) == len(written), (
        f"python code-blocks in the sources: {written}; discovered: {[e.id for e in discovered]}")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_docstring_example(example: Example, tmp_path, monkeypatch):
    if example.skip is not None:
        pytest.skip(example.skip)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    filename = str(example.path) if example.path is not None else example.owner
    namespace = {"__name__": "__main__", "__file__": str(tmp_path / "example.py")}
    if example.kind == "doctest":
        test = doctest.DocTestParser().get_doctest(
            example.code, namespace, example.id, filename, max(example.line - 1, 0))
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        output: list[str] = []
        runner.run(test, out=output.append)
        assert runner.failures == 0, "".join(output)
        return
    # Leading newlines make tracebacks point at the lines of the source file.
    code = compile("\n" * max(example.line - 1, 0) + example.code, filename, "exec")
    exec(code, namespace)
