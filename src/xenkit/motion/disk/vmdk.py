"""VMDK sparse extents, written as streamOptimized (VMware's Virtual Disk Format
5.0), the disk format of an OVA that vSphere and VirtualBox import.

A streamOptimized file can be written in one pass: a sparse extent header
("KDMV", little-endian) whose grain directory offset says "at the end"
(``GD_AT_END``), the text descriptor, then each 64 KiB grain that is not all
zeros, deflated (zlib) behind a 12-byte grain marker (its LBA and compressed
size), each 512 grains followed by their grain table behind a metadata marker,
and at the end the grain directory, a footer (the header again, now with the
directory's offset) and an end-of-stream marker. Like VMware's own writer, a
grain table with no grain is left out (its directory entry 0).

The reader takes any sparse extent (streamOptimized from VMware, VirtualBox or
``qemu-img``, which puts the tables first; and the uncompressed monolithicSparse
``qemu-img`` writes by default) by its grain directory and tables.
"""

from __future__ import annotations

import os
import random
import struct
import uuid as uuidlib
import zlib
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import (
    SECTOR,
    Checkpoint,
    ClosedOnExit,
    CorruptImage,
    Extent,
    forward,
    is_zero,
    table_bytes,
    table_from,
)
from xenkit.motion.disk.raw import table_extents

MAGIC = b"KDMV"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
GRAIN_SECTORS = 128
GRAIN = GRAIN_SECTORS * SECTOR
GTES = 512
GT_SPAN = GRAIN * GTES
OVERHEAD_SECTORS = 128
DESCRIPTOR_SECTORS = 20

FLAG_NEWLINE_TEST = 1 << 0
FLAG_ZEROED_GRAIN_GTE = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
DEFLATE = 1
NEWLINES = b"\n \r\n"

MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
TOOLS_VERSION = 2147483647
""""Unmanaged" guest tools in vSphere's terms (a distribution's open-vm-tools,
or none): the importer then neither offers nor insists on a tools upgrade."""

Adapter = Literal["lsilogic", "ide", "buslogic", "lsisas1068", "pvscsi"]

_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH433x")
_MARKER = struct.Struct("<QII")
_GRAIN_MARKER = struct.Struct("<QI")


@dataclass(frozen=True)
class SparseHeader:
    """The sparse extent header (and the footer, its copy at the end)."""

    capacity: int
    gd_offset: int
    version: int = 3
    flags: int = FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS
    grain_size: int = GRAIN_SECTORS
    descriptor_offset: int = 1
    descriptor_size: int = DESCRIPTOR_SECTORS
    gtes_per_gt: int = GTES
    rgd_offset: int = 0
    overhead: int = OVERHEAD_SECTORS
    unclean_shutdown: int = 0
    newlines: bytes = NEWLINES
    compress_algorithm: int = DEFLATE

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.flags,
            self.capacity,
            self.grain_size,
            self.descriptor_offset,
            self.descriptor_size,
            self.gtes_per_gt,
            self.rgd_offset,
            self.gd_offset,
            self.overhead,
            self.unclean_shutdown,
            self.newlines,
            self.compress_algorithm,
        )

    @classmethod
    def unpack(cls, raw: bytes, name: str) -> SparseHeader:
        fields = _HEADER.unpack(raw)
        magic, version, flags, capacity, grain, d_off, d_size, gtes, rgd, gd, over = fields[:11]
        unclean, newlines, algorithm = fields[11:]
        if magic != MAGIC:
            raise CorruptImage(
                f"{name} is not a VMDK sparse extent: it starts with {magic!r}, not 'KDMV'",
                hint="check the format given for it; a text VMDK descriptor with separate "
                "extent files is read through qemu",
            )
        if not 1 <= version <= 3:
            raise CorruptImage(f"{name}: VMDK sparse extent version {version} is unknown")
        if flags & FLAG_NEWLINE_TEST and newlines != NEWLINES:
            raise CorruptImage(
                f"{name}: the VMDK header's line-end test bytes are {newlines!r}: the file "
                "went through a text-mode transfer that changed line ends",
                hint="transfer it again in binary mode",
            )
        if grain < 1 or grain & (grain - 1) or gtes < 1:
            raise CorruptImage(f"{name}: VMDK grain size {grain} sectors is not a power of two")
        if flags & FLAG_COMPRESSED and algorithm != DEFLATE:
            raise CorruptImage(f"{name}: VMDK compression algorithm {algorithm} is not deflate")
        return cls(
            capacity=capacity,
            gd_offset=gd,
            version=version,
            flags=flags,
            grain_size=grain,
            descriptor_offset=d_off,
            descriptor_size=d_size,
            gtes_per_gt=gtes,
            rgd_offset=rgd,
            overhead=over,
            unclean_shutdown=unclean,
            newlines=newlines,
            compress_algorithm=algorithm,
        )


def marker(value: int, kind: int) -> bytes:
    """A metadata marker sector: ``value`` sectors of ``kind`` follow."""
    return _MARKER.pack(value, 0, kind).ljust(SECTOR, b"\0")


def geometry(capacity_sectors: int, adapter: Adapter) -> tuple[int, int, int]:
    """The BIOS geometry VMware gives a disk on this adapter."""
    heads, sectors, most = (16, 63, 16383) if adapter == "ide" else (255, 63, 65535)
    return min(capacity_sectors // (heads * sectors), most), heads, sectors


def descriptor(
    capacity_sectors: int,
    *,
    name: str = "disk.vmdk",
    adapter: Adapter = "lsilogic",
    hw_version: int = 4,
    cid: int | None = None,
    uuid: uuidlib.UUID | None = None,
) -> str:
    """The embedded descriptor of a streamOptimized disk.

    ``virtualHWVersion`` 4 is the oldest VMware hardware that can hold the disk,
    so every vSphere takes it; the VM's own hardware version is the OVF's."""
    cylinders, heads, sectors = geometry(capacity_sectors, adapter)
    cid = random.getrandbits(32) if cid is None else cid
    uuid = uuid or uuidlib.uuid4()
    spaced = " ".join(f"{b:02x}" for b in uuid.bytes)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid:08x}\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} SPARSE "{name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{adapter}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{heads}"\n'
        f'ddb.geometry.sectors = "{sectors}"\n'
        f'ddb.longContentID = "{uuidlib.uuid4().hex}"\n'
        f'ddb.toolsVersion = "{TOOLS_VERSION}"\n'
        f'ddb.uuid = "{spaced}"\n'
        f'ddb.virtualHWVersion = "{hw_version}"\n'
    )


def parse_descriptor(text: str) -> dict[str, str]:
    """``key=value`` and ``ddb.key = "value"`` lines of a descriptor, unquoted."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.lstrip().startswith("#"):
            found[key.strip()] = value.strip().strip('"')
    return found


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)


class VmdkReader(ClosedOnExit):
    """A VMDK sparse extent in ``f`` (a file, or a window inside an OVA)."""

    def __init__(
        self, f: BinaryIO, *, name: str = "the VMDK image", owns: bool = False, threads: int = 2
    ) -> None:
        self._f = f
        self._owns = owns
        self.name = name
        self._length = f.seek(0, os.SEEK_END)
        if self._length < SECTOR:
            raise CorruptImage(f"{name} is {self._length} bytes, too short for a VMDK header")
        header = SparseHeader.unpack(self._pread(0, SECTOR), name)
        if header.gd_offset == GD_AT_END:
            header = self._footer(header)
        self.header = header
        self.descriptor = self._descriptor()
        self._grain = header.grain_size * SECTOR
        self._span = self._grain * header.gtes_per_gt
        self._size = header.capacity * SECTOR
        self._compressed = bool(header.flags & FLAG_COMPRESSED)
        self._zeroed_gte = bool(header.flags & FLAG_ZEROED_GRAIN_GTE)
        entries = -(-self._size // self._span)
        at = header.gd_offset * SECTOR
        if at + entries * 4 > self._length:
            raise CorruptImage(
                f"{name}: the VMDK grain directory at byte {at} runs past the end "
                f"({self._length} bytes)",
                hint="the image was cut short; copy it again from its source",
            )
        self._gd = table_from(self._pread(at, entries * 4), "I", "little")
        self._tables: dict[int, array[int]] = {}
        self._last: tuple[int, bytes] | None = None
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, path: str | Path) -> VmdkReader:
        try:
            f = Path(path).open("rb")  # noqa: SIM115 (the reader owns it)
        except FileNotFoundError as exc:
            raise UsageError(f"{path} does not exist", hint="check the image's path") from exc
        try:
            return cls(f, name=str(path), owns=True)
        except BaseException:
            f.close()
            raise

    def _footer(self, header: SparseHeader) -> SparseHeader:
        name = self.name
        missing = CorruptImage(
            f"{name} is truncated: its header puts the grain directory at the end, but "
            "the end holds no footer (footer marker, footer, end-of-stream marker)",
            hint="the image was cut short (an interrupted download or copy); "
            "copy it again from its source",
        )
        if self._length < 3 * SECTOR:
            raise missing
        tail = self._pread(self._length - 3 * SECTOR, 3 * SECTOR)
        _, size, kind = _MARKER.unpack_from(tail)
        if (
            kind != MARKER_FOOTER
            or size
            or tail[SECTOR : SECTOR + 4] != MAGIC
            or any(tail[-SECTOR:])
        ):
            raise missing
        footer = SparseHeader.unpack(tail[SECTOR : 2 * SECTOR], f"{name} (footer)")
        if footer.gd_offset == GD_AT_END:
            raise CorruptImage(f"{name}: the VMDK footer does not say where the grain directory is")
        if footer.capacity != header.capacity:
            raise CorruptImage(
                f"{name}: the VMDK header says {header.capacity} sectors, "
                f"the footer {footer.capacity}"
            )
        return footer

    def _descriptor(self) -> dict[str, str]:
        h = self.header
        if not h.descriptor_offset or not h.descriptor_size:
            return {}
        end = (h.descriptor_offset + h.descriptor_size) * SECTOR
        if end > self._length:
            raise CorruptImage(f"{self.name}: the VMDK descriptor runs past the end of the file")
        raw = self._pread(h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR)
        return parse_descriptor(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))

    @property
    def virtual_size(self) -> int:
        return self._size

    @property
    def create_type(self) -> str:
        return self.descriptor.get("createType", "")

    @property
    def grains(self) -> int:
        """How many grains the tables point at (stored, not zero)."""
        return sum(
            1
            for index in range(len(self._gd))
            for entry in self._table(index)
            if entry > 1 or (entry == 1 and not self._zeroed_gte)
        )

    def _pread(self, offset: int, length: int) -> bytes:
        self._f.seek(offset)
        data = self._f.read(length)
        while len(data) < length:
            more = self._f.read(length - len(data))
            if not more:
                break
            data += more
        return data

    def _table(self, index: int) -> array[int]:
        table = self._tables.get(index)
        if table is not None:
            return table
        gtes = self.header.gtes_per_gt
        sector = self._gd[index]
        if sector == 0:
            table = array("I", [0]) * gtes
        else:
            raw = self._pread(sector * SECTOR, gtes * 4)
            if len(raw) < gtes * 4:
                raise CorruptImage(
                    f"{self.name}: VMDK grain table {index} at sector {sector} is past the end",
                    hint="the image was cut short; copy it again from its source",
                )
            table = table_from(raw, "I", "little")
            last = max(table)
            if last * SECTOR >= self._length:
                raise CorruptImage(
                    f"{self.name}: VMDK grain table {index} points at sector {last}, past "
                    f"the end of the file ({self._length} bytes)",
                    hint="the image was cut short; copy it again from its source",
                )
        if len(self._tables) >= 64:
            self._tables.clear()
        self._tables[index] = table
        return table

    def _entry(self, grain: int) -> int:
        """The grain's sector, or 0 when it reads as zeros."""
        index, slot = divmod(grain, self.header.gtes_per_gt)
        entry = self._table(index)[slot]
        return 0 if entry == 1 and self._zeroed_gte else entry

    def allocation(self) -> Iterator[Extent]:
        return self.extents()

    def extents(self) -> Iterator[Extent]:
        zeroed = self._zeroed_gte

        def zeros(table: array[int]) -> Iterator[bool]:
            for entry in table:
                yield entry == 0 or (entry == 1 and zeroed)

        return table_extents(
            (None if sector == 0 else zeros(self._table(i)) for i, sector in enumerate(self._gd)),
            self._span,
            self._grain,
            self._size,
        )

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self._size:
            raise ValueError(f"read at {offset}+{length} is past the end ({self._size})")
        if length <= 0:
            return b""
        first, last = offset // self._grain, (offset + length - 1) // self._grain
        grains = self._grains(first, last)
        whole = grains[0] if len(grains) == 1 else b"".join(grains)
        within = offset - first * self._grain
        return whole if within == 0 and len(whole) == length else whole[within : within + length]

    def _grains(self, first: int, last: int) -> list[bytes]:
        """The content of grains ``first..last``; compressed ones read here and
        inflated on the worker threads (zlib lets go of the GIL)."""
        out: list[bytes | None] = []
        jobs: list[tuple[int, int, bytes, int]] = []
        for grain in range(first, last + 1):
            cached = self._last
            if cached is not None and cached[0] == grain:
                out.append(cached[1])
                continue
            sector = self._entry(grain)
            want = min(self._grain, self._size - grain * self._grain)
            if sector == 0:
                out.append(bytes(want))
            elif not self._compressed:
                data = self._pread(sector * SECTOR, want)
                if len(data) < want:
                    raise self._cut(grain, sector)
                out.append(data)
            else:
                jobs.append((len(out), grain, self._deflated(grain, sector), want))
                out.append(None)
        if len(jobs) > 1 and self._threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, "vmdk-inflate")
            share = -(-len(jobs) // self._threads)  # a task per thread, not per grain
            batches = [jobs[i : i + share] for i in range(0, len(jobs), share)]
            inflated = [
                data
                for batch in self._pool.map(
                    lambda batch: [self._inflated(*job[1:]) for job in batch], batches
                )
                for data in batch
            ]
        else:
            inflated = [self._inflated(*job[1:]) for job in jobs]
        for (slot, *_), data in zip(jobs, inflated, strict=True):
            out[slot] = data
        done = [piece for piece in out if piece is not None]
        self._last = (last, done[-1])
        return done

    def _deflated(self, grain: int, sector: int) -> bytes:
        """The compressed bytes of a grain, its marker checked."""
        raw = self._pread(sector * SECTOR, self._grain + SECTOR)
        if len(raw) < _GRAIN_MARKER.size:
            raise self._cut(grain, sector)
        lba, size = _GRAIN_MARKER.unpack_from(raw)
        if lba != grain * self.header.grain_size:
            raise CorruptImage(
                f"{self.name}: the VMDK grain at sector {sector} says it holds LBA {lba}, "
                f"its grain table says {grain * self.header.grain_size}"
            )
        end = _GRAIN_MARKER.size + size
        if end > len(raw):
            raw += self._pread(sector * SECTOR + len(raw), end - len(raw))
            if end > len(raw):
                raise self._cut(grain, sector)
        return raw[_GRAIN_MARKER.size : end]

    def _inflated(self, grain: int, deflated: bytes, want: int) -> bytes:
        lba = grain * self.header.grain_size
        try:
            data = _inflate(deflated)
        except zlib.error as exc:
            raise CorruptImage(
                f"{self.name}: the VMDK grain for LBA {lba} does not inflate: {exc}",
                hint="the image is damaged; copy it again from its source",
            ) from exc
        if len(data) < want:
            raise CorruptImage(
                f"{self.name}: the VMDK grain for LBA {lba} inflates to {len(data)} bytes, "
                f"not {want}"
            )
        return data if len(data) == want else data[:want]

    def _cut(self, grain: int, sector: int) -> CorruptImage:
        return CorruptImage(
            f"{self.name} is truncated: grain {grain} at sector {sector} is past its end "
            f"({self._length} bytes)",
            hint="the image was cut short; copy it again from its source",
        )

    def close(self) -> None:
        self._tables.clear()
        self._last = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._owns:
            self._f.close()


class VmdkWriter:
    """A streamOptimized VMDK written into ``out`` front to back, never seeking
    back, so ``out`` may be a pipe's worth of file (a tar member being written).

    Grains are deflated by ``threads`` workers (zlib lets go of the GIL) at zlib
    ``level`` (qemu uses 6), in order, a few MiB ahead at most."""

    unit = GT_SPAN

    def __init__(
        self,
        out: BinaryIO,
        virtual_size: int,
        *,
        name: str = "disk.vmdk",
        adapter: Adapter = "lsilogic",
        hw_version: int = 4,
        level: int = 6,
        threads: int = 2,
        _resume: Checkpoint | None = None,
    ) -> None:
        check_size(virtual_size)
        self._out = out
        self._size = virtual_size
        self._level = level
        capacity = virtual_size // SECTOR
        self.header = SparseHeader(capacity=capacity, gd_offset=GD_AT_END)
        self._gd = array("I", [0]) * -(-virtual_size // GT_SPAN)
        self._gt = array("I", [0]) * GTES
        self._gt_index = 0
        self._partial: tuple[int, bytearray] | None = None
        self._pending: deque[tuple[int, Future[bytes]]] = deque()
        self._ahead = 16 * max(threads, 1)
        self._pool = ThreadPoolExecutor(threads, "vmdk-deflate") if threads > 1 else None
        self._done = 0
        if _resume is None:
            text = descriptor(capacity, name=name, adapter=adapter, hw_version=hw_version)
            raw = text.encode()
            if len(raw) > DESCRIPTOR_SECTORS * SECTOR:
                raise UsageError(f"the VMDK descriptor is {len(raw)} bytes, too long")
            out.write(self.header.pack())
            out.write(raw.ljust(OVERHEAD_SECTORS * SECTOR - SECTOR, b"\0"))
            self._pos = OVERHEAD_SECTORS * SECTOR
        else:
            if _resume.size is None:
                raise ValueError("a VMDK checkpoint has the output's size")
            self._pos = _resume.size
            self._done = _resume.virtual
            self._gt_index = _resume.virtual // GT_SPAN
            for index, sector in state_pairs(_resume.state):
                self._gd[index] = sector
            out.seek(self._pos)

    @classmethod
    def resume(cls, out: BinaryIO, virtual_size: int, checkpoint: Checkpoint) -> VmdkWriter:
        """Carry on a write that stopped at ``checkpoint`` (``out`` already cut
        to ``checkpoint.size``)."""
        return cls(out, virtual_size, _resume=checkpoint)

    def write(self, offset: int, data: bytes) -> None:
        self._done = forward(self._done, offset, len(data), self._size)
        view = memoryview(data)
        while view:
            grain, within = divmod(offset, GRAIN)
            n = min(len(view), GRAIN - within)
            partial = self._partial
            if partial is not None and partial[0] != grain:
                self._emit(*partial)
                partial = self._partial = None
            if within == 0 and (n == GRAIN or offset + n == self._size) and partial is None:
                self._emit(grain, view[:n])
            else:
                if partial is None:
                    partial = self._partial = (grain, bytearray(GRAIN))
                partial[1][within : within + n] = view[:n]
            offset += n
            view = view[n:]

    def _emit(self, grain: int, data: bytes | bytearray | memoryview) -> None:
        """Deflate one grain unless it is all zeros. The disk's last grain, when
        the disk ends inside it, is padded with zeros: a grain inflates whole."""
        piece = bytes(data)
        if is_zero(piece):
            return
        if len(piece) < GRAIN:
            piece += bytes(GRAIN - len(piece))
        if self._pool is None:
            self._put(grain, zlib.compress(piece, self._level))
            return
        self._pending.append((grain, self._pool.submit(zlib.compress, piece, self._level)))
        while len(self._pending) > self._ahead:
            done, future = self._pending.popleft()
            self._put(done, future.result())

    def _drain(self) -> None:
        if self._partial is not None:
            self._emit(*self._partial)
            self._partial = None
        while self._pending:
            done, future = self._pending.popleft()
            self._put(done, future.result())

    def _put(self, grain: int, deflated: bytes) -> None:
        index = grain // GTES
        if index != self._gt_index:
            self._close_table()
            self._gt_index = index
        self._gt[grain % GTES] = self._pos // SECTOR
        head = _GRAIN_MARKER.pack(grain * GRAIN_SECTORS, len(deflated))
        used = len(head) + len(deflated)
        self._out.write(head)
        self._out.write(deflated)
        self._out.write(bytes(-used % SECTOR))
        self._pos += used + (-used % SECTOR)

    def _close_table(self) -> None:
        if not any(self._gt):
            return
        table = table_bytes(self._gt, "little")
        self._out.write(marker(len(table) // SECTOR, MARKER_GT))
        self._out.write(table)
        self._gd[self._gt_index] = self._pos // SECTOR + 1
        self._pos += SECTOR + len(table)
        self._gt = array("I", [0]) * GTES

    def checkpoint(self, at: int) -> Checkpoint:
        if at % GT_SPAN and at != self._size:
            raise ValueError(f"a VMDK checkpoint must be at a grain table boundary, not {at}")
        self._drain()
        if self._gt_index < -(-at // GT_SPAN):
            self._close_table()
            self._gt_index = at // GT_SPAN
        self._out.flush()
        entries = [[i, s] for i, s in enumerate(self._gd) if s]
        return Checkpoint(at, self._pos, {"gd": entries})

    def finish(self) -> int:
        self._drain()
        self._close_table()
        gd = table_bytes(self._gd, "little")
        gd += bytes(-len(gd) % SECTOR)
        self._out.write(marker(len(gd) // SECTOR, MARKER_GD))
        gd_sector = self._pos // SECTOR + 1
        self._out.write(gd)
        self._pos += SECTOR + len(gd)
        footer = replace(self.header, gd_offset=gd_sector)
        self._out.write(marker(1, MARKER_FOOTER))
        self._out.write(footer.pack())
        self._out.write(bytes(SECTOR))
        self._pos += 3 * SECTOR
        self._out.flush()
        self.close()
        return self._pos

    def close(self) -> None:
        """Stop the deflate workers; ``out`` belongs to the caller."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()


def check_size(virtual_size: int) -> None:
    """A VMDK holds whole sectors."""
    if virtual_size % SECTOR:
        raise UsageError(
            f"a VMDK holds whole 512-byte sectors; {virtual_size} bytes is not a multiple of 512",
            hint=f"pad the source to {-(-virtual_size // SECTOR) * SECTOR} bytes "
            "(truncate -s) before converting",
        )


def state_pairs(state: Mapping[str, object]) -> list[tuple[int, int]]:
    """The grain directory entries a checkpoint kept, as (index, sector)."""
    entries = state.get("gd", [])
    if not isinstance(entries, list):
        raise ValueError(f"checkpoint state 'gd' is {entries!r}, not a list")
    return [(int(i), int(s)) for i, s in entries]
