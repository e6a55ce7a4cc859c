"""The fenced code blocks of a Markdown file, for the tests that run or check them
(test_snippets.py, test_commands.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")


@dataclass(frozen=True)
class Block:
    start: int  # 0-based index of the opening fence line
    end: int  # 0-based index of the closing fence line
    info: str  # the info string after the opening fence ("python", "bash", ...)
    indent: int  # the opening fence's indentation


def fenced_blocks(path: Path, lines: list[str]) -> list[Block]:
    r"""The fenced blocks of :obj:`lines` (the lines of :obj:`path`): fences of backticks or
    tildes, nested fences respected (a ```python inside a longer ```` fence is text, not
    code). Raises :class:`ValueError` for a fence that is never closed."""
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence = match["fence"]
        end = i + 1
        while end < len(lines):
            close = FENCE.match(lines[end])
            if (close is not None and close["info"] == "" and close["fence"][0] == fence[0]
                    and len(close["fence"]) >= len(fence)):
                break
            end += 1
        else:
            raise ValueError(f"{path}:{i + 1}: code fence {fence!r} is never closed")
        blocks.append(Block(i, end, match["info"].strip(), len(match["indent"])))
        i = end + 1
    return blocks


def documents(*extra: str) -> list[Path]:
    r"""The Markdown pages of ``docs/`` (not its build) and the README, then :obj:`extra`
    files of the repository root that exist."""
    docs = [p for p in sorted((ROOT / "docs").rglob("*.md")) if "_build" not in p.parts]
    return docs + [p for p in (ROOT / name for name in ("README.md", *extra)) if p.is_file()]
