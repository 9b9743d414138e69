"""How an XVA cuts a VDI: 1 MiB chunks ``<VDI id>/%08d``, each followed by a
member holding its digest, ``.checksum`` (SHA-1, lowercase hex, every xapi) or
``.xxhash`` (XXH64 seed 0 as ``%016X``, Citrix Hypervisor 8.1 and later)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Final, Literal

import xxhash

from xenkit.motion.disk.base import Extent

Checksum = Literal["sha1", "xxhash"]

CHUNK: Final = 1 << 20
ZERO_CHUNK: Final = bytes(CHUNK)

EXTENSION: Final[dict[Checksum, str]] = {"sha1": ".checksum", "xxhash": ".xxhash"}
KIND_OF_EXTENSION: Final[dict[str, Checksum]] = {v: k for k, v in EXTENSION.items()}


def sha1_text(data: bytes) -> bytes:
    return hashlib.sha1(data).hexdigest().encode()


def xxhash_text(data: bytes) -> bytes:
    return b"%016X" % xxhash.xxh64_intdigest(data)


DIGEST: Final[dict[Checksum, Callable[[bytes], bytes]]] = {
    "sha1": sha1_text,
    "xxhash": xxhash_text,
}


class Digest:
    """A running digest of one chunk, given in its member's text form."""

    update: Callable[[bytes], None]
    text: Callable[[], str]

    def __init__(self, kind: Checksum) -> None:
        self.kind = kind
        if kind == "sha1":
            sha1 = hashlib.sha1()
            self.update, self.text = sha1.update, sha1.hexdigest
        else:
            xxh = xxhash.xxh64()
            self.update = xxh.update
            self.text = lambda: f"{xxh.intdigest():016X}"


def chunk_name(vdi_id: str, n: int) -> str:
    return f"{vdi_id}/{n:08d}"


def candidate_chunks(extents: Iterator[Extent], size: int) -> Iterator[int]:
    """Chunk numbers that may hold data, increasing: every chunk an extent not
    known to be zero touches, and always the first and the last (xapi's importer
    sizes gaps from chunk 0 and stops at the last)."""
    if size <= 0:
        return
    last = (size - 1) // CHUNK
    yield 0
    done = 0
    for extent in extents:
        if extent.zero or extent.length <= 0:
            continue
        start = max(extent.offset // CHUNK, done + 1)
        stop = min((extent.end - 1) // CHUNK, last - 1)
        if start <= stop:
            yield from range(start, stop + 1)
            done = stop
    if last > 0:
        yield last
