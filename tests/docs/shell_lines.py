"""Shell command lines as the docs write them: the commands of a shell block and the words of
each command, for tests/docs/test_commands.py."""
from __future__ import annotations

import re
import shlex

ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "2>", "2>>"}


def split_commands(text: str) -> list[list[str]]:
    """The commands of one (continuation-joined) shell line as word lists: comments dropped,
    split at ``&&``, ``||``, ``;``, ``|``, redirections and ``VAR=value`` prefixes removed."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in SEPARATORS:
            commands.append(words)
            words = []
        elif token in REDIRECTS or (token.isdigit() and i + 1 < len(tokens)
                                    and tokens[i + 1] in REDIRECTS):
            i += 1 if token.isdigit() else 2  # drop the operator and its target
            continue
        else:
            words.append(token)
        i += 1
    commands.append(words)
    out = []
    for words in commands:
        while words and (ENV.match(words[0]) or words[0] in ("sudo", "env", "time", "exec")):
            words = words[1:]
        if words:
            out.append(words)
    return out


def shell_lines(lines: list[str], first_line: int) -> list[tuple[int, str]]:
    """``(line number, text)`` of the command lines of a shell block, continuations joined. In a
    block with ``$`` prompts only the prompted lines are commands (the others are output)."""
    prompted = any(line.strip().startswith("$ ") for line in lines)
    out, i = [], 0
    while i < len(lines):
        start, text = first_line + i, lines[i].strip()
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        if prompted and not text.startswith("$ "):
            text = ""
        text = text[2:] if prompted else text
        if text and not text.startswith("#"):
            out.append((start, text))
        i += 1
    return out
