"""What every disk reader and writer offers.

A reader describes its image as ``Extent``s in increasing order that cover
``[0, virtual_size)``; an extent marked ``zero`` reads as zeros and need not be
read, stored or sent. A writer takes data at increasing offsets; what it is not
given reads as zeros in its output. Formats that need to know the output before
they write it (a VHD's BAT, a tar header's size) get it from the reader's
extents, which are cheap: they come from the image's own allocation map.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

MiB = 1 << 20


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
