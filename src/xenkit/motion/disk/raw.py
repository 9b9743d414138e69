"""Raw images: a regular file or a block device holding the disk byte for byte.

The file system's own map (``SEEK_DATA``/``SEEK_HOLE``) says where the holes are;
that is free, but a raw disk made by ``dd`` or a guest that wrote zeros has
allocated zeros too, so the reader also looks at each data chunk and reports an
all-zero one as zero. It keeps the chunk it looked at, so the caller's next
``read`` of it costs nothing: a copy still reads the disk once.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.motion.disk.base import CHUNK, Checkpoint, ClosedOnExit, Extent, forward, is_zero

SPARSE_BLOCK = 64 * 1024
"""The smallest run of zeros the writer leaves as a hole (a qcow2 cluster)."""


def allocated(fd: int, start: int, end: int) -> Iterator[Extent]:
    """The file system's map of ``[start, end)`` of ``fd``: data and holes.

    Where the file system cannot tell (``EINVAL``, or a block device, where
    everything is data) the whole range is data."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                yield Extent(pos, end - pos, True)
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield Extent(pos, end - pos, False)
                return
            raise
        data = min(data, end)
        if data > pos:
            yield Extent(pos, data - pos, True)
        if data >= end:
            return
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            hole = end
        yield Extent(data, hole - data, False)
        pos = hole


def merged(extents: Iterator[Extent]) -> Iterator[Extent]:
    """Adjacent extents of the same kind as one."""
    run: Extent | None = None
    for ext in extents:
        if ext.length == 0:
            continue
        if run is not None and run.zero == ext.zero and run.end == ext.offset:
            run = Extent(run.offset, run.length + ext.length, run.zero)
            continue
        if run is not None:
            yield run
        run = ext
    if run is not None:
        yield run


def table_extents(
    tables: Iterator[Iterator[bool] | None], span: int, unit: int, size: int
) -> Iterator[Extent]:
    """The extents of an image mapped by tables (qcow2's L2, VMDK's grain tables):
    each of ``tables`` maps ``span`` bytes as one flag per ``unit`` (True: reads as
    zeros), or is None (not allocated: all zeros). Runs are built as the flags go
    by: an ``Extent`` per unit (32768 for 2 GiB) cost more than reading the data."""
    run_at, run_zero = 0, True
    for index, zeros in enumerate(tables):
        start = index * span
        if start >= size:
            break
        if zeros is None:
            if not run_zero:
                yield Extent(run_at, start - run_at, False)
                run_at, run_zero = start, True
            continue
        at = start
        for zero in islice(zeros, -(-(size - start) // unit)):
            if zero != run_zero:
                if at > run_at:
                    yield Extent(run_at, at - run_at, run_zero)
                run_at, run_zero = at, zero
            at += unit
    if run_at < size:
        yield Extent(run_at, size - run_at, run_zero)


class RawReader(ClosedOnExit):
    """A raw image on a path (file or block device); ``size`` limits it to its
    first ``size`` bytes (a fixed VHD's data before its footer)."""

    def __init__(self, path: str | Path, *, size: int | None = None) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise UsageError(
                f"{self.path} does not exist", hint="check the disk image's path"
            ) from exc
        except OSError as exc:
            raise OperationFailed(
                f"cannot open {self.path}: {exc.strerror}",
                hint="check its permissions (block devices need root)",
            ) from exc
        length = os.lseek(self._fd, 0, os.SEEK_END)
        self._size = length if size is None else min(size, length)
        self._block_device = stat.S_ISBLK(os.fstat(self._fd).st_mode)
        self._cached: tuple[int, bytes] | None = None

    @property
    def virtual_size(self) -> int:
        return self._size

    def allocation(self) -> Iterator[Extent]:
        """The file system's map only, reading nothing: cheap, but written zeros
        count as data."""
        if self._block_device:
            return iter([Extent(0, self._size, False)] if self._size else [])
        return merged(allocated(self._fd, 0, self._size))

    def extents(self) -> Iterator[Extent]:
        """The allocation map with each all-zero ``CHUNK`` of data marked zero.

        Data extents come one chunk (or less) at a time so the chunk just looked
        at is what the next ``read`` asks for."""
        zero_from: int | None = None
        for ext in self.allocation():
            if ext.zero:
                zero_from = ext.offset if zero_from is None else zero_from
                continue
            pos = ext.offset
            while pos < ext.end:
                end = min(ext.end, (pos // CHUNK + 1) * CHUNK)
                data = self._pread(pos, end - pos)
                if is_zero(data):
                    zero_from = pos if zero_from is None else zero_from
                else:
                    if zero_from is not None:
                        yield Extent(zero_from, pos - zero_from, True)
                        zero_from = None
                    self._cached = (pos, data)
                    yield Extent(pos, end - pos, False)
                pos = end
        if zero_from is not None:
            yield Extent(zero_from, self._size - zero_from, True)

    def read(self, offset: int, length: int) -> bytes:
        cached = self._cached
        if cached is not None:
            at, data = cached
            if at <= offset and offset + length <= at + len(data):
                if at == offset and length == len(data):
                    return data
                return data[offset - at : offset - at + length]
        return self._pread(offset, length)

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) < length:
            while len(data) < length:
                more = os.pread(self._fd, length - len(data), offset + len(data))
                if not more:
                    raise OperationFailed(
                        f"{self.path} ended at byte {offset + len(data)} while reading "
                        f"{length} bytes at {offset}",
                        hint="the image shrank while it was being read; do not change it "
                        "during a conversion",
                    )
                data += more
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._cached = None


class RawWriter:
    """A raw image written into ``out`` (offset 0 is the image's first byte).

    Runs of ``SPARSE_BLOCK`` zeros are seeked over, so a file system with holes
    stores nothing for them; ``finish`` sets the length to the virtual size."""

    unit = 1

    def __init__(self, out: BinaryIO, virtual_size: int) -> None:
        self._out = out
        self._size = virtual_size
        self._done = 0
        self._written_to = 0

    def write(self, offset: int, data: bytes) -> None:
        self._done = forward(self._done, offset, len(data), self._size)
        if len(data) <= SPARSE_BLOCK:
            if not is_zero(data):
                self._put(offset, data)
            return
        view = memoryview(data)
        start: int | None = None
        for at in range(0, len(data), SPARSE_BLOCK):
            block = data[at : at + SPARSE_BLOCK]
            if is_zero(block):
                if start is not None:
                    self._put(offset + start, view[start:at])
                    start = None
            elif start is None:
                start = at
        if start is not None:
            self._put(offset + start, view[start:])

    def _put(self, offset: int, data: bytes | memoryview) -> None:
        self._out.seek(offset)
        self._out.write(data)
        self._written_to = offset + len(data)

    def checkpoint(self, at: int) -> Checkpoint:
        self._out.flush()
        return Checkpoint(at, at)

    def finish(self) -> int:
        self._out.flush()
        if isinstance(self._out, io.FileIO | io.BufferedRandom | io.BufferedWriter):
            self._out.truncate(self._size)
        elif self._written_to < self._size:
            # a window inside a bigger file (a tar member) is not truncated: its
            # last byte gives it its length
            self._out.seek(self._size - 1)
            self._out.write(b"\0")
        self._out.flush()
        return self._size

    def close(self) -> None:
        """Nothing to release: ``out`` belongs to the caller."""
