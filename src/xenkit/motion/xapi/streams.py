"""Upload bodies for ``import_raw_vdi``: a disk as raw bytes or as a dynamic VHD.

Both know their exact length before the first byte is sent, because xapi takes
no chunked transfer encoding and wants a Content-Length. A raw body sends every
byte of the virtual size; a VHD body sends only the 2 MiB blocks that hold data
(xapi's vhd-tool writes it out sparse), so a mostly empty disk crosses the
network in a fraction of its size. The VHD is laid out to be read front to
back, as a stream must be: footer copy, header, BAT, the blocks in BAT order,
footer.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from xenkit.core.errors import OperationFailed
from xenkit.motion.disk.base import DiskReader, Extent, MiB, Progress
from xenkit.motion.disk.vhd import BLOCK, EPOCH, MAX_SIZE, chs_geometry

Buffer = bytes | memoryview
UploadFormat = Literal["raw", "vhd"]

IO_BLOCK = 4 * MiB
VHD_BLOCK = BLOCK
VHD_MAX_SIZE = MAX_SIZE
"""The largest VHD xapi's SRs take (xen-api: Constants.max_vhd_size), 2040 GiB."""

_SECTOR = 512
_ZEROS = memoryview(bytes(IO_BLOCK))
_FOOTER = struct.Struct(">8sIIQI4sI4sQQIII16sB427x")
_HEADER = struct.Struct(">8sQQIIII16sI4x512s192x256x")
_BITMAP = b"\xff" * (VHD_BLOCK // _SECTOR // 8)


class Body(Protocol):
    """What an upload sends: ``length`` bytes, produced by ``chunks``."""

    @property
    def length(self) -> int: ...

    def chunks(self, progress: Progress) -> Iterator[Buffer]: ...


def data_extents(reader: DiskReader) -> list[Extent]:
    """The reader's non-zero extents, checked to be in order and inside the disk."""
    out: list[Extent] = []
    end = 0
    for extent in reader.extents():
        if extent.offset < end or extent.end > reader.virtual_size:
            raise OperationFailed(
                f"the disk reader gave extent {extent.offset}+{extent.length} out of order "
                f"or beyond the virtual size {reader.virtual_size}"
            )
        end = extent.end
        if not extent.zero and extent.length:
            out.append(extent)
    return out


def allocated_bytes(reader: DiskReader) -> int:
    return sum(e.length for e in data_extents(reader))


def read_exact(reader: DiskReader, offset: int, length: int) -> bytes:
    data = reader.read(offset, length)
    if len(data) != length:
        raise OperationFailed(
            f"the disk image ended early: {len(data)} of {length} bytes at offset {offset}"
        )
    return data


def _data(reader: DiskReader, extents: list[Extent], start: int, end: int) -> Iterator[Buffer]:
    """``[start, end)`` of the disk in ``IO_BLOCK`` pieces, zeros not read."""
    pos = start
    for extent in extents:
        if extent.end <= pos:
            continue
        if extent.offset >= end:
            break
        lo, hi = max(extent.offset, pos), min(extent.end, end)
        yield from _zeros(lo - pos)
        for offset in range(lo, hi, IO_BLOCK):
            yield read_exact(reader, offset, min(IO_BLOCK, hi - offset))
        pos = hi
    yield from _zeros(end - pos)


def _zeros(n: int) -> Iterator[Buffer]:
    while n > 0:
        piece = min(n, IO_BLOCK)
        yield _ZEROS[:piece]
        n -= piece


@dataclass
class RawBody:
    """Every byte of the disk, zeros included (raw has no holes)."""

    reader: DiskReader

    @property
    def length(self) -> int:
        return self.reader.virtual_size

    def chunks(self, progress: Progress) -> Iterator[Buffer]:
        total = self.reader.virtual_size
        done = 0
        progress(0, total)
        for piece in _data(self.reader, data_extents(self.reader), 0, total):
            yield piece
            done += len(piece)
            progress(done, total)


def vhd_possible(virtual_size: int) -> bool:
    return 0 < virtual_size <= VHD_MAX_SIZE and virtual_size % _SECTOR == 0


class VhdBody:
    """A dynamic VHD of the disk holding only the blocks that have data.

    The creator is written as ``tap`` (XenServer's): readers then take the size
    from the footer's current size, not from the CHS geometry, which qemu would
    otherwise round down.
    """

    def __init__(self, reader: DiskReader) -> None:
        size = reader.virtual_size
        if not vhd_possible(size):
            raise OperationFailed(
                f"a {size}-byte disk cannot be a VHD (whole 512-byte sectors, at most 2040 GiB)"
            )
        self.reader = reader
        self._extents = data_extents(reader)
        self._blocks = -(-size // VHD_BLOCK)
        used = bytearray(self._blocks)
        for e in self._extents:
            first, last = e.offset // VHD_BLOCK, (e.end - 1) // VHD_BLOCK
            used[first : last + 1] = b"\x01" * (last - first + 1)
        self._used = bytes(used)
        self._bat_size = -(-self._blocks * 4 // _SECTOR) * _SECTOR
        self._data_start = _SECTOR + 1024 + self._bat_size
        self._uuid = uuid.uuid4().bytes
        self._timestamp = max(0, int(time.time()) - EPOCH) & 0xFFFFFFFF

    @property
    def length(self) -> int:
        return self._data_start + self._used.count(1) * (_SECTOR + VHD_BLOCK) + _SECTOR

    def chunks(self, progress: Progress) -> Iterator[Buffer]:
        size = self.reader.virtual_size
        footer = self._footer()
        yield footer
        yield self._header()
        yield self._bat()
        progress(0, size)
        for block in range(self._blocks):
            start = block * VHD_BLOCK
            if self._used[block]:
                end = min(start + VHD_BLOCK, size)
                yield _BITMAP
                yield from _data(self.reader, self._extents, start, end)
                yield from _zeros(start + VHD_BLOCK - end)
            progress(min(start + VHD_BLOCK, size), size)
        yield footer

    def _footer(self) -> bytes:
        size = self.reader.virtual_size
        fields = (
            b"conectix",
            2,
            0x00010000,
            _SECTOR,
            self._timestamp,
            b"tap\0",
            0x00010000,
            b"Wi2k",
            size,
            size,
            _geometry(size),
            3,
        )
        blank = _FOOTER.pack(*fields, 0, self._uuid, 0)
        return _FOOTER.pack(*fields, _checksum(blank), self._uuid, 0)

    def _header(self) -> bytes:
        fields = (
            b"cxsparse",
            0xFFFFFFFFFFFFFFFF,
            _SECTOR + 1024,
            0x00010000,
            self._blocks,
            VHD_BLOCK,
        )
        blank = _HEADER.pack(*fields, 0, bytes(16), 0, bytes(512))
        return _HEADER.pack(*fields, _checksum(blank), bytes(16), 0, bytes(512))

    def _bat(self) -> bytes:
        bat = bytearray(b"\xff" * self._bat_size)
        sector = self._data_start // _SECTOR
        for block in range(self._blocks):
            if self._used[block]:
                struct.pack_into(">I", bat, block * 4, sector)
                sector += (_SECTOR + VHD_BLOCK) // _SECTOR
        return bytes(bat)


def _checksum(data: bytes) -> int:
    return ~sum(data) & 0xFFFFFFFF


def _geometry(size: int) -> int:
    """CHS as the VHD specification's appendix computes it, packed as the footer has it."""
    cylinders, heads, sectors = chs_geometry(size)
    return (cylinders << 16) | (heads << 8) | sectors


def body_for(reader: DiskReader, fmt: UploadFormat) -> Body:
    return VhdBody(reader) if fmt == "vhd" else RawBody(reader)
