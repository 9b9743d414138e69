"""A fast reader for the common case: settings straight from text, no tree.

Reading a config to use it (``xenkit config show``, creating a domain) needs
its meaning, not its layout. This reader matches whole statements with one
regular expression each and builds the same ``Setting`` values that
``values.evaluate`` builds from the lossless tree. It handles what nearly every
real file holds (atoms, flat lists, comments, ``;``, ``+=``); on anything else
(nested lists, any error) it returns ``None`` and the caller uses the full
parser, which also produces the exact error messages. The two are checked
against each other by property tests.
"""

from __future__ import annotations

import re

from xenkit.config.errors import Location
from xenkit.config.strings import StringError, dequote
from xenkit.config.values import Items, Scalar, Setting, Value

_ATOM = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|[0-9][0-9a-fx]*"""
_END = r"[ \t]*(?:\#[^\n]*\n|\n|;|\Z)"
_STATEMENT = re.compile(
    rf"[ \t]*(?:([a-z][._0-9a-z]*)[ \t]*(\+?=)[ \t]*(?:({_ATOM}){_END}|(\[))|{_END})"
)
_STATEMENT_END = re.compile(_END)
_TRIVIA = r"(?:[ \t\n]|\#[^\n]*\n)*"
_ITEM = re.compile(rf"{_TRIVIA}(?:(\])|({_ATOM}){_TRIVIA}(?:,|(?=\])))")
_new = tuple.__new__


def read_settings(text: str, source: str) -> dict[str, Setting] | None:
    """Each key's final value, or ``None`` if the full parser must decide."""
    try:
        return _read(text, source)
    except _Bail:
        return None


def _read(text: str, source: str) -> dict[str, Setting] | None:
    settings: dict[str, Setting] = {}
    pos = 0
    end = len(text)
    line = 1
    line_start = 0
    statement = _STATEMENT.match
    while pos < end:
        m = statement(text, pos)
        if m is None:
            return None
        key = m.group(1)
        if key is None:
            nl = text.count("\n", pos, m.end())
            if nl:
                line += nl
                line_start = text.rindex("\n", pos, m.end()) + 1
            pos = m.end()
            continue
        key_loc = _new(Location, (source, line, m.start(1) - line_start + 1))
        value: Value
        if m.group(4) is None:
            token = m.group(3)
            value = Scalar(
                _value(token) if token[0] in "'\"" else token,
                _new(Location, (source, line, m.start(3) - line_start + 1)),
            )
            stop = m.end()
        else:
            parsed = _list(text, m.end(), source, line, line_start, m.start(4))
            if parsed is None:
                return None
            value, stop = parsed
        appends = m.group(2) == "+="
        prev = settings.get(key)
        assigned: tuple[Location, ...] = () if appends else (key_loc,)
        if prev is not None:
            assigned = prev.assigned + assigned
            if appends:
                if isinstance(prev.value, Scalar) and isinstance(value, Scalar):
                    value = Scalar(prev.value.text + value.text, value.location)
                elif isinstance(prev.value, Items) and isinstance(value, Items):
                    value = Items(prev.value.items + value.items, value.location)
                else:
                    return None
        settings[key] = Setting(key, value, appends, assigned)
        nl = text.count("\n", pos, stop)
        if nl:
            line += nl
            line_start = text.rindex("\n", pos, stop) + 1
        pos = stop
    return settings


def _value(token: str) -> str:
    if "\\" not in token:
        return token[1:-1]
    try:
        return dequote(token)
    except StringError:
        raise _Bail from None


class _Bail(Exception):
    pass


def _list(
    text: str, pos: int, source: str, line: int, line_start: int, open_at: int
) -> tuple[Items, int] | None:
    items: list[Value] = []
    item = _ITEM.match
    try:
        while True:
            m = item(text, pos)
            if m is None:
                return None
            if m.group(1) is not None:
                break
            token = m.group(2)
            start = m.start(2)
            nl = text.count("\n", open_at, start)
            if nl:
                item_line = line + nl
                col = start - text.rindex("\n", open_at, start)
            else:
                item_line = line
                col = start - line_start + 1
            items.append(
                Scalar(
                    _value(token) if token[0] in "'\"" else token,
                    _new(Location, (source, item_line, col)),
                )
            )
            pos = m.end()
    except _Bail:
        return None
    m = _STATEMENT_END.match(text, m.end())
    if m is None:
        return None
    return Items(tuple(items), _new(Location, (source, line, open_at - line_start + 1))), m.end()
