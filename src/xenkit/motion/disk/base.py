"""What every disk reader and writer offers.

A reader describes its image as ``Extent``s in increasing order that cover
``[0, virtual_size)``; an extent marked ``zero`` reads as zeros and need not be
read, stored or sent. A writer takes data at increasing offsets; what it is not
given reads as zeros in its output. Formats that need to know the output before
they write it (a VHD's BAT, a tar header's size) get it from the reader's
extents, which are cheap: they come from the image's own allocation map.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Protocol, Self

from xenkit.core.errors import UsageError

MiB = 1 << 20
SECTOR = 512
CHUNK = MiB
"""How much is read, compared with zeros and handed on at once: big enough for
C code (zlib, hashlib, memcmp) to dominate, small enough to keep memory flat."""


@dataclass(frozen=True, slots=True)
class Extent:
    offset: int
    length: int
    zero: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


class DiskReader(Protocol):
    """An open image; ``close`` releases what it holds (a file, a qemu-nbd)."""

    @property
    def virtual_size(self) -> int: ...

    def extents(self) -> Iterator[Extent]: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class DiskWriter(Protocol):
    """An image being written into ``out``. ``write`` offsets never go back;
    ``finish`` writes what the format keeps at the end (footer, BAT, grain
    directory) and returns the number of bytes the output holds."""

    def write(self, offset: int, data: bytes) -> None: ...

    def finish(self) -> int: ...


class Progress(Protocol):
    """Told how many bytes of the virtual size are done, out of how many."""

    def __call__(self, done: int, total: int) -> None: ...


def no_progress(done: int, total: int) -> None:
    """The default: nobody is watching."""


BinaryOut = BinaryIO


_ZEROS = bytes(CHUNK)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is all zero bytes. A ``bytes``/``bytearray`` comparison is
    a ``memcmp``; a memoryview's compares item by item, so it is copied first."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    n = len(data)
    if n <= CHUNK:
        return data == _ZEROS if n == CHUNK else data == bytes(n)
    return all(data[i : i + CHUNK] == _ZEROS[: n - i] for i in range(0, n, CHUNK))


def forward(done: int, offset: int, length: int, size: int) -> int:
    """The new ``done`` after a write of ``length`` bytes at ``offset``. Writers
    lay the output down front to back, so a write that goes back or past the end
    is the caller's bug, and refused before anything is written."""
    if offset < done:
        raise ValueError(f"write at {offset} goes back before {done}")
    if offset + length > size:
        raise ValueError(f"write at {offset}+{length} is past the end ({size})")
    return offset + length


ByteOrder = Literal["big", "little"]


def table_from(raw: bytes, typecode: str, order: ByteOrder) -> array[int]:
    """An on-disk table of integers (a BAT, an L1, a grain directory) as an array
    in this machine's order; one C pass, not an unpack per entry."""
    table = array(typecode, raw)
    if sys.byteorder != order:
        table.byteswap()
    return table


def table_bytes(table: array[int], order: ByteOrder) -> bytes:
    """``table`` as the format stores it; ``table`` itself is left as it is."""
    if sys.byteorder != order:
        table = array(table.typecode, table)
        table.byteswap()
    return table.tobytes()


def read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` of a file object, fewer only at its end,
    as ``os.pread`` gives them: a tar member's window, say, may return short reads
    before its end."""
    f.seek(offset)
    data = f.read(length)
    while len(data) < length and (more := f.read(length - len(data))):
        data += more
    return data


class CorruptImage(UsageError):
    """An image's own structures contradict themselves or the format: a bad magic,
    a checksum that does not match, a table pointing past the end of the file."""


@dataclass(frozen=True)
class Checkpoint:
    """A point a write can be resumed from: the first ``virtual`` bytes of content
    are in the output's first ``size`` bytes (None: leave the output's length
    alone, the format keeps its own consistency), and ``state`` (JSON-able) is
    what a new writer needs to carry on from there."""

    virtual: int
    size: int | None
    state: Mapping[str, object] = field(default_factory=dict)


class ResumableWriter(DiskWriter, Protocol):
    """A writer that can say where an interrupted write can start again.

    ``checkpoint(at)`` is called with everything below ``at`` given (``at`` a
    multiple of ``unit``), makes that part durable as far as the writer can, and
    returns where to resume; ``close`` drops what the writer holds without
    finishing (a failed or interrupted write)."""

    @property
    def unit(self) -> int: ...

    def checkpoint(self, at: int) -> Checkpoint: ...

    def close(self) -> None: ...


class ClosedOnExit:
    """``with reader:`` closes it, whatever happens inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
