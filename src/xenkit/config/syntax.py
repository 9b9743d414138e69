"""A lossless syntax tree of an xl.cfg file.

The parser accepts exactly the language of libxlu's bison grammar
(``tools/libs/util/libxlu_cfg_y.y``)::

    file       : stmts | stmts assignment
    stmt       : assignment endstmt | endstmt | error NEWLINE
    assignment : IDENT ('=' | '+=') value
    endstmt    : NEWLINE | ';'
    value      : atom | '[' nlok valuelist ']'
    valuelist  : <empty> | values | values ',' nlok
    values     : value nlok | values ',' nlok value nlok

but keeps every token, blanks and comments included, so that ``str(doc)`` is
the input again. Like bison's ``error NEWLINE`` rule it recovers at the next
newline, so one pass finds every broken statement, and the broken text is
kept verbatim in an ``ErrorNode``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xenkit.config.errors import ConfigError, Location
from xenkit.config.lexer import T, Token, tokenize
from xenkit.config.strings import StringError, dequote


class Node:
    """A tree node: an ordered list of tokens and child nodes."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Token | Node]) -> None:
        self.parts = parts

    def __str__(self) -> str:
        return "".join(str(p) if isinstance(p, Node) else p.text for p in self.parts)

    def tokens(self) -> Iterator[Token]:
        for part in self.parts:
            if isinstance(part, Node):
                yield from part.tokens()
            else:
                yield part

    def first_token(self) -> Token:
        return next(self.tokens())


class Atom(Node):
    """A STRING or NUMBER token; for libxlu both are just strings."""

    __slots__ = ("token", "value")

    def __init__(self, token: Token, value: str) -> None:
        super().__init__([token])
        self.token = token
        self.value = value

    @property
    def is_number(self) -> bool:
        return self.token.kind is T.NUMBER


class ListValue(Node):
    """``[ ... ]``: items interleaved with commas, newlines and comments."""

    __slots__ = ()

    @property
    def items(self) -> list[Value]:
        return [p for p in self.parts if isinstance(p, Atom | ListValue)]


Value = Atom | ListValue


class Assignment(Node):
    """``key = value`` or ``key += value``."""

    __slots__ = ("key_token", "op_token", "value")

    def __init__(
        self, parts: list[Token | Node], key_token: Token, op_token: Token, value: Value
    ) -> None:
        super().__init__(parts)
        self.key_token = key_token
        self.op_token = op_token
        self.value = value

    @property
    def key(self) -> str:
        return self.key_token.text

    @property
    def appends(self) -> bool:
        return self.op_token.kind is T.APPEND

    def replace_value(self, value: Value) -> None:
        index = next(i for i, p in enumerate(self.parts) if p is self.value)
        self.parts[index] = value
        self.value = value


class ErrorNode(Node):
    """Text that does not parse, up to and including the next newline."""

    __slots__ = ()


@dataclass(slots=True)
class Document:
    """A whole file: top-level tokens, assignments and error nodes, in order."""

    source: str
    parts: list[Token | Node]
    errors: list[ConfigError] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(str(p) if isinstance(p, Node) else p.text for p in self.parts)

    @property
    def assignments(self) -> list[Assignment]:
        return [p for p in self.parts if isinstance(p, Assignment)]

    def location(self, token: Token) -> Location:
        return Location(self.source, token.line, token.column)

    def raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]


def parse_document(text: str, source: str = "<string>") -> Document:
    """Parse ``text`` into a Document; errors are collected, never raised."""
    return _Parser(text, source).parse()


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.tokens = list(tokenize(text))
        self.pos = 0
        self.source = source
        self.errors: list[ConfigError] = []
        self.likely_python = any(t.likely_python for t in self.tokens)
        self.last_line = text.count("\n") + 1
        previous: Token | None = None
        for tok in self.tokens:
            if tok.kind is T.ERROR:
                self._report(_SyntaxError(tok, ""), previous)
            previous = tok

    def parse(self) -> Document:
        parts: list[Token | Node] = []
        while self.pos < len(self.tokens):
            tok = self.tokens[self.pos]
            if tok.kind in _SKIP or tok.kind in (T.COMMENT, T.NEWLINE, T.SEMICOLON):
                parts.append(tok)
                self.pos += 1
                continue
            start = self.pos
            try:
                assignment = self._assignment()
                self._expect_end()
            except _SyntaxError as e:
                self._report(e)
                parts.append(self._recover(start))
                continue
            parts.append(assignment)
        return Document(self.source, parts, self._first_per_line())

    def _first_per_line(self) -> list[ConfigError]:
        """Like libxlu, report only the first error of each line."""
        seen: set[int] = set()
        errors = []
        for e in sorted(self.errors, key=lambda e: (e.location.line, e.location.column)):
            if e.location.line not in seen:
                seen.add(e.location.line)
                errors.append(e)
        return errors

    def _peek(self) -> Token | None:
        """The next significant token, without consuming blanks."""
        i = self.pos
        while i < len(self.tokens) and self.tokens[i].kind in _SKIP:
            i += 1
        return self.tokens[i] if i < len(self.tokens) else None

    def _next(self) -> Token | None:
        """The token at the cursor, after skipping (and keeping) blanks."""
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _blanks(self, parts: list[Token | Node]) -> None:
        while self.pos < len(self.tokens) and self.tokens[self.pos].kind in _SKIP:
            parts.append(self.tokens[self.pos])
            self.pos += 1

    def _take(self, parts: list[Token | Node], kinds: tuple[T, ...], expecting: str) -> Token:
        self._blanks(parts)
        tok = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        if tok is None or tok.kind not in kinds:
            raise _SyntaxError(tok, expecting)
        parts.append(tok)
        self.pos += 1
        return tok

    def _assignment(self) -> Assignment:
        parts: list[Token | Node] = []
        key = self._take(parts, (T.IDENT,), "IDENT")
        op = self._take(parts, (T.ASSIGN, T.APPEND), "+= or '='")
        self._blanks(parts)
        value = self._value()
        parts.append(value)
        return Assignment(parts, key, op, value)

    def _value(self) -> Value:
        tok = self._next()
        if tok is not None and tok.kind in (T.STRING, T.NUMBER):
            self.pos += 1
            return self._atom(tok)
        if tok is not None and tok.kind is T.LBRACKET:
            self.pos += 1
            return self._list(tok)
        raise _SyntaxError(tok, "STRING or NUMBER or '['")

    def _atom(self, tok: Token) -> Atom:
        if tok.kind is T.NUMBER:
            return Atom(tok, tok.text)
        try:
            value = dequote(tok.text)
        except StringError as e:
            self.errors.append(
                ConfigError(
                    e.reason,
                    Location(self.source, tok.line, tok.column + e.offset),
                    text=tok.text,
                )
            )
            value = e.partial
        return Atom(tok, value)

    def _nlok(self, parts: list[Token | Node]) -> None:
        while self.pos < len(self.tokens) and self.tokens[self.pos].kind in (
            T.BLANK,
            T.ERROR,
            T.COMMENT,
            T.NEWLINE,
        ):
            parts.append(self.tokens[self.pos])
            self.pos += 1

    def _list(self, open_tok: Token) -> ListValue:
        parts: list[Token | Node] = [open_tok]
        self._nlok(parts)
        expect_value = True
        while True:
            tok = self._next()
            if tok is not None and tok.kind is T.RBRACKET:
                parts.append(tok)
                self.pos += 1
                return ListValue(parts)
            if not expect_value:
                if tok is None or tok.kind is not T.COMMA:
                    raise _SyntaxError(tok, "',' or ']'")
                parts.append(tok)
                self.pos += 1
                self._nlok(parts)
                expect_value = True
                continue
            if tok is None or tok.kind not in (T.STRING, T.NUMBER, T.LBRACKET):
                raise _SyntaxError(tok, "STRING or NUMBER or '[' or ']'")
            parts.append(self._value())
            self._nlok(parts)
            expect_value = False

    def _expect_end(self) -> None:
        """An assignment ends at a newline, a ';', a comment or the end of the file."""
        tok = self._peek()
        if tok is None or tok.kind in (T.NEWLINE, T.SEMICOLON, T.COMMENT):
            return
        raise _SyntaxError(tok, "NEWLINE or ';'")

    def _recover(self, start: int) -> ErrorNode:
        stop = self.pos
        while stop < len(self.tokens) and self.tokens[stop].kind is not T.NEWLINE:
            stop += 1
        if stop < len(self.tokens):
            stop += 1
        stop = max(stop, start + 1)
        self.pos = stop
        return ErrorNode(list(self.tokens[start:stop]))

    def _report(self, e: _SyntaxError, previous: Token | None = None) -> None:
        tok = e.token
        hint = None
        if self.likely_python:
            hint = (
                "this looks like Python (an xm config); xl no longer runs Python:"
                " replace expressions with literal values"
            )
        if tok is None:
            loc = Location(self.source, self.last_line, 1)
            self.errors.append(
                ConfigError(f"syntax error: unexpected end of file, expecting {e.expecting}", loc)
            )
            return
        loc = Location(self.source, tok.line, tok.column)
        if tok.kind is T.ERROR and not e.expecting:
            reason = "lexical error"
            if tok.text.startswith("#"):
                hint = "a comment on the last line must end with a newline"
            elif tok.text.startswith("\r"):
                hint = "the file has DOS line endings (CRLF); xl needs LF only"
            elif previous is not None and previous.kind is T.NUMBER:
                hint = (
                    "numbers take no unit suffix; the key's unit is fixed (memory is in MiB,"
                    " see xl.cfg(5)); a string needs quotes"
                )
            elif tok.text[:1].isupper() and (previous is None or previous.kind is T.NEWLINE):
                hint = "key names are lower case"
            elif tok.text[:1].isalpha() or tok.text[:1] == "/":
                hint = "a string value needs quotes: \"...\" or '...'"
            self.errors.append(ConfigError(reason, loc, text=tok.text.rstrip("\r"), hint=hint))
            return
        shown = "<newline>" if tok.kind is T.NEWLINE else tok.text
        unexpected = tok.kind.value
        self.errors.append(
            ConfigError(
                f"syntax error, unexpected {unexpected}, expecting {e.expecting}",
                loc,
                text=shown,
                hint=hint,
            )
        )


_SKIP = (T.BLANK, T.ERROR)


class _SyntaxError(Exception):
    def __init__(self, token: Token | None, expecting: str) -> None:
        super().__init__(expecting)
        self.token = token
        self.expecting = expecting
