"""ustar headers, written by hand.

``tarfile`` writes a member from a file object of known size; the OVA writer
knows a disk member's size only once its writer has finished, so it writes
the header itself, twice (see :mod:`.package`). A size of 8 GiB or more does
not fit ustar's 11 octal digits; it is written base-256 (first byte 0x80), the
GNU extension that GNU tar, bsdtar and Python's ``tarfile`` read (not yet tried
against VMware or VirtualBox with a disk that large).
"""

from __future__ import annotations

from xenkit.core.errors import UsageError

BLOCK = 512
RECORD = 20 * BLOCK
END_OF_ARCHIVE = bytes(2 * BLOCK)
_OCTAL_SIZE_LIMIT = 8**11


def padding(size: int) -> int:
    """Zero bytes after a member of ``size`` bytes, to the next block."""
    return -size % BLOCK


def padded(size: int) -> int:
    return size + padding(size)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _size_field(size: int) -> bytes:
    if size < _OCTAL_SIZE_LIMIT:
        return _octal(size, 12)
    return bytes([0x80]) + size.to_bytes(11, "big")


def header(name: str, size: int, mtime: int) -> bytes:
    """A regular-file ustar header for ``name``."""
    raw = name.encode("utf-8")
    if len(raw) > 100 or not raw:
        raise UsageError(f"tar member name {name!r} must be 1 to 100 bytes")
    fields = [
        raw.ljust(100, b"\0"),
        _octal(0o644, 8),
        _octal(0, 8),
        _octal(0, 8),
        _size_field(size),
        _octal(mtime, 12),
        b" " * 8,
        b"0",
        bytes(100),
        b"ustar\x0000",
        bytes(32),
        bytes(32),
        _octal(0, 8),
        _octal(0, 8),
        bytes(155),
    ]
    block = b"".join(fields).ljust(BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]
