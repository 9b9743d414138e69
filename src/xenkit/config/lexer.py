"""The tokens of libxlu's xl.cfg lexer, with every byte of the input kept.

xl's lexer (``tools/libs/util/libxlu_cfg_l.l``) throws blanks and comments
away; ours keeps them as tokens of their own so that a file can be written back
byte for byte. Everything else follows flex's longest-match rules exactly,
including what is an error: an upper-case letter, a ``\\r``, a comment on the
last line with no newline after it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass


class T(enum.Enum):
    IDENT = "IDENT"
    NUMBER = "NUMBER"
    STRING = "STRING"
    COMMA = "','"
    LBRACKET = "'['"
    RBRACKET = "']'"
    ASSIGN = "'='"
    APPEND = "'+='"
    SEMICOLON = "';'"
    NEWLINE = "NEWLINE"
    COMMENT = "COMMENT"
    BLANK = "BLANK"
    ERROR = "ERROR"


TRIVIA = frozenset({T.BLANK, T.COMMENT})


@dataclass(slots=True)
class Token:
    """One token; ``line`` and ``column`` are 1-based, 0 for synthesised tokens."""

    kind: T
    text: str
    line: int = 0
    column: int = 0
    likely_python: bool = False


_MASTER = re.compile(
    r"""
      (?P<IDENT>[a-z][._0-9a-z]*)
    | (?P<NUMBER>[0-9][0-9a-fx]*)
    | (?P<BLANK>[ \t]+)
    | (?P<NEWLINE>\n)
    | (?P<COMMENT>\#[^\n]*(?=\n))
    | (?P<STRING>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    | (?P<APPEND>\+=)
    | (?P<COMMA>,)
    | (?P<LBRACKET>\[)
    | (?P<RBRACKET>\])
    | (?P<ASSIGN>=)
    | (?P<SEMICOLON>;)
    | (?P<ERROR>.[^ \t\n]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_KINDS = {name: T[name] for name in _MASTER.groupindex}
_PYTHON_CHARS = frozenset("+,-.():")


def tokenize(text: str) -> Iterator[Token]:
    """Yield the tokens of ``text``; their texts concatenate to ``text``.

    Lexical errors become ERROR tokens holding the text flex would have put in
    its error state (the bad character and the rest of that word).
    """
    line = 1
    line_start = 0
    newline = T.NEWLINE
    error = T.ERROR
    kinds = _KINDS
    for m in _MASTER.finditer(text):
        kind = kinds[m.lastgroup]  # type: ignore[index]
        start = m.start()
        if kind is newline:
            yield Token(kind, "\n", line, start - line_start + 1)
            line += 1
            line_start = start + 1
        elif kind is error:
            word = m.group()
            yield Token(kind, word, line, start - line_start + 1, word[0] in _PYTHON_CHARS)
        else:
            yield Token(kind, m.group(), line, start - line_start + 1)
