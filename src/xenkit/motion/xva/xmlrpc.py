"""The XML-RPC value encoding ``ova.xml`` uses, both ways.

xapi writes int64 values as untyped ``<value>`` text (XML-RPC's ``<i4>`` is too
small) and reads an integer field from either form, so xenkit writes integers as
text and reads ``<i4>``/``<int>``/``<i8>`` or text. Booleans, doubles and
datetimes keep their XML-RPC element: xapi's decoders want them typed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final, TypeAlias
from xml.sax.saxutils import escape

from xenkit.core.errors import UsageError


@dataclass(frozen=True, slots=True)
class DateTime:
    """An XML-RPC ``dateTime.iso8601``, kept as xapi's text (``19700101T00:00:00Z``)."""

    text: str


Value: TypeAlias = "str | int | bool | float | DateTime | list[Value] | dict[str, Value]"

EPOCH: Final = DateTime("19700101T00:00:00Z")

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def encode(value: Value) -> str:
    """``<value>...</value>`` for one Python value (see :data:`Value`)."""
    parts: list[str] = []
    _encode(value, parts, "ova.xml")
    return "".join(parts)


def _text(s: str, where: str) -> str:
    if _NOT_XML.search(s):
        raise UsageError(
            f"{where}: {s!r} has characters XML cannot carry",
            hint="remove control characters from the value",
        )
    return escape(s)


def _encode(value: Value, out: list[str], where: str) -> None:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>")
    elif isinstance(value, int):
        out.append(f"<value>{value}</value>")
    elif isinstance(value, float):
        out.append(f"<value><double>{value!r}</double></value>")
    elif isinstance(value, str):
        out.append(f"<value>{_text(value, where)}</value>" if value else "<value/>")
    elif isinstance(value, DateTime):
        out.append(
            f"<value><dateTime.iso8601>{_text(value.text, where)}</dateTime.iso8601></value>"
        )
    elif isinstance(value, list):
        out.append("<value><array><data>")
        for item in value:
            _encode(item, out, where)
        out.append("</data></array></value>")
    else:
        out.append("<value><struct>")
        for key, item in value.items():
            out.append(f"<member><name>{_text(key, where)}</name>")
            _encode(item, out, f"{where}: {key}")
            out.append("</member>")
        out.append("</struct></value>")


class BadXml(UsageError):
    """``ova.xml`` is not the XML-RPC value an XVA carries."""


def decode(data: bytes) -> Value:
    """The Python value of an XML-RPC ``<value>`` document."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise BadXml(
            f"ova.xml is not XML: {e}", hint="the XVA is damaged or was not written by xapi"
        ) from None
    return _decode(root)


def _bad(elem: ET.Element, why: str) -> BadXml:
    return BadXml(f"ova.xml: <{elem.tag}> {why}", hint="the XVA is damaged or not an XVA")


def _decode(elem: ET.Element) -> Value:
    if elem.tag != "value":
        raise _bad(elem, "where <value> was expected")
    children = list(elem)
    if not children:
        return elem.text or ""
    if len(children) > 1:
        raise _bad(elem, "holds more than one element")
    typed = children[0]
    tag, text = typed.tag, (typed.text or "").strip()
    try:
        if tag == "string":
            return typed.text or ""
        if tag in ("i4", "int", "i8"):
            return int(text)
        if tag == "boolean":
            return {"0": False, "1": True, "false": False, "true": True}[text]
        if tag == "double":
            return float(text)
    except (KeyError, ValueError):
        raise _bad(typed, f"holds {text!r}") from None
    if tag == "dateTime.iso8601":
        return DateTime(text)
    if tag == "struct":
        return _struct(typed)
    if tag == "array":
        data = typed.find("data")
        return [] if data is None else [_decode(v) for v in data]
    raise _bad(typed, "is not an XML-RPC type ova.xml uses")


def _struct(elem: ET.Element) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for member in elem:
        name, value = member.find("name"), member.find("value")
        if member.tag != "member" or name is None or value is None:
            raise _bad(member, "is not a <member> with a <name> and a <value>")
        out[name.text or ""] = _decode(value)
    return out
