"""qemu's formats: any image qemu can open, through ``qemu-nbd`` on a private
unix socket, and qcow2, qemu's own, also read directly.

qemu decodes the format (qcow2 with backing chains, VMDK descriptors with
separate extents, whatever else it knows) and serves the guest-visible disk over
NBD; a small client here speaks the fixed newstyle handshake (``NBD_OPT_GO``),
structured replies and ``NBD_CMD_BLOCK_STATUS`` in the ``base:allocation``
context, which is qemu's own allocation map, and keeps several reads in flight.
Nothing is copied to a temporary file. The protocol is doc/proto.md of the
NetworkBlockDevice project. (qcow2 is written by ``xenkit.motion.disk.qcow2``,
straight into the file: through a socket, writing was three times slower than
``qemu-img``.)

Going through a socket costs two copies and a process switch per request, which
caps it near 1-1.5 GB/s; a plain qcow2 (one file, no encryption, deflate if
compressed: nearly every one) is read straight from its L2 tables instead, at
the speed of ``pread``. The layout is qemu's docs/interop/qcow2.txt.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from xenkit.core.errors import MissingTool, OperationFailed, UsageError
from xenkit.motion.disk.base import (
    CHUNK,
    ClosedOnExit,
    CorruptImage,
    Extent,
    read_at,
    table_from,
)
from xenkit.motion.disk.raw import merged, table_extents

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_ABORT, OPT_GO, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 2, 7, 8, 10
REP_ACK, REP_INFO, REP_META_CONTEXT = 1, 3, 4
REP_FLAG_ERROR = 1 << 31
INFO_EXPORT = 0
TRANSMIT_READ_ONLY = 1 << 1
CMD_READ, CMD_DISC, CMD_BLOCK_STATUS = 0, 2, 7
CMD_FLAG_DF = 1 << 2
REPLY_FLAG_DONE = 1
REPLY_NONE, REPLY_OFFSET_DATA, REPLY_OFFSET_HOLE, REPLY_BLOCK_STATUS = 0, 1, 2, 5
REPLY_ERROR_BIT = 1 << 15
STATE_HOLE, STATE_ZERO = 1, 2
ALLOCATION = b"base:allocation"
EXPORT = b"xenkit"

QEMU_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk"}
"""Our format names to qemu's (qemu calls VHD ``vpc``)."""

_REQUEST = struct.Struct(">IHHQQI")
_OPTION = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")
_SIMPLE = struct.Struct(">IQ")
_STRUCTURED = struct.Struct(">HHQI")
_MAX_REQUEST = 32 << 20
_RUNS_AHEAD = 1024


def _u32(data: bytes) -> int:
    return int(struct.unpack_from(">I", data)[0])


class NbdError(OperationFailed):
    """The NBD server refused a request or broke the protocol."""


def tool(program: str) -> str:
    """The path of a qemu-utils program."""
    found = shutil.which(program)
    if found is None:
        raise MissingTool(program, "qemu-utils")
    return found


@dataclass
class _Request:
    """A request sent and not yet fully answered."""

    command: int
    offset: int
    length: int
    data: bytearray | None = None
    runs: list[tuple[int, int]] = field(default_factory=list)
    done: bool = False
    error: NbdError | None = None
    forgotten: bool = False


class NbdClient:
    """One NBD connection over a unix socket, in transmission phase.

    Requests are sent without waiting and answered in any order (qemu-nbd works
    on several at once); ``wait`` reads replies until a given one is complete."""

    def __init__(self, path: str | Path, export: bytes = EXPORT) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._cookie = 0
        self._requests: dict[int, _Request] = {}
        try:
            self._sock.connect(str(path))
            self._handshake(export)
        except BaseException:
            self._sock.close()
            raise

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            count = self._sock.recv_into(view[got:], len(view) - got)
            if count == 0:
                raise NbdError(
                    "the NBD server closed the connection",
                    hint="qemu-nbd stopped; its error, if any, is above",
                )
            got += count

    def _option(self, option: int, data: bytes = b"") -> None:
        self._sock.sendall(_OPTION.pack(IHAVEOPT, option, len(data)) + data)

    def _option_reply(self, option: int) -> tuple[int, bytes]:
        magic, opt, kind, length = _OPTION_REPLY.unpack(self._recv(_OPTION_REPLY.size))
        if magic != OPT_REPLY_MAGIC or opt != option:
            raise NbdError(f"bad NBD option reply (magic {magic:#x}, option {opt})")
        return kind, self._recv(length) if length else b""

    def _handshake(self, export: bytes) -> None:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("the NBD server does not speak the fixed newstyle handshake")
        self._sock.sendall(struct.pack(">I", flags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)))
        self._option(OPT_STRUCTURED_REPLY)
        kind, _ = self._option_reply(OPT_STRUCTURED_REPLY)
        self.structured = kind == REP_ACK
        self._context: int | None = None
        if self.structured:
            query = struct.pack(">I", len(export)) + export
            query += struct.pack(">II", 1, len(ALLOCATION)) + ALLOCATION
            self._option(OPT_SET_META_CONTEXT, query)
            while True:
                kind, data = self._option_reply(OPT_SET_META_CONTEXT)
                if kind == REP_META_CONTEXT and data[4:] == ALLOCATION:
                    self._context = struct.unpack(">I", data[:4])[0]
                elif kind == REP_ACK or kind & REP_FLAG_ERROR:
                    break
        self._option(OPT_GO, struct.pack(">I", len(export)) + export + struct.pack(">H", 0))
        self.size = -1
        self.read_only = True
        while True:
            kind, data = self._option_reply(OPT_GO)
            if kind & REP_FLAG_ERROR:
                raise NbdError(
                    f"the NBD server refused export {export.decode()!r}: "
                    f"{data.decode(errors='replace') or kind & ~REP_FLAG_ERROR}"
                )
            if kind == REP_INFO and struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                self.size, transmit = struct.unpack(">QH", data[2:12])
                self.read_only = bool(transmit & TRANSMIT_READ_ONLY)
            elif kind == REP_ACK:
                break
        if self.size < 0:
            raise NbdError("the NBD server did not say how big the export is")

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def submit(
        self, command: int, offset: int, length: int, payload: bytes | memoryview = b""
    ) -> int:
        """Send a request; its cookie names it for ``wait``."""
        self._cookie += 1
        flags = CMD_FLAG_DF if command == CMD_READ and self.structured else 0
        head = _REQUEST.pack(REQUEST_MAGIC, flags, command, self._cookie, offset, length)
        request = _Request(command, offset, length)
        if command == CMD_READ:
            request.data = bytearray(length)
        self._requests[self._cookie] = request
        if payload:
            self._sock.sendmsg([head, payload])
        else:
            self._sock.sendall(head)
        return self._cookie

    def wait(self, cookie: int) -> _Request:
        """Read replies until ``cookie``'s is complete; raise its error if any."""
        request = self._requests[cookie]
        while not request.done:
            self._reply()
        del self._requests[cookie]
        if request.error is not None:
            raise request.error
        return request

    def _reply(self) -> None:
        magic = struct.unpack(">I", self._recv(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = _SIMPLE.unpack(self._recv(_SIMPLE.size))
            request = self._known(cookie)
            if error:
                request.error = self._failed(request, os.strerror(error))
            elif request.data is not None:
                self._recv_into(memoryview(request.data))
            request.done = True
            if request.forgotten:
                del self._requests[cookie]
            return
        if magic != STRUCTURED_REPLY_MAGIC:
            raise NbdError(f"bad NBD reply magic {magic:#x}")
        flags, kind, cookie, length = _STRUCTURED.unpack(self._recv(_STRUCTURED.size))
        request = self._known(cookie)
        if kind == REPLY_OFFSET_DATA and request.data is not None:
            at = struct.unpack(">Q", self._recv(8))[0] - request.offset
            if at < 0 or at + length - 8 > request.length:
                raise NbdError(f"NBD read reply outside the request at {request.offset}")
            self._recv_into(memoryview(request.data)[at : at + length - 8])
        else:
            payload = self._recv(length) if length else b""
            if kind & REPLY_ERROR_BIT:
                error, size = struct.unpack(">IH", payload[:6])
                detail = f"{os.strerror(error)} {payload[6 : 6 + size].decode(errors='replace')}"
                request.error = self._failed(request, detail.strip())
            elif kind == REPLY_BLOCK_STATUS and _u32(payload) == self._context:
                request.runs += list(struct.iter_unpack(">II", payload[4:]))
        if flags & REPLY_FLAG_DONE:
            request.done = True
            if request.forgotten:
                del self._requests[cookie]

    def forget(self, cookie: int) -> None:
        """Let a request's reply be dropped when it comes (a read nobody wants)."""
        request = self._requests[cookie]
        if request.done:
            del self._requests[cookie]
        else:
            request.forgotten = True

    def _known(self, cookie: int) -> _Request:
        request = self._requests.get(cookie)
        if request is None:
            raise NbdError(f"NBD reply for request {cookie}, which was not sent")
        return request

    def _failed(self, request: _Request, detail: str) -> NbdError:
        what = {CMD_READ: "read"}.get(request.command, "block status")
        return NbdError(
            f"NBD {what} at {request.offset} ({request.length} bytes) failed: {detail}",
            hint="qemu-nbd's own message, if any, is above",
        )

    def read(self, offset: int, length: int) -> bytes:
        data = self.wait(self.submit(CMD_READ, offset, length)).data
        assert data is not None
        return bytes(data)

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """(length, flags) runs from ``offset``, covering at least some of it."""
        if self._context is None:
            return [(length, 0)]
        runs = self.wait(self.submit(CMD_BLOCK_STATUS, offset, min(length, 0xFFFFFFFF))).runs
        return runs or [(length, 0)]

    def settle(self) -> None:
        """Wait for every request in flight."""
        while self._requests:
            self.wait(min(self._requests))

    def disconnect(self) -> None:
        try:
            self.settle()
            self.submit(CMD_DISC, 0, 0)
        finally:
            self._sock.close()

    def abort(self) -> None:
        self._sock.close()


@dataclass
class QemuNbd:
    """A ``qemu-nbd`` serving one image on a socket in a private directory, for
    one client; stopped and the directory removed by ``stop``.

    It runs in its own session, so a Ctrl-C reaches only us and we end the
    connection in order. Without ``--persistent`` it
    exits when its client goes, so even our being killed ends it."""

    image: Path
    fmt: str

    def start(self) -> Path:
        argv = [
            tool("qemu-nbd"),
            f"--format={QEMU_FORMATS.get(self.fmt, self.fmt)}",
            f"--export-name={EXPORT.decode()}",
            "--read-only",
        ]
        self._dir = Path(tempfile.mkdtemp(prefix="xenkit-nbd-"))
        self.socket = self._dir / "nbd.sock"
        argv += [f"--socket={self.socket}", str(self.image)]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self._proc.poll() is not None:
                refusal = self.refusal()
                self.stop()
                raise refusal
            if time.monotonic() > deadline:
                self.stop()
                raise OperationFailed(
                    f"qemu-nbd did not start serving {self.image} within 20 s",
                    hint="the machine may be overloaded; retry",
                )
            time.sleep(0.005)
        return self.socket

    def refusal(self) -> OperationFailed | CorruptImage:
        """The error qemu-nbd exited with, as ours."""
        message = self._stderr()
        what = f"qemu-nbd cannot open {self.image} as {self.fmt}: {message}"
        if "lock" in message:
            return OperationFailed(what, hint="another program (a VM, a qemu-img) uses it")
        if "not in" in message or "Invalid" in message or "invalid" in message:
            return CorruptImage(what, hint=f"check it with: qemu-img check -f {self.fmt} ...")
        return OperationFailed(what, hint=f"check it with: qemu-img info {self.image}")

    def _stderr(self) -> str:
        err = self._proc.stderr.read() if self._proc.stderr else b""
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._proc.returncode}"

    def stop(self, timeout: float = 30) -> None:
        """Wait for qemu-nbd to exit (it does once its client has gone), ending
        it if it does not; then remove the socket directory."""
        proc = getattr(self, "_proc", None)
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()
        self.unlink_socket()

    def unlink_socket(self) -> None:
        """Remove the socket and its directory once connected: the connection
        does not need them, and nothing is left behind even if we are killed."""
        directory: Path | None = getattr(self, "_dir", None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            del self._dir

    def failed(self) -> bool:
        return self._proc.returncode not in (0, None)

    def exited(self) -> bool:
        return self._proc.poll() is not None


class QemuReader(ClosedOnExit):
    """An image qemu understands, read through qemu-nbd (read-only).

    ``fmt`` is ours (raw, qcow2, vhd, vmdk) or any qemu format name. Reads are
    answered ahead: once the map is known, the next ``READ_AHEAD`` chunks of data
    (cut the way ``convert.copy`` cuts them) are asked for before they are read,
    so qemu-nbd decodes while we write."""

    READ_AHEAD = 8

    def __init__(self, path: str | Path, fmt: str = "qcow2") -> None:
        if not Path(path).exists():
            raise UsageError(f"{path} does not exist", hint="check the image's path")
        self.path = Path(path)
        self.fmt = fmt
        self._server = QemuNbd(self.path, fmt)
        self._server.start()
        try:
            self._nbd = self._connect()
        except BaseException:
            self._server.stop(timeout=5)
            raise
        self._server.unlink_socket()
        self._closed = False
        self._data: deque[list[int]] = deque()
        self._ahead: dict[tuple[int, int], int] = {}
        self._plan = 0

    def _connect(self) -> NbdClient:
        """Connect, retrying while qemu-nbd has bound its socket but does not
        listen yet."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return NbdClient(self._server.socket)
            except (ConnectionResetError, BrokenPipeError, NbdError) as exc:
                # qemu-nbd took the connection and then gave up on the image: its refusal
                # says why (it exits a moment later), else the error is the connection's.
                end = time.monotonic() + 5
                while not self._server.exited() and time.monotonic() < end:
                    time.sleep(0.01)
                if self._server.exited():
                    raise self._server.refusal() from exc
                raise
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                if self._server.exited():
                    raise self._server.refusal() from exc
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"cannot connect to the qemu-nbd serving {self.path}: {exc}",
                        hint="the machine may be overloaded; retry",
                    ) from exc
                time.sleep(0.005)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ahead.clear()
        try:
            self._nbd.disconnect()
        except (OSError, NbdError):
            self._nbd.abort()
        finally:
            self._server.stop()

    @property
    def virtual_size(self) -> int:
        return self._nbd.size

    def allocation(self) -> Iterator[Extent]:
        """qemu's map, with nothing kept for reading ahead."""
        return merged(self._map(record=False))

    def extents(self) -> Iterator[Extent]:
        """qemu's map: ``NBD_STATE_ZERO`` runs are zero, everything else data."""
        self._data.clear()
        return merged(self._map(record=True))

    def _map(self, *, record: bool) -> Iterator[Extent]:
        pos, size = 0, self._nbd.size
        while pos < size:
            found = []
            for length, flags in self._nbd.block_status(pos, size - pos):
                length = min(length, size - pos)
                found.append(Extent(pos, length, bool(flags & STATE_ZERO)))
                pos += length
                if pos >= size:
                    break
            for ext in found if record else ():
                if ext.zero:
                    continue
                if self._data and self._data[-1][1] == ext.offset:
                    self._data[-1][1] = ext.end
                elif len(self._data) < _RUNS_AHEAD:
                    self._data.append([ext.offset, ext.end])
            yield from found

    def read(self, offset: int, length: int) -> bytes:
        cookie = self._ahead.pop((offset, length), None)
        if cookie is None:
            for stale in self._ahead.values():
                self._nbd.forget(stale)
            self._ahead.clear()
            parts: list[bytes] = []
            while length > _MAX_REQUEST:
                parts.append(self._nbd.read(offset, _MAX_REQUEST))
                offset += _MAX_REQUEST
                length -= _MAX_REQUEST
            cookie = self._nbd.submit(CMD_READ, offset, length)
            self._plan = offset + length
            if parts:
                self._read_ahead()
                return b"".join([*parts, self._received(cookie)])
        self._read_ahead()
        return self._received(cookie)

    def _received(self, cookie: int) -> bytes:
        data = self._nbd.wait(cookie).data
        assert data is not None
        return bytes(data)

    def _read_ahead(self) -> None:
        while len(self._ahead) < self.READ_AHEAD:
            while self._data and self._data[0][1] <= self._plan:
                self._data.popleft()
            if not self._data:
                return
            start = max(self._plan, self._data[0][0])
            end = min(self._data[0][1], (start // CHUNK + 1) * CHUNK)
            self._ahead[(start, end - start)] = self._nbd.submit(CMD_READ, start, end - start)
            self._plan = end


QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")
_QCOW2_V3 = struct.Struct(">QQQII")
QCOW2_DIRTY, QCOW2_CORRUPT, QCOW2_DATA_FILE, QCOW2_COMPRESSION, QCOW2_EXTENDED_L2 = (
    1 << 0,
    1 << 1,
    1 << 2,
    1 << 3,
    1 << 4,
)
_L2_OFFSET = 0x00FFFFFFFFFFFE00
_L2_COMPRESSED = 1 << 62
_L2_ZERO = 1


@dataclass(frozen=True)
class Qcow2Header:
    """The fields of a qcow2 header a reader needs (docs/interop/qcow2.txt)."""

    version: int
    backing_file_offset: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    incompatible: int = 0
    compression_type: int = 0

    @classmethod
    def unpack(cls, raw: bytes, name: str) -> Qcow2Header:
        if raw[:4] != QCOW2_MAGIC:
            raise CorruptImage(f"{name} is not a qcow2 image: no 'QFI\\xfb' magic")
        fields = _QCOW2_HEADER.unpack_from(raw)
        version, backing, _, bits, size, crypt, l1_size, l1_offset = fields[1:9]
        if version not in (2, 3):
            raise CorruptImage(f"{name}: qcow2 version {version} is unknown")
        if not 9 <= bits <= 21:
            raise CorruptImage(f"{name}: qcow2 cluster size 2**{bits} is out of range")
        incompatible, compression = 0, 0
        if version == 3:
            incompatible, _, _, _, header_length = _QCOW2_V3.unpack_from(raw, 72)
            if header_length > 104:
                compression = raw[104]
        return cls(
            version, backing, bits, size, crypt, l1_size, l1_offset, incompatible, compression
        )

    @property
    def plain(self) -> bool:
        """Whether the image's content is in this one file, in clusters this
        module can read: no backing file, no encryption, no external data file,
        no subclusters, deflate compression if any."""
        unsupported = QCOW2_DATA_FILE | QCOW2_COMPRESSION | QCOW2_EXTENDED_L2
        return (
            not self.backing_file_offset
            and not self.crypt_method
            and not self.incompatible & unsupported
            and self.compression_type == 0
        )


class NeedsQemu(Exception):
    """The qcow2 image uses what only qemu reads (a backing file, zstd, ...)."""


class Qcow2Reader:
    """A qcow2 image read directly, the common case made fast: its data clusters
    are where its L2 tables say and are read with ``pread``, runs of adjacent
    clusters at once, compressed ones inflated. An image whose header says it
    cannot (``Qcow2Header.plain``) raises ``NeedsQemu``, and its caller reads it
    through qemu instead (``open_qcow2``).

    ``image`` is a path or a seekable file object, such as a member of a tar
    (an OVA) read where it is, with no copy; ``name`` names it in errors."""

    def __init__(self, image: str | Path | BinaryIO, *, name: str | None = None) -> None:
        self._file: BinaryIO | None = None
        self._fd = -1
        self._l2: dict[int, array[int]] = {}
        if isinstance(image, str | Path):
            path = name or str(image)
            try:
                self._fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise UsageError(f"{image} does not exist", hint="check the image's path") from exc
        else:
            path = name or "the qcow2 image"
            self._file = image
        self.path = path
        try:
            if self._file is None:
                self._length = os.fstat(self._fd).st_size
            else:
                self._length = self._file.seek(0, os.SEEK_END)
            self.header = Qcow2Header.unpack(self._read_at(0, 512), path)
            if not self.header.plain:
                raise NeedsQemu(path)
            if self.header.incompatible & QCOW2_CORRUPT:
                raise CorruptImage(
                    f"{path}: the qcow2 image is marked corrupt",
                    hint=f"repair it first: qemu-img check -r all {path}",
                )
            self._cluster = 1 << self.header.cluster_bits
            self._entries = self._cluster // 8
            self._size = self.header.size
            need = -(-self._size // (self._cluster * self._entries))
            if self.header.l1_size < need:
                raise CorruptImage(f"{path}: the qcow2 L1 table is too small for its size")
            l1_end = self.header.l1_table_offset + 8 * need
            if l1_end > self._length:
                raise CorruptImage(
                    f"{path}: the qcow2 L1 table runs past the end of the file",
                    hint="the image was cut short; copy it again from its source",
                )
            self._l1 = self._table(self.header.l1_table_offset, need)
        except BaseException:
            self.close()
            raise

    def _read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end), as ``pread``."""
        if self._file is None:
            return os.pread(self._fd, length, offset)
        return read_at(self._file, offset, length)

    def _table(self, offset: int, entries: int) -> array[int]:
        return table_from(self._read_at(offset, entries * 8), "Q", "big")

    @property
    def virtual_size(self) -> int:
        return self._size

    def _l2_table(self, index: int) -> array[int] | None:
        table = self._l2.get(index)
        if table is not None:
            return table
        offset = self._l1[index] & _L2_OFFSET
        if not offset:
            return None
        if offset + self._cluster > self._length:
            raise CorruptImage(
                f"{self.path}: qcow2 L2 table {index} is past the end of the file",
                hint="the image was cut short; copy it again from its source",
            )
        table = self._table(offset, self._entries)
        if len(self._l2) >= 64:
            self._l2.clear()
        self._l2[index] = table
        return table

    def _entry(self, cluster: int) -> int:
        table = self._l2_table(cluster // self._entries)
        return 0 if table is None else table[cluster % self._entries]

    def _zero(self, entry: int) -> bool:
        if entry & _L2_COMPRESSED:
            return False
        return not entry & _L2_OFFSET or (self.header.version == 3 and bool(entry & _L2_ZERO))

    def allocation(self) -> Iterator[Extent]:
        return self.extents()

    def extents(self) -> Iterator[Extent]:
        v3 = self.header.version == 3

        def zeros(table: array[int]) -> Iterator[bool]:
            for entry in table:
                yield not entry & _L2_COMPRESSED and (
                    not entry & _L2_OFFSET or (v3 and bool(entry & _L2_ZERO))
                )

        tables = (self._l2_table(index) for index in range(len(self._l1)))
        return table_extents(
            (None if t is None else zeros(t) for t in tables),
            self._cluster * self._entries,
            self._cluster,
            self._size,
        )

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self._size:
            raise ValueError(f"read at {offset}+{length} is past the end ({self._size})")
        pieces: list[bytes] = []
        run_host, run_length = -1, 0
        while length > 0:
            cluster, within = divmod(offset, self._cluster)
            n = min(length, self._cluster - within)
            entry = self._entry(cluster)
            host = entry & _L2_OFFSET
            plain = not entry & _L2_COMPRESSED and not self._zero(entry)
            if plain and run_length and run_host + run_length == host + within:
                run_length += n
            else:
                if run_length:
                    pieces.append(self._pread(run_host, run_length))
                    run_length = 0
                if plain:
                    run_host, run_length = host + within, n
                elif entry & _L2_COMPRESSED:
                    pieces.append(self._inflate(entry, cluster)[within : within + n])
                else:
                    pieces.append(bytes(n))
            offset += n
            length -= n
        if run_length:
            pieces.append(self._pread(run_host, run_length))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _pread(self, offset: int, length: int) -> bytes:
        data = self._read_at(offset, length)
        if len(data) < length:
            raise CorruptImage(
                f"{self.path} is truncated: qcow2 data at byte {offset} is past its end",
                hint="the image was cut short; copy it again from its source",
            )
        return data

    def _inflate(self, entry: int, cluster: int) -> bytes:
        shift = 62 - (self.header.cluster_bits - 8)
        host = entry & ((1 << shift) - 1)
        sectors = ((entry & ~_L2_COMPRESSED & ((1 << 62) - 1)) >> shift) + 1
        raw = self._read_at(host, sectors * 512 - (host & 511))
        try:
            data = zlib.decompressobj(-12).decompress(raw, self._cluster)
        except zlib.error as exc:
            raise CorruptImage(
                f"{self.path}: qcow2 compressed cluster {cluster} does not inflate: {exc}",
                hint=f"check the image: qemu-img check {self.path}",
            ) from exc
        if len(data) < self._cluster:
            data += bytes(self._cluster - len(data))
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._l2.clear()


def open_qcow2(path: str | Path) -> Qcow2Reader | QemuReader:
    """The fastest reader that can read this qcow2 image."""
    try:
        return Qcow2Reader(path)
    except NeedsQemu:
        return QemuReader(path, "qcow2")
