"""An XVA checker written only from the format's description (research notes §3),
sharing no code with xenkit's writer or reader, so the two cannot agree on a
mistake.

The rules checked: a tar whose first member is ``ova.xml`` and which has no
directory entries; ``ova.xml`` an XML-RPC struct of ``version`` and ``objects``;
per VDI of a non-CD VBD, in the string order of the VDI ids, members
``<id>/%08d`` with strictly increasing names, each followed by
``<id>/%08d.checksum`` (lowercase SHA-1 hex) or ``.xxhash`` (XXH64 seed 0,
``%016X``); chunk 0 and the last chunk present; gaps are zeros as long as the
first chunk, the first of the whole stream as xapi's importer counts it
(stream_vdi.ml keeps one ``firstchunklength`` for all VDIs); the chunks end
exactly at the VDI's virtual_size.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import xxhash


@dataclass(frozen=True)
class Typed:
    """An XML-RPC value with the element it was written as (``string`` for an
    untyped ``<value>``)."""

    kind: str
    value: Any


def typed(elem: ET.Element) -> Typed:
    assert elem.tag == "value", elem.tag
    children = list(elem)
    if not children:
        return Typed("string", elem.text or "")
    assert len(children) == 1, [c.tag for c in children]
    child = children[0]
    if child.tag == "struct":
        members = {}
        for m in child:
            assert m.tag == "member"
            name = m.find("name")
            value = m.find("value")
            assert name is not None and value is not None
            members[name.text or ""] = typed(value)
        return Typed("struct", members)
    if child.tag == "array":
        data = child.find("data")
        return Typed("array", [] if data is None else [typed(v) for v in data])
    return Typed(child.tag, (child.text or "").strip())


def plain(t: Typed) -> Any:
    """The value without the types: structs as dicts, arrays as lists, text as text."""
    if t.kind == "struct":
        return {k: plain(v) for k, v in t.value.items()}
    if t.kind == "array":
        return [plain(v) for v in t.value]
    return t.value


@dataclass
class Checked:
    objects: list[dict[str, Any]]
    typed_objects: list[dict[str, Typed]]
    disks: dict[str, bytes] = field(default_factory=dict)
    chunks: dict[str, list[int]] = field(default_factory=dict)
    checksum_kinds: set[str] = field(default_factory=set)


def check_xva(data: bytes) -> Checked:
    """Check ``data`` against the rules above; return the objects and each VDI's
    reassembled bytes. Fails with AssertionError."""
    assert len(data) % 512 == 0, "a tar is whole 512-byte blocks"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return _check(data, tar)


def _check(data: bytes, tar: tarfile.TarFile) -> Checked:
    members = iter(tar)
    first = next(members)
    assert first.name == "ova.xml", first.name
    assert first.isfile()
    f = tar.extractfile(first)
    assert f is not None
    root = typed(ET.fromstring(f.read()))
    assert root.kind == "struct" and set(root.value) == {"version", "objects"}
    version = plain(root.value["version"])
    assert version["export_vsn"] == "2"
    typed_objects = [o.value for o in root.value["objects"].value]
    objects = [plain(Typed("struct", o)) for o in typed_objects]
    by_id = {o["id"]: o for o in objects}
    vdi_ids = set()
    for o in objects:
        if o["class"] == "VBD" and o["snapshot"]["type"] != "CD":
            vdi_ids.add(o["snapshot"]["VDI"])
    result = Checked(objects, typed_objects)
    order = sorted(vdi_ids)
    pending = _files(tar, members)
    pos = 0
    first_len: int | None = None
    for vdi_id in order:
        size = int(by_id[vdi_id]["snapshot"]["virtual_size"])
        disk = bytearray()
        names: list[int] = []
        while len(disk) < size:
            assert pos + 1 < len(pending), f"{vdi_id}: the tar ends at {len(disk)} of {size} bytes"
            name, content = pending[pos]
            pos += 1
            prefix, _, number = name.partition("/")
            assert prefix == vdi_id, f"{name}: expected a chunk of {vdi_id}"
            assert len(number) == 8 and number.isdigit(), name
            n = int(number)
            assert not names or n > names[-1], f"{name} does not increase"
            if first_len is None:
                first_len = len(content)
            gap = n - (names[-1] if names else -1) - 1
            disk += bytes(gap * first_len)
            disk += content
            names.append(n)
            csum_name, csum = pending[pos]
            pos += 1
            assert csum_name in (name + ".checksum", name + ".xxhash"), csum_name
            if csum_name.endswith(".checksum"):
                assert csum.decode() == hashlib.sha1(content).hexdigest(), csum_name
                result.checksum_kinds.add("sha1")
            else:
                assert csum.decode() == f"{xxhash.xxh64(content, seed=0).intdigest():016X}"
                result.checksum_kinds.add("xxhash")
        assert len(disk) == size, f"{vdi_id}: {len(disk)} bytes for virtual_size {size}"
        if size:
            assert names[0] == 0, f"{vdi_id}: no chunk 0"
            assert names[-1] == (size - 1) // (1 << 20), f"{vdi_id}: no last chunk"
        result.disks[vdi_id] = bytes(disk)
        result.chunks[vdi_id] = names
    assert pos == len(pending), f"members after the last VDI: {pending[pos][0]}"
    assert data[-1024:] == bytes(1024), "the tar ends with two zero blocks"
    return result


def _files(tar: tarfile.TarFile, members: Any) -> list[tuple[str, bytes]]:
    out = []
    for m in members:
        assert not m.isdir(), f"directory entry {m.name}"
        assert m.isfile(), f"{m.name} is not a regular file"
        f = tar.extractfile(m)
        assert f is not None
        out.append((m.name, f.read()))
    return out
