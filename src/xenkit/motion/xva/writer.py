"""to-xva: a VmSpec and its disks as one XVA stream.

The stream is written front to back, never seeking, so ``out`` may be a pipe
or an HTTP body (xapi's ``PUT /import``). A disk is read chunk by chunk: what
its extents call zero is never read, what reads as zero is not written (but the
first and the last chunk always are), and each chunk is hashed once by hashlib
or xxhash in C. Memory stays at one chunk.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import BinaryIO

from xenkit.motion.disk.base import DiskReader, Progress, no_progress
from xenkit.motion.model import Losses, VmSpec
from xenkit.motion.xva.chunks import (
    CHUNK,
    DIGEST,
    EXTENSION,
    ZERO_CHUNK,
    Checksum,
    candidate_chunks,
    chunk_name,
)
from xenkit.motion.xva.ovaxml import render
from xenkit.motion.xva.tar import header, padding, trailer
from xenkit.motion.xva.to_records import export_spec


class _Out:
    """``out`` with a count of bytes written, and no short writes (a raw file or
    a pipe may take only part of a buffer)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.written = 0

    def write(self, data: bytes) -> None:
        n = self._out.write(data)
        if n is not None and n < len(data):
            view = memoryview(data)
            while n < len(data):
                more = self._out.write(view[n:])
                n += more or 0
        self.written += len(data)

    def member(self, name: str, data: bytes) -> None:
        self.write(header(name, len(data)))
        self.write(data)
        pad = padding(len(data))
        if pad:
            self.write(pad)


def write_xva(
    spec: VmSpec,
    disks: Sequence[DiskReader],
    out: BinaryIO,
    *,
    checksum: Checksum = "sha1",
    losses: Losses,
    progress: Progress = no_progress,
) -> int:
    """Write ``spec`` with the data of ``disks`` to ``out`` as an XVA that
    ``xe vm-import`` reads; return the bytes written.

    ``disks`` are readers of the spec's non-CD disks in order (or of all its
    disks, the CD entries then unread). ``checksum="xxhash"`` writes ``.xxhash``
    members, which only Citrix Hypervisor 8.1, XCP-ng 8.1 and later import.
    Settings XenAPI cannot hold are reported in ``losses``. The readers are not
    closed here.
    """
    readers = _data_readers(spec, disks)
    sizes = [r.virtual_size for r in readers]
    export = export_spec(spec, sizes, losses, date=datetime.date.today().isoformat())
    w = _Out(out)
    w.member("ova.xml", render(export.ova))
    total = sum(sizes)
    done = 0
    # xapi's importer takes the first chunk of the whole stream as the length of
    # every skipped chunk: after a disk smaller than a chunk, skip none.
    first = next((sizes[i] for _, i in export.vdis if sizes[i]), CHUNK)
    sparse = first >= CHUNK
    for vdi_id, index in export.vdis:
        _write_vdi(w, vdi_id, readers[index], checksum, sparse, done, total, progress)
        done += sizes[index]
        progress(done, total)
    w.write(trailer(w.written))
    return w.written


def _data_readers(spec: VmSpec, disks: Sequence[DiskReader]) -> list[DiskReader]:
    data = [i for i, d in enumerate(spec.disks) if not d.cdrom]
    if len(disks) == len(data):
        return list(disks)
    if len(disks) == len(spec.disks):
        return [disks[i] for i in data]
    raise ValueError(f"{len(disks)} disk readers for {len(data)} disks and CD drives")


def _write_vdi(
    w: _Out,
    vdi_id: str,
    reader: DiskReader,
    checksum: Checksum,
    sparse: bool,
    done: int,
    total: int,
    progress: Progress,
) -> None:
    size = reader.virtual_size
    last = (size - 1) // CHUNK
    digest = DIGEST[checksum]
    extension = EXTENSION[checksum]
    chunks = candidate_chunks(reader.extents(), size) if sparse else range(last + 1)
    for n in chunks:
        offset = n * CHUNK
        length = min(CHUNK, size - offset)
        data = reader.read(offset, length)
        if len(data) != length:
            raise ValueError(f"the disk reader gave {len(data)} of {length} bytes at {offset}")
        if sparse and 0 < n < last and data == ZERO_CHUNK:
            continue
        name = chunk_name(vdi_id, n)
        text = digest(data)
        w.write(header(name, length))
        w.write(data)
        w.write(padding(length) + header(name + extension, len(text)) + text + padding(len(text)))
        progress(done + offset + length, total)
