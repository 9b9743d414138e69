"""Quoted strings and C numbers, exactly as libxlu reads them.

Two quirks of Xen 4.17's ``xlu__cfgl_dequote`` are reproduced on purpose,
because a config must mean here what it means to xl:

* ``\\xHH`` is always rejected ("invalid digit after backslash hex numerical
  character escape"): the length check can never pass.
* ``\\NNN`` ("octal") is read in base 10 from the digits after the first one,
  needs at least two of them, and then produces *no* character at all.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

_SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}
_ENCODE = {
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}


@dataclass
class StringError(Exception):
    """A bad escape; ``offset`` is from the opening quote, ``partial`` what xl kept."""

    reason: str
    offset: int
    partial: str


def dequote(token: str) -> str:
    """The value of a STRING token (quotes included)."""
    assert len(token) >= 2 and token[0] == token[-1]
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c != "\\":
            out.append(c)
            continue
        nc = body[i]
        i += 1
        if nc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nc])
        elif nc == "x":
            raise StringError(
                "invalid digit after backslash hex numerical character escape in quoted string",
                i,
                "".join(out),
            )
        elif "0" <= nc <= "7":
            digits = _strtoul_end(token[1 + i : 1 + i + 3])
            if digits <= 1:
                raise StringError(
                    "invalid digit after backslash octal numerical character escape"
                    " in quoted string",
                    i,
                    "".join(out),
                )
            i += digits
        else:
            raise StringError("invalid character after backslash in quoted string", i, "".join(out))
    return "".join(out)


def _strtoul_end(numbuf: str) -> int:
    """How far ``strtoul(numbuf, &ep, 10)`` reads: blanks, a sign, then digits."""
    i = 0
    while i < len(numbuf) and numbuf[i] in _C_SPACE:
        i += 1
    if i < len(numbuf) and numbuf[i] in "+-":
        i += 1
    count = _leading(numbuf[i:], string.digits)
    return i + count if count else 0


def _leading(text: str, alphabet: str) -> int:
    n = 0
    while n < len(text) and text[n] in alphabet:
        n += 1
    return n


def quote(value: str) -> str:
    """A STRING token whose value is ``value``; double quotes unless single need no escapes."""
    q = "'" if '"' in value and "'" not in value else '"'
    escaped = "".join(_ENCODE.get(c, "\\" + c if c == q else c) for c in value)
    return f"{q}{escaped}{q}"


class NumberError(ValueError):
    """Why a value is not a C ``long``, in xl's words."""


LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
_C_SPACE = " \t\n\v\f\r"


def c_long(text: str) -> int:
    """``strtol(text, &end, 0)`` that must consume all of ``text``, as xl requires."""
    if text.isascii() and text.isdigit() and (text[0] != "0" or len(text) == 1) and len(text) < 19:
        return int(text)
    i = 0
    n = len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    base = 10
    if text.startswith(("0x", "0X"), i) and i + 2 < n and text[i + 2] in string.hexdigits:
        base = 16
        i += 2
    elif i < n and text[i] == "0":
        base = 8
    alphabet = {10: string.digits, 8: string.octdigits, 16: string.hexdigits}[base]
    count = _leading(text[i:], alphabet)
    if count == 0 or i + count != n:
        raise NumberError("is not a valid number")
    value = int(text[i : i + count], base)
    value = -value if negative else value
    if not LONG_MIN <= value <= LONG_MAX:
        raise NumberError("could not be parsed as a number: Numerical result out of range")
    return value
