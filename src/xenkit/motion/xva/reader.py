"""from-xva: an XVA stream as a VmSpec, each disk's data poured into a DiskWriter.

The tar is read once, front to back, as xapi's importer reads it
(``Stream_vdi.recv_all``): the VDIs in the order of their ids, each chunk placed
after the previous one plus the chunks skipped between their names, times the
first chunk's length. Placing by sequence, not ``N x 1 MiB``, matters: xapi's
exporter sends 0-byte keep-alive chunks on slow disks, and each one shifts
the numbering of the rest. Every chunk's digest is checked before the next is
read; a mismatch names the chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import BinaryIO, Final

from xenkit.motion.disk.base import DiskWriter, Progress, no_progress
from xenkit.motion.model import DiskRef, Losses, VmSpec
from xenkit.motion.xva.chunks import CHUNK, KIND_OF_EXTENSION, ZERO_CHUNK, Checksum, Digest
from xenkit.motion.xva.errors import BadXva
from xenkit.motion.xva.from_records import StreamedVdi, import_spec
from xenkit.motion.xva.ovaxml import parse
from xenkit.motion.xva.tar import TarReader, open_stream

MAX_OVA_XML: Final = 64 << 20
_MAX_DIGEST: Final = 256


class _Discard:
    """The sink of a VDI that is checked but not kept."""

    def write(self, offset: int, data: bytes) -> None:
        pass

    def finish(self) -> int:
        return 0


def read_xva(
    src: BinaryIO,
    *,
    sink_for: Callable[[DiskRef], DiskWriter],
    losses: Losses,
    progress: Progress = no_progress,
    place: Callable[[DiskRef], DiskRef] | None = None,
) -> VmSpec:
    """Read the XVA in ``src`` (plain, gzip or zstd) and return its VM.

    Each disk is first offered to ``place``, which may choose its ``path`` and
    ``format`` (the reader suggests ``<vdev>.raw``, raw); ``sink_for`` then gets
    that DiskRef, with ``vdev``, ``virtual_size`` and ``label`` from the records,
    and returns the writer for its data. The spec returned carries the placed
    DiskRefs. What xl cannot express is reported in ``losses``. The writers are
    finished here, and only after their last chunk was checked.
    """
    tar = open_stream(src)
    try:
        first = tar.next("the start of the XVA")
    except BadXva:
        raise BadXva(
            "not an XVA: it does not start with a tar header",
            hint="an XVA is a tar (maybe gzip- or zstd-compressed), as xe vm-export writes",
        ) from None
    if first is None:
        raise BadXva("the XVA is empty")
    if first.name.removeprefix("./") != "ova.xml":
        raise BadXva(
            f"not an XVA: its first member is {first.name!r}, not ova.xml",
            hint="an XVA is what xe vm-export writes; xapi reads ova.xml first",
        )
    if first.size > MAX_OVA_XML:
        raise BadXva(f"ova.xml is {first.size} bytes: not an XVA's")
    plan = import_spec(parse(tar.read(first.size, "ova.xml")), losses)
    disks = list(plan.spec.disks)
    total = sum(v.virtual_size for v in plan.vdis)
    reading = _VdiReader(tar, progress, total)
    for vdi in plan.vdis:
        sink: DiskWriter = _Discard()
        if vdi.disk is not None:
            ref = disks[vdi.disk]
            if place is not None:
                ref = place(ref)
            disks[vdi.disk] = ref
            sink = sink_for(ref)
        reading.vdi(vdi, sink)
        sink.finish()
    tar.drain(reading.after)
    return dataclasses.replace(plan.spec, disks=tuple(disks))


class _VdiReader:
    def __init__(self, tar: TarReader, progress: Progress, total: int) -> None:
        self.tar = tar
        self.progress = progress
        self.total = total
        self.done = 0
        self.after = "ova.xml"
        self.kinds: tuple[Checksum, ...] = ("sha1", "xxhash")

    def vdi(self, vdi: StreamedVdi, sink: DiskWriter) -> None:
        prefix = vdi.id + "/"
        size = vdi.virtual_size
        offset = 0
        last = -1
        unit = 0
        while offset < size:
            m = self.tar.next(self.after)
            where = f"VDI {vdi.id} has {offset} of its {size} bytes"
            if m is None:
                raise BadXva(f"the XVA ends after {self.after}: {where}")
            if not m.name.startswith(prefix):
                raise BadXva(f"{m.name!r} where a chunk of VDI {vdi.id} belongs: {where}")
            suffix = m.name[len(prefix) :]
            if not suffix.isdigit():
                raise BadXva(f"{m.name!r} is not a chunk name ({prefix}NNNNNNNN): {where}")
            n = int(suffix)
            if n <= last:
                raise BadXva(f"chunk {m.name} comes after {prefix}{last:08d}: names must increase")
            if last < 0:
                unit = m.size or CHUNK
            offset += (n - last - 1) * unit
            if offset + m.size > size:
                raise BadXva(
                    f"chunk {m.name} ends at byte {offset + m.size}, past VDI {vdi.id}'s"
                    f" virtual_size {size}"
                )
            self.chunk(m.name, m.size, offset, sink)
            offset += m.size
            last = n
            self.progress(self.done + offset, self.total)
        self.done += size

    def chunk(self, name: str, size: int, offset: int, sink: DiskWriter) -> None:
        """Read, check and hand on one chunk. A chunk of up to ``CHUNK`` bytes
        (every xapi's) reaches the sink only once its digest matched; a bigger
        one goes on piece by piece, to keep memory flat."""
        digests = [Digest(k) for k in self.kinds]
        held: list[tuple[int, bytes]] = []
        pos = 0
        while pos < size:
            n = min(CHUNK, size - pos)
            data = self.tar.read(n, f"chunk {name}")
            for d in digests:
                d.update(data)
            if not (data == ZERO_CHUNK if n == CHUNK else data.count(0) == n):
                held.append((offset + pos, data))
            if size > CHUNK:
                for at, piece in held:
                    sink.write(at, piece)
                held.clear()
            pos += n
        self.check(name, digests)
        for at, piece in held:
            sink.write(at, piece)

    def check(self, name: str, digests: list[Digest]) -> None:
        c = self.tar.next(name)
        if c is None:
            raise BadXva(f"the XVA ends after chunk {name}, before its checksum")
        extension = c.name[len(name) :] if c.name.startswith(name) else ""
        kind = KIND_OF_EXTENSION.get(extension)
        if kind is None:
            raise BadXva(f"chunk {name} is followed by {c.name!r}, not its .checksum or .xxhash")
        mine = next((d for d in digests if d.kind == kind), None)
        if mine is None:
            raise BadXva(
                f"{c.name}: this XVA's chunks mix .checksum and .xxhash;"
                " xenkit checks one kind per XVA"
            )
        if c.size > _MAX_DIGEST:
            raise BadXva(f"{c.name} is {c.size} bytes: not a digest")
        expected = self.tar.read(c.size, c.name).decode(errors="replace").strip()
        actual = mine.text()
        if expected.lower() != actual.lower():
            raise BadXva(
                f"chunk {name} is damaged: {c.name} says {expected}, its data hashes to {actual}"
            )
        self.kinds = (kind,)
        self.after = c.name
