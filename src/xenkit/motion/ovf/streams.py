"""File views onto one tar member, digesting the bytes as they pass.

Neither view copies a disk: the writer's view is where a disk writer writes
its image, straight into the OVA; the reader's view is what a caller reads an
image from, straight out of it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import BinaryIO

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.motion.ovf.manifest import Digest, check

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)


def _hash_zeros(h: hashlib._Hash, count: int) -> None:
    while count > 0:
        n = min(count, CHUNK)
        h.update(_ZEROS[:n])
        count -= n


class MemberSink(io.RawIOBase):
    """A seekable file starting at ``start`` of ``out``, for a disk writer.

    The SHA256 is taken as the data is written while writes only move
    forward (a gap reads as zeros, so zeros are digested for it); a writer
    that goes back to patch what it wrote (a header, a BAT) makes the view
    read its bytes back once, at :meth:`close_member`.
    """

    def __init__(self, out: BinaryIO, start: int) -> None:
        super().__init__()
        self._out = out
        self._start = start
        self._pos = 0
        self._end = 0
        self._sha = hashlib.sha256()
        self._rewritten = False

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start of the member")
        self._pos = base + offset
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        if not chunk:
            return 0
        if self._pos < self._end:
            self._rewritten = True
        elif not self._rewritten:
            _hash_zeros(self._sha, self._pos - self._end)
            self._sha.update(chunk)
        self._out.seek(self._start + self._pos)
        self._out.write(chunk)
        self._pos += len(chunk)
        self._end = max(self._end, self._pos)
        return len(chunk)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self._end - self._pos))
        self._out.seek(self._start + self._pos)
        data = self._out.read(n).ljust(n, b"\0")
        buffer[:n] = data
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        """Only grows the member: what lies past the written end reads as zeros."""
        size = self._pos if size is None else size
        if size < self._end:
            raise OSError(f"a tar member cannot shrink ({self._end} to {size} bytes)")
        if not self._rewritten:
            _hash_zeros(self._sha, size - self._end)
        self._end = size
        return size

    def close_member(self, reported: int) -> tuple[int, str]:
        """The member's size and SHA256 hex, given what the writer's
        ``finish`` said it wrote."""
        if reported > self._end:
            self.truncate(reported)
        elif reported < self._end:
            raise OperationFailed(
                f"the disk writer reports {reported} bytes but wrote {self._end}",
                hint="a bug in the disk writer; the OVA was not written",
            )
        if self._rewritten:
            self._sha = hashlib.sha256()
            done = 0
            while done < self._end:
                n = min(CHUNK, self._end - done)
                self._out.seek(self._start + done)
                self._sha.update(self._out.read(n).ljust(n, b"\0"))
                done += n
        return self._end, self._sha.hexdigest()


class MemberSource(io.RawIOBase):
    """``size`` bytes of ``f`` from ``start``, read-only and seekable, checked
    against ``digest`` (if any) by :meth:`verify`.

    The digest runs in file order: a read past what has been digested first
    digests the gap (a read of the file, not a copy), a read of bytes already
    digested adds nothing, so a sequential reader costs one pass and a
    seeking one at most one extra read of what it skipped.
    """

    def __init__(
        self,
        f: BinaryIO,
        start: int,
        size: int,
        *,
        name: str,
        source: str,
        digest: Digest | None,
        on_digested: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._f = f
        self._start = start
        self._size = size
        self._pos = 0
        self._hashed = 0
        self.name = name
        self._source = source
        self._digest = digest
        self._hasher = digest.hasher() if digest is not None else None
        self._on_digested = on_digested

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start of {self.name}")
        self._pos = base + offset
        return self._pos

    def _read_at(self, pos: int, n: int) -> bytes:
        self._f.seek(self._start + pos)
        data = self._f.read(n)
        if len(data) != n:
            raise UsageError(
                f"{self._source}: {self.name} ends {n - len(data)} bytes early "
                f"(at byte {pos + len(data)} of {self._size})",
                hint="the package is truncated; fetch or export it again",
            )
        return data

    def _digest_to(self, pos: int) -> None:
        while self._hashed < pos:
            n = min(CHUNK, pos - self._hashed)
            self._advance(self._read_at(self._hashed, n))

    def _advance(self, data: bytes) -> None:
        if self._hasher is not None:
            self._hasher.update(data)
        self._hashed += len(data)
        if self._on_digested is not None:
            self._on_digested(len(data))

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._digest_to(self._pos)
        data = self._read_at(self._pos, n)
        buffer[:n] = data
        if self._pos <= self._hashed < self._pos + n:
            self._advance(data[self._hashed - self._pos :])
        self._pos += n
        return n

    def verify(self) -> None:
        """Digest what was not read and compare (:class:`ManifestMismatch`)."""
        self._digest_to(self._size)
        if self._digest is not None and self._hasher is not None:
            check(self._source, self.name, self._digest, self._hasher.hexdigest())
