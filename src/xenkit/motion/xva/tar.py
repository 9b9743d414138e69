"""The tar layer of an XVA: 512-byte ustar headers out, a sequential reader in.

Both sides work on a stream, never seeking, because an XVA usually travels
through a pipe or an HTTP body (``xe vm-export filename=/dev/stdout``, xapi's
``/import``). xapi writes and reads plain ustar members; the reader also follows
GNU long names and pax paths, and steps over directory entries, so a tar that
another tool repacked still reads.
"""

from __future__ import annotations

import gzip
import importlib
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from xenkit.core.errors import UsageError
from xenkit.motion.xva.errors import BadXva

BLOCK: Final = 512
RECORD: Final = 20 * BLOCK
"""GNU tar's default record: the archive's length is padded to a multiple of it."""

_MAX_OCTAL: Final = 8**11


def header(name: str, size: int) -> bytes:
    """A ustar header for a regular file, with mode 0400 and mtime 0 as in
    xapi's own exports: a chunk's header then costs no clock or syscall."""
    raw = name.encode()
    if len(raw) > 100 or size >= _MAX_OCTAL:
        raise ValueError(f"{name!r} ({size} bytes) does not fit a plain ustar header")
    b = bytearray(BLOCK)
    b[0 : len(raw)] = raw
    b[100:108] = b"0000400\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b"        "
    b[156] = 0x30
    b[257:265] = b"ustar\x0000"
    b[265:269] = b"root"
    b[297:301] = b"root"
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def trailer(written: int) -> bytes:
    """End-of-archive (two zero blocks), then zeros to the end of the record."""
    end = written + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int


class TarReader:
    """Members of a tar stream, in order. ``what`` arguments name what was being
    read, so a stream that ends early says where."""

    def __init__(self, src: BinaryIO, first: bytes = b"") -> None:
        self._src = src
        self._first = first
        self._left = 0
        self._pad = 0

    def _src_read(self, n: int) -> bytes:
        if self._first:
            data, self._first = self._first[:n], self._first[n:]
            return data
        try:
            return self._src.read(n)
        except EOFError:
            # A gzip stream cut before its end-of-stream marker.
            return b""
        except (gzip.BadGzipFile, zlib.error) as e:
            raise BadXva(f"the XVA's compressed stream is damaged: {e}") from None

    def _exact(self, n: int, what: str) -> bytes:
        data = self._src_read(n)
        while len(data) < n:
            more = self._src_read(n - len(data))
            if not more:
                raise BadXva(f"the XVA ends inside {what} ({len(data)} of {n} bytes there)")
            data += more
        return data

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` more bytes of the current member's data."""
        if n > self._left:
            raise ValueError(f"{what}: read past the member's end")
        self._left -= n
        return self._exact(n, what)

    def next(self, after: str) -> Member | None:
        """The next member, skipping what is unread of the current one; None at
        the end of the archive (a zero block, or the stream's end between
        members). ``after`` names the current member for messages."""
        if self._left or self._pad:
            self._exact(self._left + self._pad, after)
            self._left = self._pad = 0
        long_name: str | None = None
        while True:
            block = self._src_read(BLOCK)
            if not block:
                return None
            if len(block) < BLOCK:
                block += self._exact(BLOCK - len(block), f"the tar header after {after}")
            if block == bytes(BLOCK):
                return None
            name, size, kind = _parse(block, after)
            pad = -size % BLOCK
            if kind in (b"0", b"\0", b"7"):
                self._left, self._pad = size, pad
                return Member(long_name or name, size)
            data = self._exact(size + pad, f"the tar entry after {after}")[:size]
            if kind in (b"L", b"x"):
                long_name = _extended_name(kind, data, after) or long_name
            elif kind in (b"5", b"g"):
                long_name = None
            else:
                raise BadXva(
                    f"XVA member {long_name or name!r} is a tar entry of type {kind.decode()!r};"
                    " an XVA holds only regular files"
                )

    def drain(self, after: str) -> None:
        """Read the rest of the stream: the members and padding after ``after``.
        A pipe's writer then sees its whole output taken, and a gzip stream's
        CRC at the end is checked."""
        while self.next(after) is not None:
            pass
        while self._src_read(RECORD):
            pass


def _parse(block: bytes, after: str) -> tuple[str, int, bytes]:
    stored = _number(block[148:156])
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * 0x20
    # Some old tars sum signed chars.
    if stored not in (unsigned, unsigned - 256 * sum(b >= 0x80 for b in rest)):
        raise BadXva(f"the tar header after {after} is damaged (its checksum does not match)")
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    size = _number(block[124:136])
    if size is None:
        raise BadXva(f"the tar header after {after} has no valid size")
    return name.decode(errors="replace"), size, block[156:157]


def _number(field: bytes) -> int | None:
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return None


def _extended_name(kind: bytes, data: bytes, after: str) -> str | None:
    if kind == b"L":
        return data.split(b"\0", 1)[0].decode(errors="replace")
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BadXva(f"the pax header after {after} is damaged") from None
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode(errors="replace")
        pos += length
    return None


class _Prefixed(io.RawIOBase):
    """A stream with the bytes already read to sniff it put back in front."""

    def __init__(self, first: bytes, src: BinaryIO) -> None:
        self._first = first
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._first:
            n = min(len(buf), len(self._first))
            buf[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        data = self._src.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _zstd_reader() -> Callable[[BinaryIO], BinaryIO] | None:
    """zstandard's streaming decompressor, if installed (imported by name: it is
    optional, and its stubs must not decide whether xenkit type-checks)."""
    try:
        zstandard: Any = importlib.import_module("zstandard")
    except ImportError:
        return None

    def make(src: BinaryIO) -> BinaryIO:
        reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        return reader

    return make


def open_stream(src: BinaryIO) -> TarReader:
    """A reader of the tar in ``src``, plain or compressed the ways xapi's
    ``/import`` accepts (gzip, zstd)."""
    first = src.read(BLOCK)
    while 0 < len(first) < BLOCK:
        more = src.read(BLOCK - len(first))
        if not more:
            break
        first += more
    if first[:2] == b"\x1f\x8b":
        unzipped = gzip.GzipFile(fileobj=io.BufferedReader(_Prefixed(first, src)), mode="rb")
        return TarReader(unzipped)  # type: ignore[arg-type]
    if first[:4] == b"\x28\xb5\x2f\xfd":
        make = _zstd_reader()
        if make is None:
            raise UsageError(
                "the XVA is zstd-compressed and the Python module zstandard is not installed",
                hint="pip install zstandard, or decompress it first: zstd -dc vm.xva > plain.xva",
            )
        return TarReader(make(io.BufferedReader(_Prefixed(first, src))))
    for magic, tool in ((b"BZh", "bzip2"), (b"\xfd7zXZ", "xz")):
        if first.startswith(magic):
            raise BadXva(
                f"the XVA is {tool}-compressed; neither xapi nor xenkit reads that",
                hint=f"decompress it first ({tool} -dc) or recompress with gzip or zstd",
            )
    return TarReader(src, first)
