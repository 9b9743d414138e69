"""Lossless edits: each one rewrites only the tokens it changes.

A file edited here differs from the original only in the statement or list
item that was edited; comments, blank lines, quoting and layout elsewhere are
untouched, so a user's diff shows exactly the change.
"""

from __future__ import annotations

from collections.abc import Sequence

from xenkit.config.lexer import T, Token
from xenkit.config.strings import quote
from xenkit.config.syntax import Assignment, Atom, Document, ListValue, Node, Value
from xenkit.core.errors import UsageError

PyValue = str | int | bool | Sequence["PyValue"]


def make_value(value: PyValue) -> Value:
    """A syntax node for a Python value, in Xen's house style (``[ "a", "b" ]``)."""
    if isinstance(value, bool):
        return _number(str(int(value)))
    if isinstance(value, int):
        if value < 0:
            text = str(value)
            return Atom(Token(T.STRING, quote(text)), text)
        return _number(str(value))
    if isinstance(value, str):
        return Atom(Token(T.STRING, quote(value)), value)
    items = [make_value(v) for v in value]
    parts: list[Token | Node] = [Token(T.LBRACKET, "[")]
    if not items:
        parts.append(Token(T.RBRACKET, "]"))
        return ListValue(parts)
    parts.append(Token(T.BLANK, " "))
    for i, item in enumerate(items):
        if i:
            parts += [Token(T.COMMA, ","), Token(T.BLANK, " ")]
        parts.append(item)
    parts += [Token(T.BLANK, " "), Token(T.RBRACKET, "]")]
    return ListValue(parts)


def _number(text: str) -> Atom:
    return Atom(Token(T.NUMBER, text), text)


def _assignment(key: str, value: Value) -> Assignment:
    key_tok = Token(T.IDENT, key)
    op = Token(T.ASSIGN, "=")
    parts: list[Token | Node] = [key_tok, Token(T.BLANK, " "), op, Token(T.BLANK, " "), value]
    return Assignment(parts, key_tok, op, value)


def last_assignment(doc: Document, key: str) -> Assignment | None:
    found = [a for a in doc.assignments if a.key == key]
    return found[-1] if found else None


def set_value(doc: Document, key: str, value: Value) -> None:
    """Make ``key`` mean ``value``: rewrite its last assignment, or add one at the end."""
    last = last_assignment(doc, key)
    if last is None:
        if doc.parts and not str(doc).endswith("\n"):
            doc.parts.append(Token(T.NEWLINE, "\n"))
        doc.parts += [_assignment(key, value), Token(T.NEWLINE, "\n")]
        return
    if last.appends:
        last.op_token.kind = T.ASSIGN
        last.op_token.text = "="
    last.replace_value(value)


def unset(doc: Document, key: str) -> int:
    """Remove every assignment of ``key`` with the line it stood on; return how many."""
    removed = 0
    i = 0
    while i < len(doc.parts):
        part = doc.parts[i]
        if isinstance(part, Assignment) and part.key == key:
            start, stop = _statement_span(doc.parts, i)
            del doc.parts[start:stop]
            removed += 1
            i = start
            continue
        i += 1
    return removed


def _statement_span(parts: list[Token | Node], i: int) -> tuple[int, int]:
    """The slice to delete for the assignment at ``i``.

    Alone on its line, the whole line goes (indent, trailing blanks and comment,
    newline). Sharing a line through ``;``, only it and its own separator go.
    """
    start = i
    while start > 0 and _is_token(parts[start - 1], T.BLANK):
        start -= 1
    line_begins = start == 0 or _is_token(parts[start - 1], T.NEWLINE)
    stop = i + 1
    while stop < len(parts) and _is_token(parts[stop], T.BLANK):
        stop += 1
    if stop < len(parts) and _is_token(parts[stop], T.SEMICOLON):
        stop += 1
        while stop < len(parts) and _is_token(parts[stop], T.BLANK):
            stop += 1
        rest_empty = stop >= len(parts) or _is_token(parts[stop], T.NEWLINE, T.COMMENT)
        if not (line_begins and rest_empty):
            return (start if line_begins else i), stop
    if not line_begins:
        rest_empty = stop >= len(parts) or _is_token(parts[stop], T.NEWLINE, T.COMMENT)
        return (start if rest_empty else i), stop
    if stop < len(parts) and _is_token(parts[stop], T.COMMENT):
        stop += 1
    if stop < len(parts) and _is_token(parts[stop], T.NEWLINE):
        stop += 1
    return start, stop


def _is_token(part: Token | Node, *kinds: T) -> bool:
    return isinstance(part, Token) and part.kind in kinds


def _list_of(doc: Document, key: str) -> ListValue:
    last = last_assignment(doc, key)
    if last is None:
        raise UsageError(f"`{key}' is not set", hint=f"set it first: {key} = [ ... ]")
    if not isinstance(last.value, ListValue):
        raise UsageError(f"`{key}' is not a list", hint=f"write it as {key} = [ ... ]")
    return last.value


def append_item(doc: Document, key: str, item: Value) -> None:
    """Add ``item`` to the end of list ``key`` in the list's own layout.

    A list written one item per line gets a new line with the same indent;
    a one-line list gets ``, item`` before its closing bracket. A missing key
    becomes a one-item list.
    """
    if last_assignment(doc, key) is None:
        set_value(doc, key, make_value([]))
        lst = _list_of(doc, key)
        lst.parts[1:1] = [Token(T.BLANK, " "), item, Token(T.BLANK, " ")]
        return
    lst = _list_of(doc, key)
    parts = lst.parts
    values = [i for i, p in enumerate(parts) if isinstance(p, Atom | ListValue)]
    close = len(parts) - 1
    if not values:
        parts[close:close] = [Token(T.BLANK, " "), item, Token(T.BLANK, " ")]
        return
    last = values[-1]
    comma_after = next(
        (i for i in range(last + 1, close) if _is_token(parts[i], T.COMMA)),
        None,
    )
    multiline = any(_is_token(p, T.NEWLINE) for p in parts[last:close])
    if multiline:
        indent = _indent_before(parts, last)
        if comma_after is None:
            parts.insert(last + 1, Token(T.COMMA, ","))
            close += 1
            comma_after = last + 1
        newline_at = next(i for i in range(comma_after, close) if _is_token(parts[i], T.NEWLINE))
        new: list[Token | Node] = [*indent, item]
        new.append(Token(T.COMMA, ","))
        new.append(Token(T.NEWLINE, "\n"))
        parts[newline_at + 1 : newline_at + 1] = new
        return
    if comma_after is not None:
        parts[comma_after + 1 : comma_after + 1] = [Token(T.BLANK, " "), item]
    else:
        parts[last + 1 : last + 1] = [Token(T.COMMA, ","), Token(T.BLANK, " "), item]


def _indent_before(parts: list[Token | Node], index: int) -> list[Token | Node]:
    j = index
    while j > 0 and _is_token(parts[j - 1], T.BLANK):
        j -= 1
    return [Token(T.BLANK, t.text) for t in parts[j:index] if isinstance(t, Token)]


def replace_item(doc: Document, key: str, index: int, item: Value) -> None:
    """Replace item ``index`` of list ``key``; nothing around it changes."""
    lst = _list_of(doc, key)
    positions = [i for i, p in enumerate(lst.parts) if isinstance(p, Atom | ListValue)]
    if not -len(positions) <= index < len(positions):
        raise UsageError(
            f"`{key}' has {len(positions)} items; there is no item {index}",
            hint=f"items are numbered 0 to {len(positions) - 1}",
        )
    lst.parts[positions[index]] = item


def remove_item(doc: Document, key: str, index: int) -> None:
    """Remove item ``index`` of list ``key`` with its comma (and its line, if alone)."""
    lst = _list_of(doc, key)
    parts = lst.parts
    positions = [i for i, p in enumerate(parts) if isinstance(p, Atom | ListValue)]
    if not -len(positions) <= index < len(positions):
        raise UsageError(f"`{key}' has {len(positions)} items; there is no item {index}")
    index %= len(positions)
    at = positions[index]
    close = len(parts) - 1
    after = at + 1
    while after < close and _is_token(parts[after], T.BLANK):
        after += 1
    has_comma = after < close and _is_token(parts[after], T.COMMA)
    if has_comma:
        after += 1
    while after < close and _is_token(parts[after], T.BLANK):
        after += 1
    if after < close and _is_token(parts[after], T.COMMENT):
        after += 1
    line_start = at
    while line_start > 1 and _is_token(parts[line_start - 1], T.BLANK):
        line_start -= 1
    alone = _is_token(parts[line_start - 1], T.NEWLINE) and (
        after < close and _is_token(parts[after], T.NEWLINE)
    )
    if alone:
        del parts[line_start : after + 1]
    elif index + 1 < len(positions):
        stop = after
        while stop < close and _is_token(parts[stop], T.BLANK, T.NEWLINE):
            stop += 1
        del parts[at:stop]
    else:
        start = at
        while start > 1 and not _is_token(parts[start - 1], T.COMMA):
            if isinstance(parts[start - 1], Atom | ListValue):
                break
            start -= 1
        if start > 1 and _is_token(parts[start - 1], T.COMMA):
            start -= 1
            while start > 1 and _is_token(parts[start - 1], T.BLANK):
                start -= 1
        else:
            start = at
        del parts[start : at + 1 if not has_comma else after]
