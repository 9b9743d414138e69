"""``ova.xml``, the XVA's first member: a version struct and the exported objects.

Each object is ``{class, id, snapshot}``: the class name (``VM``, ``VBD``...),
an id of the form ``Ref:N`` that the other records use to point at it, and the
full XenAPI record. References to anything not in the export are
``OpaqueRef:NULL``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Final

from xenkit import __version__
from xenkit.motion.xva.datamodel import FIELDS
from xenkit.motion.xva.errors import BadXva
from xenkit.motion.xva.xmlrpc import Value, decode, encode

EXPORT_VSN: Final = 2
"""Chunks followed by inline checksums, no checksum table at the end."""

XAPI_VERSION: Final = (1, 0)
"""What the export claims to come from. A host refuses an XVA from a newer xapi
than its own (``IMPORT_INCOMPATIBLE_VERSION``), and the number has no other
effect on import, so xenkit claims the oldest."""

Record = dict[str, Value]


@dataclass(frozen=True)
class XvaObject:
    cls: str
    id: str
    snapshot: Record


@dataclass(frozen=True)
class OvaXml:
    version: Record
    objects: tuple[XvaObject, ...]

    def by_id(self) -> dict[str, XvaObject]:
        return {o.id: o for o in self.objects}

    def of_class(self, cls: str) -> list[XvaObject]:
        return [o for o in self.objects if o.cls == cls]


def new_record(cls: str, **fields: Value) -> Record:
    """Every field of ``cls`` at its datamodel default, then ``fields``; the enum
    fields without a default must be among ``fields``."""
    record: Record = {}
    for name, default in FIELDS[cls]:
        if name in fields:
            record[name] = fields[name]
        elif default is None:
            raise ValueError(f"{cls}.{name} has no default: set it")
        else:
            record[name] = copy.copy(default)
    unknown = fields.keys() - record.keys()
    if unknown:
        raise ValueError(f"{cls} has no fields {sorted(unknown)}")
    return record


def version_record(date: str) -> Record:
    return {
        "hostname": "xenkit",
        "date": date,
        "product_version": __version__,
        "product_brand": "xenkit",
        "build_number": __version__,
        "xapi_major": XAPI_VERSION[0],
        "xapi_minor": XAPI_VERSION[1],
        "export_vsn": EXPORT_VSN,
    }


def render(ova: OvaXml) -> bytes:
    objects: list[Value] = [
        {"class": o.cls, "id": o.id, "snapshot": o.snapshot} for o in ova.objects
    ]
    document: Value = {"version": ova.version, "objects": objects}
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + encode(document) + "\n").encode()


def parse(data: bytes) -> OvaXml:
    document = decode(data)
    if not isinstance(document, dict):
        raise BadXva("ova.xml is not an XML-RPC struct")
    version, objects = document.get("version"), document.get("objects")
    if not isinstance(version, dict) or not isinstance(objects, list):
        raise BadXva("ova.xml has no 'version' struct and 'objects' array")
    out: list[XvaObject] = []
    for i, o in enumerate(objects):
        cls, id_, snapshot = (
            (o.get("class"), o.get("id"), o.get("snapshot")) if isinstance(o, dict) else (0, 0, 0)
        )
        if not isinstance(cls, str) or not isinstance(id_, str) or not isinstance(snapshot, dict):
            raise BadXva(f"ova.xml object {i} is not a {{class, id, snapshot}} struct")
        out.append(XvaObject(cls, id_, snapshot))
    return OvaXml(version, tuple(out))
