"""Reading OVF XML the way exporters actually write it.

Namespaces vary (``envelope/1`` or ``/2``, attributes qualified or not, items
in ``rasd``, ``sasd`` or a misspelt ``epasd``), sections may be written
generically (``<Section xsi:type="ovf:DiskSection_Type">``), ovftool's own
tests spell ``InstanceId``, and XenCenter declares ``encoding="utf-16"`` on a
file it wrote in UTF-8. These helpers make the rest of the reader indifferent
to all of that.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from xenkit.core.errors import UsageError
from xenkit.motion.ovf import vocab

_UTF16_DECL = re.compile(rb"""^(<\?xml[^>]*encoding\s*=\s*["'])utf-16(["'])""", re.IGNORECASE)


def parse_xml(data: bytes, source: str) -> ET.Element:
    if not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # XenOvfApi serialises through a .NET string (UTF-16) but saves UTF-8.
        data = _UTF16_DECL.sub(rb"\1utf-8\2", data, count=1)
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise UsageError(
            f"{source}: not well-formed XML: {e}",
            hint="the envelope is damaged or not an OVF; check it with xmllint",
        ) from None


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def is_ovf(el: ET.Element) -> bool:
    return namespace(el.tag) in vocab.OVF_NAMESPACES


def attr(el: ET.Element, name: str) -> str | None:
    """An OVF attribute, qualified in either envelope namespace or not at all."""
    for candidate in (f"{{{vocab.OVF1}}}{name}", f"{{{vocab.OVF2}}}{name}", name):
        value = el.get(candidate)
        if value is not None:
            return value
    return None


def any_attr(el: ET.Element, name: str) -> str | None:
    """An attribute of that local name in any namespace (``xci:ovfId``...)."""
    for k, v in el.attrib.items():
        if local(k) == name:
            return v
    return None


def kind(el: ET.Element) -> str:
    """What an element is: its local name, or for the generic ``Section`` and
    ``Content`` its ``xsi:type`` without prefix and ``_Type``."""
    name = local(el.tag)
    xsi_type = el.get(f"{{{vocab.XSI}}}type")
    if name in ("Section", "Content") and xsi_type:
        t = xsi_type.rpartition(":")[2]
        return t.removesuffix("_Type")
    return name


def required(el: ET.Element) -> bool:
    """``ovf:required`` defaults to true: a reader that does not understand a
    required section must refuse the package (DSP0243 §9)."""
    return (attr(el, "required") or "true").strip().lower() != "false"


def text(el: ET.Element | None) -> str:
    if el is None or el.text is None:
        return ""
    return el.text.strip()


def child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if kind(c) == name:
            return c
    return None


def children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if kind(c) == name]


def props(item: ET.Element) -> dict[str, list[str]]:
    """An item's properties by lower-cased local name (some repeat:
    ``Connection``, ``HostResource``)."""
    out: dict[str, list[str]] = {}
    for c in item:
        out.setdefault(local(c.tag).lower(), []).append(text(c))
    return out


def label(el: ET.Element) -> str:
    """How a loss names an element: ``vmw:Config``, ``xenovf:Foo``, ``Foo``."""
    ns = namespace(el.tag)
    prefix = {
        vocab.VMW: "vmw:",
        vocab.VBOX: "vbox:",
        vocab.XENOVF: "xenovf:",
        vocab.XCI: "xci:",
    }.get(ns, "" if ns in vocab.OVF_NAMESPACES or not ns else f"{{{ns}}}")
    return prefix + kind(el)
