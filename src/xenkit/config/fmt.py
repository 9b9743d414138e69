"""Canonical layout of an xl.cfg file, meaning unchanged.

The rules, chosen to match Xen's own examples where they are consistent:
one statement per line as ``key = value``; strings in double quotes (single
quotes when the text holds a double quote and no single one); numbers as
written (``0x1f`` stays hex); lists on one line as ``[ "a", "b" ]`` when that
fits in 80 columns and holds no comment, otherwise one item per line,
indented by four spaces, each followed by a comma; comments kept where they
were, a trailing one after two spaces; no trailing blanks; at most one blank
line in a row and none at either end; one newline at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenkit.config.lexer import T, Token
from xenkit.config.strings import quote
from xenkit.config.syntax import Assignment, Atom, Document, ListValue, Value

WIDTH = 80
INDENT = "    "


def format_document(doc: Document) -> str:
    """The canonical text of a document that parsed without errors."""
    doc.raise_errors()
    lines: list[str] = []
    current: str | None = None

    def finish() -> None:
        nonlocal current
        if current is not None:
            lines.append(current)
            current = None

    saw_newline_only = True
    for part in doc.parts:
        if isinstance(part, Assignment):
            finish()
            current = render_assignment(part)
            saw_newline_only = False
        elif not isinstance(part, Token):
            raise AssertionError("documents with errors are refused above")
        elif part.kind is T.COMMENT:
            comment = part.text.rstrip()
            if current is not None:
                current = "\n".join([*current.split("\n")[:-1], _with_comment(current, comment)])
            else:
                current = comment
            saw_newline_only = False
        elif part.kind is T.NEWLINE:
            if current is None and saw_newline_only:
                lines.append("")
            finish()
            saw_newline_only = True
        elif part.kind is T.SEMICOLON:
            finish()
            saw_newline_only = False
    finish()
    return _tidy_blank_lines(lines)


def _with_comment(text: str, comment: str) -> str:
    last = text.split("\n")[-1]
    return f"{last}  {comment}"


def _tidy_blank_lines(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    while out and out[-1] == "":
        out.pop()
    return "".join(line + "\n" for line in out)


def render_assignment(a: Assignment) -> str:
    op = "+=" if a.appends else "="
    head = f"{a.key} {op} "
    return head + render_value(a.value, len(head), 0)


def render_value(value: Value, column: int, depth: int) -> str:
    if isinstance(value, Atom):
        return value.token.text if value.is_number else quote(value.value)
    entries = _entries(value)
    if not entries:
        return "[]"
    if not any(e.comment for e in entries):
        inline = (
            "[ " + ", ".join(render_value(e.item, 0, depth + 1) for e in entries if e.item) + " ]"
        )
        if "\n" not in inline and column + len(inline) <= WIDTH:
            return inline
    pad = INDENT * (depth + 1)
    out = ["["]
    for e in entries:
        if e.item is None:
            out.append(pad + e.comment)
            continue
        text = pad + render_value(e.item, len(pad), depth + 1) + ","
        if e.comment:
            text += "  " + e.comment
        out.append(text)
    out.append(INDENT * depth + "]")
    return "\n".join(out)


@dataclass(slots=True)
class _Entry:
    """A list item with its trailing comment, or a comment on a line of its own."""

    item: Value | None
    comment: str = ""


def _entries(lst: ListValue) -> list[_Entry]:
    entries: list[_Entry] = []
    newline_since_item = True
    for part in lst.parts:
        if isinstance(part, Atom | ListValue):
            entries.append(_Entry(part))
            newline_since_item = False
        elif isinstance(part, Token):
            if part.kind is T.NEWLINE:
                newline_since_item = True
            elif part.kind is T.COMMENT:
                text = part.text.rstrip()
                if entries and not newline_since_item and entries[-1].item is not None:
                    entries[-1].comment = text
                else:
                    entries.append(_Entry(None, text))
    return entries
