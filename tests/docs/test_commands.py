"""Checks every command line that the documentation shows against the real argument parser of
the script it runs, without running the script's work, so a renamed or removed flag cannot
linger in the docs.

Sources: the ```bash (``sh``, ``shell``, ``console``) blocks of ``docs/**/*.md``, ``README.md``
and ``CONTRIBUTING.md``, the ``.. code-block:: bash`` blocks of the docstrings of
:mod:`pyg_infdiff` (the API reference), and the inline code spans of the Markdown files that are
commands of this repository (```python bench/noise.py --write``` in running text).

Shell syntax handled: backslash continuations, ``# comments``, ``&&``/``||``/``;``/``|`` between
commands, ``VAR=value`` prefixes, ``sudo``, redirections and a ``$`` prompt.

Commands checked (one test each, named ``file:line``):

* ``python examples/X.py ...``, ``python bench/X.py ...``, ``python docs/figures/X.py ...``;
* ``python -m pyg_infdiff.<module> ...`` (the module's ``__main__``);
* ``torchrun <torchrun options> examples/X.py ...``: the options against torchrun's own parser
  (:func:`torch.distributed.run.get_args_parser`), then the script's arguments as above.

How a script's arguments are parsed without running it: the script is imported as a module
(its ``if __name__ == "__main__":`` guard keeps it from running), then

1. if it has a ``parse_args(argv)`` function, that is called: it is the script's own parsing,
   including its checks after argparse (``p.error`` on bad combinations);
2. else if it has ``build_parser()``, its parser parses the arguments;
3. else its ``main`` is called (with ``argv``, or with ``sys.argv`` set when it takes none)
   while :meth:`argparse.ArgumentParser.parse_args` is patched to parse as usual and then raise a
   sentinel exception carrying the namespace: parsing happens exactly as in a real run
   (unknown flags, bad values, missing required arguments), and nothing after it runs. Scripts
   need no refactoring for this; a ``main`` that returns without parsing fails the test.

A parser error (argparse exits with status 2) fails the test with the file:line of the command
in the docs and argparse's message; ``--help`` (status 0) passes. Placeholders such as ``RUN``
or ``/data/celebahq`` pass wherever the parser takes a string or a path.

Other commands are not run: ``bash scripts/X.sh`` (the script must exist), and the tools in
:data:`OTHER_TOOLS` (``pip``, ``git``, ...). Any other command in a shell block fails
:func:`test_no_unknown_commands`, so that a new kind of command gets a rule here instead of
going unchecked.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from markdown_blocks import ROOT, documents, fenced_blocks
from shell_lines import shell_lines, split_commands

PACKAGE = ROOT / "pyg_infdiff"
SHELL = {"bash", "sh", "shell", "console", "shell-session"}
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\.\s+(?:code-block|code|sourcecode)::\s*(?P<lang>\S*)")
# An inline code span (within a paragraph) and one that starts like a command of this repository.
INLINE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(?P<code>(?:(?!\n\s*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
INLINE_COMMAND = re.compile(r"^(?:[A-Za-z_]\w*=\S*\s+)*(?:sudo\s+)?(?:python3?|torchrun|bash)\s")
# Directories whose Python scripts the docs run and whose arguments are checked.
SCRIPT_DIRS = ("examples", "bench", "docs/figures")
# Commands that are shown in the docs but not checked here (other people's tools).
OTHER_TOOLS = {"pip", "pip3", "git", "cd", "apt-get", "apt", "export", "source", "ruff",
               "pytest", "conda", "mkdir", "ls", "cat", "nvidia-smi"}
# `python -m X` of modules outside this package (their own tools).
OTHER_MODULES = {"sphinx", "pytest", "pip", "ruff", "venv", "torch.distributed.run"}
# At least this many command lines are checked against a parser (the guard against a discovery
# that silently finds nothing); raise it when the docs show more.
MIN_CHECKED = 40


@dataclass
class Command:
    path: Path
    line: int  # 1-based line where the command starts
    text: str  # as written, continuations joined
    argv: list[str]  # words after env assignments, sudo and redirections
    inline: bool = False  # from an inline code span (only commands of this repository)
    kind: str = field(init=False)  # "script", "module", "torchrun", "shell-script", "other"
    target: str = field(init=False)  # script path, module name, or the tool

    def __post_init__(self) -> None:
        self.kind, self.target = classify(self.argv)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


# ---------------------------------------------------------------------------------------------
# Extraction


def markdown_commands(path: Path) -> list[Command]:
    lines = path.read_text(encoding="utf-8").splitlines()
    commands, prose = [], list(lines)
    for block in fenced_blocks(path, lines):
        for k in range(block.start, min(block.end + 1, len(lines))):
            prose[k] = ""
        if (block.info.split() or [""])[0].lower() in SHELL:
            for number, text in shell_lines(lines[block.start + 1:block.end], block.start + 2):
                commands += [Command(path, number, text, words)
                             for words in split_commands(text)]
    # Inline code spans in the prose that are commands of this repository.
    text = "\n".join(prose)
    for span in INLINE_SPAN.finditer(text):
        code = " ".join(span["code"].split())
        if INLINE_COMMAND.match(code) is None:
            continue
        number = text.count("\n", 0, span.start()) + 1
        for words in split_commands(code):
            command = Command(path, number, code, words, inline=True)
            if command.kind in ("script", "module", "torchrun", "shell-script"):
                commands.append(command)
    return commands


def docstring_commands(path: Path) -> list[Command]:
    """The commands of the ``.. code-block:: bash`` blocks of a source file's docstrings."""
    lines = path.read_text(encoding="utf-8").splitlines()
    commands = []
    for i, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if match is None or match["lang"].lower() not in SHELL:
            continue
        indent, end, block = len(match["indent"]), i + 1, []
        while end < len(lines) and (not lines[end].strip()
                                    or len(lines[end]) - len(lines[end].lstrip()) > indent):
            block.append(lines[end])
            end += 1
        for number, text in shell_lines(block, i + 2):
            commands += [Command(path, number, text, words) for words in split_commands(text)]
    return commands


def classify(argv: list[str]) -> tuple[str, str]:
    tool = Path(argv[0]).name
    if tool in ("python", "python3") or re.fullmatch(r"python3\.\d+", tool):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
            rest = rest[1:]  # interpreter options (-u, -O, ...)
        if not rest or rest[0] == "-c":
            return "other", "python"
        if rest[0] == "-m":
            module = rest[1] if len(rest) > 1 else ""
            if module.split(".")[0] == "pyg_infdiff":
                return "module", module
            return "other", f"python -m {module}"
        return "script", rest[0]
    if tool == "torchrun":
        return "torchrun", "torchrun"
    if tool in ("bash", "sh") and len(argv) > 1:
        return "shell-script", argv[1]
    return "other", tool


COMMANDS = [c for path in documents("CONTRIBUTING.md") for c in markdown_commands(path)] + [
    c for path in sorted(PACKAGE.rglob("*.py")) for c in docstring_commands(path)]
CHECKED = [c for c in COMMANDS if c.kind in ("script", "module", "torchrun")]


def _ids(commands: list[Command]) -> list[str]:
    ids, seen = [], {}
    for c in commands:
        base = f"{c.where}:{c.target}"
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


# ---------------------------------------------------------------------------------------------
# Parsing a script's arguments without running it


class _Parsed(BaseException):  # not caught by a script's `except Exception`
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("arguments parsed")
        self.namespace = namespace


_MODULES: dict[str, ModuleType] = {}


def load_script(relative: str) -> ModuleType:
    """Imports a script of the repository by path, once, with its folder and the repository
    root on ``sys.path`` (bench scripts import their helpers as ``from _common import ...``)."""
    path = (ROOT / relative).resolve()
    if relative not in _MODULES:
        saved = list(sys.path)
        sys.path[:0] = [str(path.parent), str(ROOT)]
        try:
            name = "_doc_command_" + re.sub(r"\W", "_", relative)
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
        finally:
            # Keep the script's folder importable for its lazy imports, once.
            sys.path[:] = saved + [p for p in (str(path.parent),) if p not in saved]
        _MODULES[relative] = module
    return _MODULES[relative]


def parse(module: ModuleType, prog: str, argv: list[str],
          monkeypatch) -> argparse.ArgumentParser:
    """Parses ``argv`` as the script ``module`` would (see the module docstring) and returns the
    parser that parsed it; raises :class:`SystemExit` as argparse does on an error."""
    parsers: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args
    stop = False

    def record(self, args=None, namespace=None):
        parsers.append(self)
        namespace = original(self, args, namespace)
        if stop:
            raise _Parsed(namespace)
        return namespace

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record)
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    parse_args = getattr(module, "parse_args", None)
    build_parser = getattr(module, "build_parser", None)
    main = getattr(module, "main", None)
    if inspect.isfunction(parse_args):
        parse_args(argv)
    elif inspect.isfunction(build_parser):
        build_parser().parse_args(argv)
    else:
        assert callable(main), f"{prog} has no parse_args(argv), build_parser() or main()"
        stop = True
        try:
            if inspect.signature(main).parameters:
                main(argv)
            else:
                main()
        except _Parsed:
            pass
    assert parsers, f"{prog}: its argument parser was never called"
    return parsers[0]


def inexact_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The ``--flags`` of ``argv`` that are not spelt as the parser defines them: argparse also
    takes unambiguous abbreviations (``--repeat`` for ``--repeats``), which a new flag can make
    ambiguous later; the docs spell flags in full."""
    flags = []
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and token.split("=", 1)[0] not in parser._option_string_actions:
            flags.append(token.split("=", 1)[0])
    return flags


def check_arguments(command: Command, prog: str, module: ModuleType, argv: list[str],
                    monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parser = parse(module, prog, argv, monkeypatch)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            pytest.fail(f"{command.where}: the documented command\n    {command.text}\nis "
                        f"rejected by the parser of {prog}:\n{err.getvalue().strip()}",
                        pytrace=False)
        return  # --help
    inexact = inexact_flags(parser, argv)
    if inexact:
        pytest.fail(f"{command.where}: the documented command\n    {command.text}\nabbreviates "
                    f"flags of {prog}: {inexact}", pytrace=False)


def check_script(command: Command, script: str, argv: list[str], monkeypatch) -> None:
    path = ROOT / script
    if not path.is_file():
        pytest.fail(f"{command.where}: {script} does not exist (in `{command.text}`)",
                    pytrace=False)
    relative = path.resolve().relative_to(ROOT).as_posix()
    assert relative.startswith(tuple(d + "/" for d in SCRIPT_DIRS)), (
        f"{command.where}: {relative} is not in {SCRIPT_DIRS}; add its folder to SCRIPT_DIRS")
    check_arguments(command, relative, load_script(relative), argv, monkeypatch)


# ---------------------------------------------------------------------------------------------
# Tests


def test_commands_found():
    assert len(CHECKED) >= MIN_CHECKED, (
        f"only {len(CHECKED)} documented command lines checked (expected >= {MIN_CHECKED}): "
        f"{[c.where for c in CHECKED]}")
    kinds = {c.kind for c in CHECKED}
    assert {"script", "module", "torchrun"} <= kinds, kinds


def test_no_unknown_commands():
    unknown = [f"{c.where}: {c.text}" for c in COMMANDS
               if c.kind == "other" and c.target not in OTHER_TOOLS | {
                   f"python -m {m}" for m in OTHER_MODULES}]
    assert not unknown, (
        "commands in shell blocks that no rule here covers (check them, or add the tool to "
        f"OTHER_TOOLS): {unknown}")


def test_shell_scripts_exist():
    missing = [f"{c.where}: {c.target}" for c in COMMANDS
               if c.kind == "shell-script" and not (ROOT / c.target).is_file()]
    assert not missing, f"documented shell scripts that do not exist: {missing}"


@pytest.mark.parametrize("command", CHECKED, ids=_ids(CHECKED))
def test_command(command: Command, monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs run every command from the repository root
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if command.kind == "module":
        args = command.argv[command.argv.index("-m") + 2:]
        name = command.target
        spec = importlib.util.find_spec(name)
        if spec is None:
            pytest.fail(f"{command.where}: no module {name} (in `{command.text}`)", pytrace=False)
        if spec.submodule_search_locations is not None:  # a package: its __main__
            name += ".__main__"
        check_arguments(command, f"python -m {command.target}", importlib.import_module(name),
                        args, monkeypatch)
    elif command.kind == "script":
        words = command.argv[1:]
        while words[0].startswith("-"):
            words = words[1:]
        check_script(command, words[0], words[1:], monkeypatch)
    else:  # torchrun: its own options, then the script's
        from torch.distributed.run import get_args_parser

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = get_args_parser().parse_args(command.argv[1:])
        except SystemExit:
            pytest.fail(f"{command.where}: torchrun rejects the documented command\n    "
                        f"{command.text}\n{err.getvalue().strip()}", pytrace=False)
        script = args.training_script
        options = command.argv[1:command.argv.index(script, 1)]
        inexact = inexact_flags(get_args_parser(), options)
        if inexact:
            pytest.fail(f"{command.where}: the documented command\n    {command.text}\n"
                        f"abbreviates torchrun flags: {inexact}", pytrace=False)
        if args.module or args.no_python:
            pytest.fail(f"{command.where}: torchrun -m/--no-python is not handled here")
        if "/" not in script and not (ROOT / script).is_file():
            # A file the reader writes (e.g. train_ddp.py of the multi-GPU tutorial): only
            # torchrun's options can be checked.
            return
        check_script(command, script, list(args.training_script_args), monkeypatch)
