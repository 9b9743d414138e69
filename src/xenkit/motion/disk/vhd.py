"""VHD images (Microsoft's Virtual Hard Disk Image Format Specification, 1.0).

What XCP's ``import_raw_vdi?format=vhd``, XenCenter's OVF and Hyper-V/Azure take.
Everything is big-endian. A fixed VHD is the raw disk followed by a 512-byte
footer ("conectix"). A dynamic one keeps a copy of the footer at 0, a 1024-byte
dynamic header ("cxsparse") at 512, then the block allocation table (BAT: one
u32 sector number per 2 MiB block, 0xFFFFFFFF for none), then the blocks, each a
512-byte sector bitmap and the data, and the footer again at the end.

The size: the footer has both a byte count (``current_size``) and a CHS
geometry, and readers disagree on which one rules. Hyper-V, Azure, XCP's vhd-tool,
VirtualBox and DiscUtils take ``current_size``; qemu before 10.0 takes the CHS
product (usually a little smaller) unless the creator application is one of
``win ``, ``qem2``, ``d2v ``, ``CTXS`` or ``tap``; qemu 10 takes CHS only for
``vpc `` and ``qemu``. So this writer signs as ``qem2`` (qemu's own "the size
is current_size" mark) and writes the spec's CHS geometry beside an exact
``current_size``: every one of them then sees the same size.
"""

from __future__ import annotations

import io
import os
import struct
import time
import uuid as uuidlib
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import (
    SECTOR,
    Checkpoint,
    ClosedOnExit,
    CorruptImage,
    Extent,
    MiB,
    forward,
    is_zero,
    read_at,
    table_bytes,
    table_from,
)
from xenkit.motion.disk.raw import allocated, merged

COOKIE = b"conectix"
SPARSE_COOKIE = b"cxsparse"
BLOCK = 2 * MiB
UNUSED = 0xFFFFFFFF
EPOCH = 946684800
"""2000-01-01T00:00:00Z, where VHD timestamps count from."""
MAX_SIZE = 0xFF000000 * SECTOR
"""2040 GiB: qemu's limit, and XCP's for a VHD-backed VDI."""
FIXED, DYNAMIC, DIFFERENCING = 2, 3, 4
CREATOR_APP = b"qem2"
CREATOR_VERSION = 0x00010000
CREATOR_OS = b"Wi2k"

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
_HEADER = struct.Struct(">8sQQIIII16sII512s192s256x")
_BAT_AT = 3 * SECTOR


def vhd_checksum(data: bytes, checksum_at: int) -> int:
    """One's complement of the byte sum, the checksum's own 4 bytes left out."""
    total = sum(data) - sum(data[checksum_at : checksum_at + 4])
    return ~total & 0xFFFFFFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """Cylinders, heads, sectors per track for ``size`` bytes, by the spec's
    algorithm (appendix "CHS calculation"); it rounds down."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


@dataclass(frozen=True)
class Footer:
    """The hard disk footer, as the spec names its fields."""

    disk_type: int
    current_size: int
    original_size: int
    data_offset: int
    timestamp: int
    uuid: bytes
    creator_app: bytes = CREATOR_APP
    creator_version: int = CREATOR_VERSION
    creator_os: bytes = CREATOR_OS
    geometry: tuple[int, int, int] = (0, 0, 0)
    features: int = 2
    version: int = 0x00010000
    saved_state: int = 0

    def pack(self) -> bytes:
        def fields(checksum: int) -> bytes:
            return _FOOTER.pack(
                COOKIE,
                self.features,
                self.version,
                self.data_offset,
                self.timestamp,
                self.creator_app,
                self.creator_version,
                self.creator_os,
                self.original_size,
                self.current_size,
                *self.geometry,
                self.disk_type,
                checksum,
                self.uuid,
                self.saved_state,
            )

        return fields(vhd_checksum(fields(0), 64))

    @classmethod
    def unpack(cls, raw: bytes, name: str) -> Footer:
        (
            cookie,
            features,
            version,
            data_offset,
            timestamp,
            app,
            app_version,
            app_os,
            original,
            current,
            cyls,
            heads,
            spt,
            disk_type,
            checksum,
            uuid,
            saved,
        ) = _FOOTER.unpack(raw)
        if cookie != COOKIE:
            raise CorruptImage(f"{name}: no VHD footer ('conectix')")
        expected = vhd_checksum(raw, 64)
        if checksum != expected:
            raise CorruptImage(
                f"{name}: the VHD footer's checksum is {checksum:#010x}, "
                f"its content sums to {expected:#010x}",
                hint="the footer is damaged; if only the footer copy at offset 0 is "
                "intact, the image was cut short: copy it again from its source",
            )
        return cls(
            disk_type=disk_type,
            current_size=current,
            original_size=original,
            data_offset=data_offset,
            timestamp=timestamp,
            uuid=uuid,
            creator_app=app,
            creator_version=app_version,
            creator_os=app_os,
            geometry=(cyls, heads, spt),
            features=features,
            version=version,
            saved_state=saved,
        )


@dataclass(frozen=True)
class DynamicHeader:
    """The dynamic disk header: where the BAT is and how big the blocks are."""

    table_offset: int
    max_table_entries: int
    block_size: int = BLOCK

    def pack(self) -> bytes:
        def fields(checksum: int) -> bytes:
            return _HEADER.pack(
                SPARSE_COOKIE,
                0xFFFFFFFFFFFFFFFF,
                self.table_offset,
                0x00010000,
                self.max_table_entries,
                self.block_size,
                checksum,
                bytes(16),
                0,
                0,
                bytes(512),
                bytes(192),
            )

        return fields(vhd_checksum(fields(0), 36))

    @classmethod
    def unpack(cls, raw: bytes, name: str) -> DynamicHeader:
        cookie, _, table, _, entries, block, checksum, *_ = _HEADER.unpack(raw)
        if cookie != SPARSE_COOKIE:
            raise CorruptImage(f"{name}: no VHD dynamic header ('cxsparse') where the footer says")
        expected = vhd_checksum(raw, 36)
        if checksum != expected:
            raise CorruptImage(
                f"{name}: the VHD dynamic header's checksum is {checksum:#010x}, "
                f"its content sums to {expected:#010x}",
                hint="the image is damaged; copy it again from its source",
            )
        if block < SECTOR or block & (block - 1):
            raise CorruptImage(f"{name}: VHD block size {block} is not a power of two")
        return cls(table, entries, block)


def _bat_bytes(entries: int) -> int:
    return -(-entries * 4 // SECTOR) * SECTOR


class _File:
    """Positioned reads from a file object, which may be a window in a tar file."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name
        self.length = f.seek(0, os.SEEK_END)

    def pread(self, offset: int, length: int) -> bytes:
        data = read_at(self.f, offset, length)
        if len(data) < length:
            raise CorruptImage(
                f"{self.name} ends at byte {offset + len(data)}, inside data it says "
                f"is at {offset}..{offset + length}",
                hint="the image was cut short; copy it again from its source",
            )
        return data


class VhdReader(ClosedOnExit):
    """A fixed or dynamic VHD in ``f``. Sectors a block's bitmap leaves unset read
    as zeros, as the spec says (qemu reads what is there; writers leave zeros)."""

    def __init__(self, f: BinaryIO, *, name: str = "the VHD image", owns: bool = False) -> None:
        self._file = _File(f, name)
        self._owns = owns
        self.name = name
        length = self._file.length
        if length < SECTOR:
            raise CorruptImage(f"{name} is {length} bytes, too short for a VHD footer")
        tail = self._file.pread(length - SECTOR, SECTOR)
        if tail[:8] != COOKIE:
            if self._file.pread(0, 8) == COOKIE:
                raise CorruptImage(
                    f"{name} is truncated or damaged: it starts with a VHD footer copy but "
                    "its last 512 bytes are not the footer",
                    hint="copy it again from its source",
                )
            raise CorruptImage(
                f"{name} is not a VHD: no 'conectix' footer in its last 512 bytes",
                hint="check the format given for it (detect_format tells raw, qcow2, "
                "vhd and vmdk apart)",
            )
        self.footer = Footer.unpack(tail, name)
        self._size = self.footer.current_size
        self._bat = array("I")
        self._block = BLOCK
        self._bitmap_bytes = 0
        self._bitmaps: dict[int, bytes | None] = {}
        if self.footer.disk_type == FIXED:
            if self._size > length - SECTOR:
                raise CorruptImage(
                    f"{name}: a fixed VHD of {self._size} bytes in a file of {length}",
                    hint="the image was cut short; copy it again from its source",
                )
        elif self.footer.disk_type == DYNAMIC:
            self._open_dynamic()
        elif self.footer.disk_type == DIFFERENCING:
            raise UsageError(
                f"{name} is a differencing VHD: its content depends on a parent image",
                hint="coalesce it into its parent first (vhd-util coalesce, or "
                "qemu-img convert -O vpc on the chain)",
            )
        else:
            raise CorruptImage(f"{name}: unknown VHD disk type {self.footer.disk_type}")

    @classmethod
    def open(cls, path: str | Path) -> VhdReader:
        try:
            f = Path(path).open("rb")  # noqa: SIM115 (the reader owns it)
        except FileNotFoundError as exc:
            raise UsageError(f"{path} does not exist", hint="check the image's path") from exc
        try:
            return cls(f, name=str(path), owns=True)
        except BaseException:
            f.close()
            raise

    def _open_dynamic(self) -> None:
        name, length = self.name, self._file.length
        at = self.footer.data_offset
        if at + 1024 > length:
            raise CorruptImage(f"{name}: the VHD dynamic header offset {at} is past the end")
        header = DynamicHeader.unpack(self._file.pread(at, 1024), name)
        self._block = header.block_size
        self._bitmap_bytes = -(-header.block_size // SECTOR // 8 // SECTOR) * SECTOR
        entries = header.max_table_entries
        if entries * header.block_size < self._size:
            raise CorruptImage(
                f"{name}: the VHD's BAT has {entries} blocks of {header.block_size} bytes, "
                f"less than its size of {self._size} bytes"
            )
        if header.table_offset + entries * 4 > length:
            raise CorruptImage(f"{name}: the VHD's BAT runs past the end of the file")
        bat = table_from(self._file.pread(header.table_offset, entries * 4), "I", "big")
        used = [e for e in bat if e != UNUSED]
        if used:
            last = max(used) * SECTOR + self._bitmap_bytes + header.block_size
            if last > length - SECTOR:
                raise CorruptImage(
                    f"{name}: the VHD's BAT has a block ending at byte {last}, past the end "
                    f"of its data at {length - SECTOR}",
                    hint="the image was cut short; copy it again from its source",
                )
            if min(used) * SECTOR < header.table_offset + entries * 4:
                raise CorruptImage(f"{name}: the VHD's BAT has a block inside its headers")
        self._bat = bat

    @property
    def virtual_size(self) -> int:
        return self._size

    @property
    def dynamic(self) -> bool:
        return self.footer.disk_type == DYNAMIC

    @property
    def allocated_blocks(self) -> int:
        """How many blocks the BAT allocates (0 for a fixed VHD)."""
        return sum(1 for e in self._bat if e != UNUSED)

    @property
    def block_size(self) -> int:
        return self._block

    def allocation(self) -> Iterator[Extent]:
        return self.extents()

    def extents(self) -> Iterator[Extent]:
        if not self.dynamic:
            return self._fixed_extents()
        return merged(self._dynamic_extents())

    def _fixed_extents(self) -> Iterator[Extent]:
        if isinstance(self._file.f, io.FileIO | io.BufferedReader | io.BufferedRandom):
            return merged(allocated(self._file.f.fileno(), 0, self._size))
        return iter([Extent(0, self._size, False)] if self._size else [])

    def _dynamic_extents(self) -> Iterator[Extent]:
        """Runs of blocks (a 2 TiB disk has a million), split where a block's
        bitmap lacks sectors."""
        block, size = self._block, self._size
        run_start, run_zero = 0, True
        for index, entry in enumerate(self._bat):
            start = index * block
            if start >= size:
                break
            bitmap = None if entry == UNUSED else self._bitmap(index)
            zero = entry == UNUSED
            if bitmap is not None or zero != run_zero:
                if start > run_start:
                    yield Extent(run_start, start - run_start, run_zero)
                run_start, run_zero = start, zero
            if bitmap is not None:
                end = min(start + block, size)
                yield from _bitmap_runs(bitmap, start, end)
                run_start = end
        if size > run_start:
            yield Extent(run_start, size - run_start, run_zero)

    def _bitmap(self, index: int) -> bytes | None:
        """The block's sector bitmap, None when every sector is present (the
        usual case), cached for the last few blocks."""
        at = self._bat[index]
        if at in self._bitmaps:
            return self._bitmaps[at]
        raw = self._file.pread(at * SECTOR, self._bitmap_bytes)
        used = raw[: self._block // SECTOR // 8]
        bitmap = None if used == b"\xff" * len(used) else used
        if len(self._bitmaps) > 8:
            self._bitmaps.clear()
        self._bitmaps[at] = bitmap
        return bitmap

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self._size:
            raise ValueError(f"read at {offset}+{length} is past the end ({self._size})")
        if not self.dynamic:
            return self._file.pread(offset, length)
        pieces: list[bytes] = []
        while length > 0:
            index, within = divmod(offset, self._block)
            n = min(length, self._block - within)
            entry = self._bat[index]
            if entry == UNUSED:
                pieces.append(bytes(n))
            else:
                at = entry * SECTOR + self._bitmap_bytes + within
                data = self._file.pread(at, n)
                bitmap = self._bitmap(index)
                if bitmap is not None:
                    data = _mask(data, bitmap, within)
                pieces.append(data)
            offset += n
            length -= n
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        if self._owns:
            self._file.f.close()


def _sector_present(bitmap: bytes, sector: int) -> bool:
    return bool(bitmap[sector >> 3] & (0x80 >> (sector & 7)))


def _bitmap_runs(bitmap: bytes, start: int, end: int) -> Iterator[Extent]:
    sectors = -(-(end - start) // SECTOR)
    for sector in range(sectors):
        at = start + sector * SECTOR
        yield Extent(at, min(SECTOR, end - at), not _sector_present(bitmap, sector))


def _mask(data: bytes, bitmap: bytes, within: int) -> bytes:
    """``data`` (read from ``within`` in its block) with absent sectors zeroed."""
    out = bytearray(data)
    for sector in range(within // SECTOR, -(-(within + len(data)) // SECTOR)):
        if not _sector_present(bitmap, sector):
            lo = max(sector * SECTOR - within, 0)
            hi = min(sector * SECTOR - within + SECTOR, len(out))
            out[lo:hi] = bytes(hi - lo)
    return bytes(out)


class VhdWriter:
    """A dynamic VHD written into ``out`` (seekable: the BAT, near the start, is
    written last). Blocks given nothing but zeros are not allocated; an allocated
    block's bitmap marks every sector present, and what it was not given reads
    as zeros (a hole in ``out``)."""

    unit = BLOCK

    def __init__(
        self,
        out: BinaryIO,
        virtual_size: int,
        *,
        creator_app: bytes = CREATOR_APP,
        uuid: bytes | None = None,
        timestamp: float | None = None,
        _resume: Checkpoint | None = None,
    ) -> None:
        check_size(virtual_size)
        self._out = out
        self._size = virtual_size
        entries = -(-virtual_size // BLOCK)
        self._data_start = _BAT_AT + _bat_bytes(entries)
        self._header = DynamicHeader(_BAT_AT, entries)
        self._done = 0
        if _resume is None:
            made = time.time() if timestamp is None else timestamp
            self.footer = Footer(
                disk_type=DYNAMIC,
                current_size=virtual_size,
                original_size=virtual_size,
                data_offset=SECTOR,
                timestamp=max(int(made) - EPOCH, 0) & 0xFFFFFFFF,
                uuid=uuid or uuidlib.uuid4().bytes,
                creator_app=creator_app,
                geometry=chs_geometry(virtual_size),
            )
            self._bat = array("I", [UNUSED]) * entries
            out.seek(0)
            out.write(self.footer.pack())
            out.write(self._header.pack())
            self._write_bat()
            self._next = self._data_start
        else:
            head = _File(out, "the partial VHD")
            self.footer = Footer.unpack(head.pread(0, SECTOR), "the partial VHD")
            self._bat = table_from(head.pread(_BAT_AT, entries * 4), "I", "big")
            self._next = state_int(_resume.state, "next")
            self._done = _resume.virtual

    @classmethod
    def resume(cls, out: BinaryIO, virtual_size: int, checkpoint: Checkpoint) -> VhdWriter:
        """Carry on a write that stopped at ``checkpoint`` (``out`` readable too,
        already cut to ``checkpoint.size``)."""
        return cls(out, virtual_size, _resume=checkpoint)

    @staticmethod
    def output_size(blocks: int, virtual_size: int) -> int:
        """The bytes a VHD of ``virtual_size`` with ``blocks`` allocated holds."""
        entries = -(-virtual_size // BLOCK)
        return _BAT_AT + _bat_bytes(entries) + blocks * (SECTOR + BLOCK) + SECTOR

    def _write_bat(self) -> None:
        self._out.seek(_BAT_AT)
        raw = table_bytes(self._bat, "big")
        self._out.write(raw + b"\xff" * (_bat_bytes(len(self._bat)) - len(raw)))

    def write(self, offset: int, data: bytes) -> None:
        self._done = forward(self._done, offset, len(data), self._size)
        view = memoryview(data)
        while view:
            index, within = divmod(offset, BLOCK)
            piece = view[: BLOCK - within]
            if self._bat[index] == UNUSED:
                if is_zero(piece):
                    offset += len(piece)
                    view = view[len(piece) :]
                    continue
                self._bat[index] = self._next // SECTOR
                self._out.seek(self._next)
                self._out.write(b"\xff" * SECTOR)
                self._next += SECTOR + BLOCK
            self._out.seek(self._bat[index] * SECTOR + SECTOR + within)
            self._out.write(piece)
            offset += len(piece)
            view = view[len(piece) :]

    def checkpoint(self, at: int) -> Checkpoint:
        if at % BLOCK and at != self._size:
            raise ValueError(f"a VHD checkpoint must be at a block boundary, not {at}")
        self._write_bat()
        self._out.flush()
        return Checkpoint(at, self._next, {"next": self._next})

    def finish(self) -> int:
        self._write_bat()
        self._out.seek(self._next)
        self._out.write(self.footer.pack())
        self._out.flush()
        return self._next + SECTOR

    def close(self) -> None:
        """Nothing to release: ``out`` belongs to the caller."""


def state_int(state: Mapping[str, object], key: str) -> int:
    """An integer from a checkpoint's state, which came back from JSON."""
    value = state.get(key)
    if not isinstance(value, int):
        raise ValueError(f"checkpoint state {key!r} is {value!r}, not an integer")
    return value


def check_size(virtual_size: int) -> None:
    """A VHD holds whole sectors, up to 2040 GiB."""
    if virtual_size % SECTOR:
        raise UsageError(
            f"a VHD holds whole 512-byte sectors; {virtual_size} bytes is not a multiple of 512",
            hint=f"pad the source to {-(-virtual_size // SECTOR) * SECTOR} bytes "
            "(truncate -s) before converting",
        )
    if virtual_size > MAX_SIZE:
        raise UsageError(
            f"a VHD holds at most 2040 GiB; this disk has {virtual_size} bytes",
            hint="use qcow2 or raw for it (XCP's VHD SRs stop at 2 TiB too)",
        )
