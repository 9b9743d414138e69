"""Where an ``xl migrate`` stream reaches the guest's last instant on the sender.

A storage migration must stop mirroring the disks after the guest has stopped
writing (it is suspended) and before the receiving host opens them (libxl
attaches the disks only once it has read the whole stream). The sender's stream
marks that moment itself: the libxc stream's END record follows the suspend and
the last dirty pages. ``StreamWatch`` follows the three layers (xl's save header,
libxl's records, libxc's records inside the LIBXC_CONTEXT one) by their headers
only, and says where that END record begins.

Formats: Xen's ``tools/xl/xl_saverestore.c``, ``docs/specs/libxl-migration-stream``
and ``docs/specs/libxc-migration-stream`` (4.17). Standard library only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
XL_HEADER = 48
LIBXL_IDENT = 0x4C6962786C466D74
LIBXL_HEADER = 16
LIBXC_MARKER = 0xFFFFFFFFFFFFFFFF
LIBXC_ID = 0x58454E46
LIBXC_IMAGE_HEADER = 24
LIBXC_DOMAIN_HEADER = 16
RECORD_HEADER = 8
LIBXC_RECORD_MAX = 128 << 20
REC_END = 0
LIBXL_REC_LIBXC_CONTEXT = 1


class StreamFormatError(ValueError):
    """The stream is not one this watcher understands; the migration must not go on."""


class _Part(Enum):
    XL_HEADER = "xl header"
    XL_OPTIONAL = "xl optional data"
    LIBXL_HEADER = "libxl header"
    LIBXL_RECORD = "libxl record header"
    LIBXC_IMAGE = "libxc image header"
    LIBXC_DOMAIN = "libxc domain header"
    LIBXC_RECORD = "libxc record header"
    BODY = "record body"
    DONE = "after libxl's END"


def _padded(length: int) -> int:
    return (length + 7) & ~7


@dataclass
class StreamWatch:
    """Fed the sender's bytes in order, in chunks of any size."""

    #: Bytes seen so far.
    offset: int = 0
    #: Stream offset of the libxc END record, once seen.
    end_at: int | None = None
    _part: _Part = _Part.XL_HEADER
    _need: int = XL_HEADER
    _buf: bytearray = field(default_factory=bytearray)
    #: The part that follows a record body.
    _after_body: _Part = _Part.LIBXL_RECORD

    @property
    def done(self) -> bool:
        """libxl's END record has gone by: the rest is xl's handshake."""
        return self._part is _Part.DONE

    def feed(self, chunk: bytes) -> int | None:
        """Take ``chunk``; where in it the libxc END record starts, if it does."""
        found: int | None = None
        pos = 0
        while pos < len(chunk) and self._part is not _Part.DONE:
            take = min(self._need - len(self._buf), len(chunk) - pos)
            if self._part is _Part.BODY or self._part is _Part.XL_OPTIONAL:
                self._need -= take
                pos += take
                if self._need == 0:
                    self._part, self._need = self._after_body, RECORD_HEADER
                    if self._part is _Part.LIBXL_HEADER:
                        self._need = LIBXL_HEADER
                continue
            start = self.offset + pos
            self._buf += chunk[pos : pos + take]
            pos += take
            if len(self._buf) < self._need:
                continue
            header, self._buf = bytes(self._buf), bytearray()
            if self._part is _Part.LIBXC_RECORD and struct.unpack("<I", header[:4])[0] == REC_END:
                self.end_at = start - (RECORD_HEADER - take)
                found = max(0, self.end_at - self.offset)
            self._parse(header)
        self.offset += len(chunk)
        return found

    def _body(self, length: int, then: _Part) -> None:
        if length:
            self._part, self._need, self._after_body = _Part.BODY, _padded(length), then
        else:
            self._part, self._need = then, RECORD_HEADER

    def _parse(self, header: bytes) -> None:
        part = self._part
        if part is _Part.XL_HEADER:
            if header[:32] != XL_MAGIC:
                raise StreamFormatError("no xl save header at the start of the stream")
            (optional,) = struct.unpack("<I", header[44:48])
            self._part, self._need, self._after_body = (
                _Part.XL_OPTIONAL,
                optional,
                _Part.LIBXL_HEADER,
            )
            if optional == 0:
                self._part, self._need = _Part.LIBXL_HEADER, LIBXL_HEADER
        elif part is _Part.LIBXL_HEADER:
            ident, version, _options = struct.unpack(">QII", header)
            if ident != LIBXL_IDENT or version != 2:
                raise StreamFormatError(f"not a libxl v2 stream (ident {ident:#x}, v{version})")
            self._part, self._need = _Part.LIBXL_RECORD, RECORD_HEADER
        elif part is _Part.LIBXL_RECORD:
            rtype, length = struct.unpack("<II", header)
            if rtype == REC_END:
                self._part = _Part.DONE
            elif rtype == LIBXL_REC_LIBXC_CONTEXT:
                if length:
                    raise StreamFormatError("a LIBXC_CONTEXT record with a body")
                self._part, self._need = _Part.LIBXC_IMAGE, LIBXC_IMAGE_HEADER
            else:
                self._body(length, _Part.LIBXL_RECORD)
        elif part is _Part.LIBXC_IMAGE:
            marker, ident, version = struct.unpack(">QII", header[:16])
            if marker != LIBXC_MARKER or ident != LIBXC_ID:
                raise StreamFormatError("no libxc image header in the LIBXC_CONTEXT record")
            if version < 2:
                raise StreamFormatError(f"libxc stream version {version} is too old")
            self._part, self._need = _Part.LIBXC_DOMAIN, LIBXC_DOMAIN_HEADER
        elif part is _Part.LIBXC_DOMAIN:
            self._part, self._need = _Part.LIBXC_RECORD, RECORD_HEADER
        elif part is _Part.LIBXC_RECORD:
            rtype, length = struct.unpack("<II", header)
            if length > LIBXC_RECORD_MAX:
                raise StreamFormatError(f"a libxc record of {length} bytes (type {rtype:#x})")
            if rtype == REC_END:
                self._body(length, _Part.LIBXL_RECORD)
            else:
                self._body(length, _Part.LIBXC_RECORD)
