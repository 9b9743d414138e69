"""A small XML writer with fixed prefixes.

ElementTree picks prefixes from a process-wide registry (``register_namespace``)
or makes up ``ns0``; an envelope read by VMware, VirtualBox and XenCenter wants
the prefixes every exporter uses (``ovf``, ``rasd``, ``vssd``) and the OVF
namespace as the default one, declared once on the root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

# Characters XML 1.0 cannot carry at all, even escaped.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# A bare CR in text would come back as LF.
_TEXT = {"\r": "&#13;"}


def invalid_chars(text: str) -> bool:
    return _INVALID.search(text) is not None


def clean(text: str) -> str:
    return _INVALID.sub("\ufffd", text)


@dataclass
class Node:
    """An element named ``prefix:local`` (no prefix: the default namespace)."""

    tag: str
    attrs: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    children: list[Node] = field(default_factory=list)

    def add(self, tag: str, text: str | None = None, **attrs: str) -> Node:
        child = Node(tag, [(_attr_name(k), v) for k, v in attrs.items()], text)
        self.children.append(child)
        return child

    def append(self, child: Node) -> Node:
        self.children.append(child)
        return child


def _attr_name(key: str) -> str:
    """``ovf_id`` → ``ovf:id``: keyword arguments cannot hold a colon."""
    prefix, _, local = key.partition("_")
    return f"{prefix}:{local}" if local else key


def render(root: Node, namespaces: dict[str, str]) -> bytes:
    """The document, UTF-8, with ``namespaces`` (prefix → URI, ``""`` for the
    default) declared on ``root``, indented by two spaces."""
    decls = [("xmlns" if not p else f"xmlns:{p}", uri) for p, uri in namespaces.items()]
    top = Node(root.tag, decls + root.attrs, root.text, root.children)
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _emit(top, 0, out)
    return "".join(out).encode("utf-8")


def _emit(node: Node, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    attrs = "".join(f" {k}={quoteattr(clean(v))}" for k, v in node.attrs)
    if not node.children:
        if node.text is None:
            out.append(f"{pad}<{node.tag}{attrs}/>\n")
        else:
            out.append(f"{pad}<{node.tag}{attrs}>{escape(clean(node.text), _TEXT)}</{node.tag}>\n")
        return
    out.append(f"{pad}<{node.tag}{attrs}>")
    if node.text is not None:
        out.append(escape(clean(node.text), _TEXT))
    out.append("\n")
    for child in node.children:
        _emit(child, depth + 1, out)
    out.append(f"{pad}</{node.tag}>\n")
