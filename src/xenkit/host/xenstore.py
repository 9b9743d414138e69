"""xenstore's wire protocol, spoken directly over xenstored's unix socket.

Why not ``xen.lowlevel.xs`` or the ``xenstore-*`` tools: they exist only in
dom0, hide which error xenstored sent, and cannot be reached from the control
side. The protocol is small (``xen/include/public/io/xs_wire.h``,
``docs/misc/xenstore.txt``), so this module speaks it itself with the
standard library only; the same code then runs inside dom0 (shipped as
files or in a zipapp) and on the user's machine through a forwarded socket
(``SshSession.forward_unix``).

A message is a 16-byte header (type, req_id, tx_id, len) and ``len`` bytes
of payload, mostly NUL-terminated strings. xenstored answers every request
with the same type and req_id, or with ``XS_ERROR`` and an errno *name*;
``XS_WATCH_EVENT`` messages arrive unasked, between any two replies. So the
client matches replies to requests by req_id and queues every event it reads
on the way, whichever call happened to read it.

Both xenstored implementations in Xen 4.17 are covered: C ``xenstored`` and
OCaml ``oxenstored`` (Debian's default).
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import TracebackType
from typing import TypeVar

from xenkit.core.errors import OperationFailed, UsageError

__all__ = [
    "DEFAULT_SOCKET",
    "HEADER_SIZE",
    "PAYLOAD_MAX",
    "REPLY_MAX",
    "Access",
    "AlreadyExists",
    "Busy",
    "Conflict",
    "ConnectionLost",
    "Decoder",
    "InvalidArgument",
    "Message",
    "NoEntry",
    "NotSupported",
    "Op",
    "Permission",
    "PermissionDenied",
    "ProtocolError",
    "QuotaExceeded",
    "TimedOut",
    "TooBig",
    "Transaction",
    "WatchEvent",
    "XenStore",
    "XenStoreError",
    "XenStoreUnavailable",
    "encode_strings",
    "error_for",
    "parse_perms",
    "parse_strings",
    "walk",
]

log = logging.getLogger(__name__)

#: Debian's xenstored socket (``/var/run`` is a link to ``/run``).
DEFAULT_SOCKET = "/run/xenstored/socket"

#: XENSTORE_PAYLOAD_MAX: xenstored drops a connection that sends more, so a client
#: must refuse before sending rather than lose every watch and transaction it holds.
PAYLOAD_MAX = 4096

#: Little-endian on the wire: xsd_sockmsg is native-endian, and every architecture
#: Xen 4.17 runs on (x86, Arm) is little-endian; fixing it lets a big-endian
#: control side talk to a forwarded socket too.
_HEADER = struct.Struct("<IIII")
HEADER_SIZE = _HEADER.size

#: What the client accepts *from* xenstored. oxenstored does not keep the 4096-byte
#: limit in its replies (a long DIRECTORY comes back whole, not as E2BIG), so the
#: reading side only guards against a stream out of step (a garbage length).
REPLY_MAX = 16 << 20

_T = TypeVar("_T")


class Op(IntEnum):
    """``enum xsd_sockmsg_type``; the values are the wire's, so order matters."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    # 20 was XS_RESTRICT, removed from Xen.
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    INVALID = 0xFFFF


# -- errors ------------------------------------------------------------------

#: What each errno name means *to xenstore*; strerror's "No such file or directory"
#: would send a reader looking for a file.
_MEANING = {
    "EINVAL": "invalid argument (a malformed path, token or permission?)",
    "EACCES": "permission denied",
    "EEXIST": "already exists",
    "EISDIR": "is a directory",
    "ENOENT": "no such node",
    "ENOMEM": "xenstored is out of memory",
    "ENOSPC": "a xenstore quota is exhausted",
    "EIO": "xenstored hit an internal error",
    "ENOTEMPTY": "the node has children",
    "ENOSYS": "this xenstored does not implement the operation",
    "EROFS": "xenstore is read-only",
    "EBUSY": "busy (a transaction already in progress?)",
    "EAGAIN": "the transaction conflicted with a concurrent change",
    "EISCONN": "the domain is already introduced",
    "E2BIG": "too big",
    "EPERM": "operation not permitted",
    "EQUOTA": "a xenstore quota is exceeded",
}


class XenStoreError(OperationFailed):
    """xenstored refused an operation (an ``XS_ERROR`` reply), or the client refused to
    send one that xenstored would have refused or punished.

    ``errno_name`` is what xenstored sent ("ENOENT", ...); catch a subclass for the
    common ones. ``op`` and ``path`` say which call failed, because one connection
    often serves many paths and a bare "ENOENT" does not say which was missing.
    """

    def __init__(
        self,
        errno_name: str,
        *,
        op: str,
        path: str | None = None,
        tx_id: int = 0,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.errno_name = errno_name
        self.op = op
        self.path = path
        self.tx_id = tx_id
        where = f"xenstore {op}" + (f" {path}" if path is not None else "")
        if tx_id:
            where += f" (transaction {tx_id})"
        meaning = detail or _MEANING.get(errno_name, "refused by xenstored")
        super().__init__(f"{where}: {errno_name}: {meaning}", hint=hint)

    @property
    def errno(self) -> int | None:
        """The local errno number for ``errno_name``, if the name is a real errno."""
        value = getattr(_errno, self.errno_name, None)
        return value if isinstance(value, int) else None


class NoEntry(XenStoreError):
    """ENOENT: the node (or, for rm and write, its parent) does not exist."""


class PermissionDenied(XenStoreError):
    """EACCES or EPERM: the node's permissions, or the connection's privilege, forbid it."""


class Conflict(XenStoreError):
    """EAGAIN: a transaction's commit lost to a concurrent change; run it again."""


class InvalidArgument(XenStoreError):
    """EINVAL: a malformed path, token, permission or message."""


class AlreadyExists(XenStoreError):
    """EEXIST."""


class TooBig(XenStoreError):
    """E2BIG: a reply or request over XENSTORE_PAYLOAD_MAX, or over a size quota."""


class QuotaExceeded(XenStoreError):
    """ENOSPC (C xenstored) or EQUOTA (oxenstored): too many nodes, watches, transactions."""


class Busy(XenStoreError):
    """EBUSY."""


class NotSupported(XenStoreError):
    """ENOSYS: this xenstored does not know the operation."""


_ERROR_CLASSES: dict[str, type[XenStoreError]] = {
    "ENOENT": NoEntry,
    "EACCES": PermissionDenied,
    "EPERM": PermissionDenied,
    "EAGAIN": Conflict,
    "EINVAL": InvalidArgument,
    "EEXIST": AlreadyExists,
    "E2BIG": TooBig,
    "ENOSPC": QuotaExceeded,
    "EQUOTA": QuotaExceeded,
    "EBUSY": Busy,
    "ENOSYS": NotSupported,
}

_HINTS: dict[type[XenStoreError], str] = {
    NoEntry: "check the path (xenstore-ls in dom0 lists the tree)",
    PermissionDenied: "get_perms shows who may read and write the node",
    Conflict: "run the transaction again (XenStore.transaction retries it for you)",
    QuotaExceeded: "xenstored's quotas are set in its configuration (or xenstore-control)",
}


def error_for(
    errno_name: str, *, op: str, path: str | None = None, tx_id: int = 0
) -> XenStoreError:
    """The typed exception for an ``XS_ERROR`` payload; unknown names stay XenStoreError."""
    cls = _ERROR_CLASSES.get(errno_name, XenStoreError)
    return cls(errno_name, op=op, path=path, tx_id=tx_id, hint=_HINTS.get(cls))


class XenStoreUnavailable(OperationFailed):
    """There is no xenstored to talk to at the socket path."""


class ConnectionLost(OperationFailed):
    """xenstored (or the ssh forward in front of it) closed the connection."""


class ProtocolError(OperationFailed):
    """Bytes from the socket that are not xenstore messages: the stream cannot be trusted."""


class TimedOut(OperationFailed):
    """No reply (or event) within the time-out."""


# -- messages ----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One xenstore message, either direction. ``op`` stays an int so that a type this
    module does not know still round-trips instead of killing the connection."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(self.op, self.req_id, self.tx_id, len(self.payload)) + self.payload

    @property
    def op_name(self) -> str:
        try:
            return Op(self.op).name
        except ValueError:
            return f"op {self.op}"


class Decoder:
    """Cuts a byte stream into messages, keeping a partial one until the rest arrives.

    Kept apart from the socket so that a time-out in the middle of a message loses
    nothing (the next read continues it) and so tests can feed it byte by byte.
    """

    def __init__(self, *, max_payload: int = PAYLOAD_MAX) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER_SIZE:
            op, req_id, tx_id, length = _HEADER.unpack_from(self._buf)
            if length > self.max_payload:
                raise ProtocolError(
                    f"xenstore message of {length} bytes (type {op}, req_id {req_id}) "
                    f"exceeds the {self.max_payload}-byte limit: the stream is out of step",
                    hint="is the socket really xenstored's?",
                )
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            out.append(Message(op, req_id, tx_id, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return out


def encode_strings(*parts: str | bytes, terminate_last: bool = True) -> bytes:
    """NUL-separated fields; the last is NUL-terminated unless it is a raw value
    (WRITE's value, which may itself hold NULs, is not)."""
    encoded = [p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p for p in parts]
    data = b"\0".join(encoded)
    return data + b"\0" if terminate_last else data


def parse_strings(payload: bytes) -> list[str]:
    """``<string>|*``: the fields before each NUL (a trailing unterminated part is
    kept, since oxenstored and C xenstored differ on trailing NULs in places)."""
    if not payload:
        return []
    parts = payload.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "surrogateescape") for p in parts]


class Access(StrEnum):
    """The letter of a permission record."""

    NONE = "n"
    READ = "r"
    WRITE = "w"
    BOTH = "b"

    @property
    def readable(self) -> bool:
        return self in (Access.READ, Access.BOTH)

    @property
    def writable(self) -> bool:
        return self in (Access.WRITE, Access.BOTH)


@dataclass(frozen=True)
class Permission:
    """One ``<letter><domid>`` record of a node's permission list.

    The list's order carries meaning: the *first* record names the owner (who may
    always read and write) and its letter is the access of every domain not listed
    after it; later records grant their domain exactly their letter.
    """

    domid: int
    access: Access

    def __post_init__(self) -> None:
        if not 0 <= self.domid <= 0xFFFF:
            raise UsageError(f"domid {self.domid} is out of range", hint="use 0..65535")

    def __str__(self) -> str:
        return f"{self.access.value}{self.domid}"

    @classmethod
    def parse(cls, text: str) -> Permission:
        try:
            return cls(int(text[1:], 10), Access(text[:1]))
        except (ValueError, UsageError) as exc:
            raise ProtocolError(f"malformed xenstore permission {text!r}") from exc


def parse_perms(payload: bytes) -> list[Permission]:
    """GET_PERMS's reply: one record per NUL-terminated string."""
    return [Permission.parse(p) for p in parse_strings(payload)]


@dataclass(frozen=True)
class WatchEvent:
    """A change to a watched path: ``path`` is what changed (or the watch's own path
    for the event sent on registration), ``token`` says which watch fired."""

    path: str
    token: str

    @classmethod
    def parse(cls, payload: bytes) -> WatchEvent:
        fields = parse_strings(payload)
        if len(fields) < 2:
            raise ProtocolError(f"malformed xenstore watch event {payload!r}")
        return cls(fields[0], fields[1])


# -- operations ----------------------------------------------------------------


def _check_field(value: str, *, what: str, op: str) -> None:
    """A NUL inside a field would shift every field after it: refuse, never send."""
    if "\0" in value:
        raise InvalidArgument(
            "EINVAL",
            op=op,
            detail=f"refused before sending: the {what} {value!r} holds a NUL byte",
        )


class _Operations:
    """The node operations, shared by the client (tx_id 0) and a transaction."""

    _client: XenStore
    _tx_id: int

    def _call(
        self, op: Op, payload: bytes, *, what: str, path: str | None, timeout: float | None
    ) -> bytes:
        return self._client._request(
            op, payload, tx_id=self._tx_id, what=what, path=path, timeout=timeout
        )

    def _path_call(self, op: Op, what: str, path: str, timeout: float | None) -> bytes:
        _check_field(path, what="path", op=what)
        return self._call(op, encode_strings(path), what=what, path=path, timeout=timeout)

    def read_bytes(self, path: str, *, timeout: float | None = None) -> bytes:
        """The node's value exactly as stored (values may be binary)."""
        return self._path_call(Op.READ, "read", path, timeout)

    def read(self, path: str, *, timeout: float | None = None) -> str:
        """The node's value as text; undecodable bytes survive a write back unchanged
        (surrogateescape)."""
        return self.read_bytes(path, timeout=timeout).decode("utf-8", "surrogateescape")

    def exists(self, path: str, *, timeout: float | None = None) -> bool:
        """Whether the node exists; EACCES still raises, since "hidden" is not "absent"."""
        try:
            self.read_bytes(path, timeout=timeout)
        except NoEntry:
            return False
        return True

    def write(self, path: str, value: str | bytes, *, timeout: float | None = None) -> None:
        """Set the node's value, creating it and any missing parents (empty)."""
        _check_field(path, what="path", op="write")
        payload = encode_strings(path, value, terminate_last=False)
        self._call(Op.WRITE, payload, what="write", path=path, timeout=timeout)

    def mkdir(self, path: str, *, timeout: float | None = None) -> None:
        """Make sure the node exists (an existing value is kept; not an error)."""
        self._path_call(Op.MKDIR, "mkdir", path, timeout)

    def rm(self, path: str, *, timeout: float | None = None) -> None:
        """Remove the node and everything below it; a missing node is not an error,
        but a missing parent is (NoEntry)."""
        self._path_call(Op.RM, "rm", path, timeout)

    def directory(self, path: str, *, timeout: float | None = None) -> list[str]:
        """The names (not paths) of the node's children, in xenstored's order.

        A listing over 4096 bytes is E2BIG for DIRECTORY; C xenstored then serves it
        in parts (DIRECTORY_PART), which this falls back to. oxenstored has no parts.
        """
        try:
            return parse_strings(self._path_call(Op.DIRECTORY, "directory", path, timeout))
        except TooBig:
            return self._directory_parts(path, timeout)

    def _directory_parts(self, path: str, timeout: float | None) -> list[str]:
        for _ in range(8):
            names: list[bytes] = []
            generation: bytes | None = None
            offset = 0
            while True:
                reply = self._call(
                    Op.DIRECTORY_PART,
                    encode_strings(path, str(offset)),
                    what="directory",
                    path=path,
                    timeout=timeout,
                )
                gen, _, rest = reply.partition(b"\0")
                if generation is None:
                    generation = gen
                elif gen != generation:
                    break  # the node changed between parts: list it again
                # The last part ends with an empty name (a second NUL).
                done = rest in (b"", b"\0") or rest.endswith(b"\0\0")
                chunk = rest[:-1] if rest.endswith(b"\0\0") else rest
                names.extend(n for n in chunk.split(b"\0") if n)
                offset += len(chunk)
                if done:
                    return [n.decode("utf-8", "surrogateescape") for n in names]
        raise Conflict(
            "EAGAIN", op="directory", path=path, detail="the node kept changing while listed"
        )

    def get_perms(self, path: str, *, timeout: float | None = None) -> list[Permission]:
        """The node's permission list: owner first (see ``Permission``)."""
        return parse_perms(self._path_call(Op.GET_PERMS, "get_perms", path, timeout))

    def set_perms(
        self, path: str, perms: Sequence[Permission], *, timeout: float | None = None
    ) -> None:
        """Replace the node's permission list; the first record becomes the owner."""
        _check_field(path, what="path", op="set_perms")
        if not perms:
            raise UsageError(
                f"xenstore set_perms {path}: at least one permission (the owner) is needed",
                hint="e.g. [Permission(0, Access.NONE)]",
            )
        payload = encode_strings(path, *(str(p) for p in perms))
        self._call(Op.SET_PERMS, payload, what="set_perms", path=path, timeout=timeout)


class Transaction(_Operations):
    """An open xenstore transaction: the node operations, isolated until ``commit``.

    As a context manager it commits when the block ends normally (Conflict if it
    lost) and aborts when the block raises. ``XenStore.transaction`` adds retries.
    """

    def __init__(self, client: XenStore, tx_id: int) -> None:
        self._client = client
        self._tx_id = tx_id
        self._ended = False

    @property
    def id(self) -> int:
        return self._tx_id

    @property
    def ended(self) -> bool:
        return self._ended

    def _call(
        self, op: Op, payload: bytes, *, what: str, path: str | None, timeout: float | None
    ) -> bytes:
        if self._ended:
            raise UsageError(
                f"xenstore {what} {path}: transaction {self._tx_id} has already ended",
                hint="start a new transaction",
            )
        return super()._call(op, payload, what=what, path=path, timeout=timeout)

    def commit(self, *, timeout: float | None = None) -> None:
        """Make the changes visible, or raise Conflict: the transaction is over either way."""
        self._client.transaction_end(self, commit=True, timeout=timeout)

    def abort(self, *, timeout: float | None = None) -> None:
        """Discard the changes."""
        self._client.transaction_end(self, commit=False, timeout=timeout)

    def _abort_quietly(self) -> None:
        """Abort on the way out of a failure; the failure matters more than this."""
        if self._ended:
            return
        try:
            self.abort()
        except OperationFailed as exc:
            self._ended = True
            log.debug("abort of xenstore transaction %d failed: %s", self._tx_id, exc)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if not self._ended:
                self.commit()
        else:
            self._abort_quietly()

    def __repr__(self) -> str:
        state = "ended" if self._ended else "open"
        return f"<xenstore Transaction {self._tx_id} {state}>"


# -- the client ----------------------------------------------------------------


class XenStore(_Operations):
    """One connection to xenstored.

    Thread-safe: requests from several threads share the connection, each waiting
    for its own req_id; whichever thread reads the socket hands the others their
    replies. Every blocking call has a time-out (the client's ``timeout`` unless a
    call passes its own); a call that times out leaves the connection usable, and
    its late reply is dropped, but whether the operation happened is then unknown.

    A connection through the socket is privileged (it acts as dom0), so permissions
    restrict nothing here; they matter to the domains the nodes are for.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SOCKET,
        *,
        timeout: float = 10.0,
        sock: socket.socket | None = None,
    ) -> None:
        """Connect to the socket at ``path``, or adopt ``sock`` (already connected: a
        socketpair in tests, an inherited descriptor); ``path`` then only names it."""
        if timeout <= 0:
            raise UsageError(f"xenstore timeout must be positive, not {timeout}")
        self.path = os.fspath(path)
        self.timeout = timeout
        self._client = self
        self._tx_id = 0
        self._decoder = Decoder(max_payload=REPLY_MAX)
        self._events: deque[WatchEvent] = deque()
        self._replies: dict[int, Message] = {}
        self._waiting: set[int] = set()
        self._next_req = 1
        self._cond = threading.Condition()
        self._reading = False
        self._send_lock = threading.Lock()
        self._broken: OperationFailed | None = None
        self._closed = False
        self._sock = sock if sock is not None else self._connect()
        # Sends block at most this long; reads wait in the selector, per call.
        self._sock.settimeout(timeout)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise XenStoreUnavailable(
                f"no xenstored listening at {self.path} ({exc.strerror or exc})",
                hint="is xenstored running? from the control side, forward the socket: "
                "machine.ssh.forward_unix('/run/xenstored/socket')",
            ) from exc
        except PermissionError as exc:
            sock.close()
            raise XenStoreUnavailable(
                f"not allowed to connect to {self.path}",
                hint="xenstored's socket is root's: run as root in dom0",
            ) from exc
        except OSError as exc:
            sock.close()
            raise XenStoreUnavailable(f"cannot connect to xenstored at {self.path}: {exc}") from exc
        return sock

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Close the socket; xenstored then drops this connection's watches and
        aborts its open transactions."""
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> XenStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"XenStore({self.path!r})"

    # -- the wire ----------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _usable(self, what: str) -> None:
        if self._closed:
            raise UsageError(f"xenstore {what}: the connection is closed")
        if self._broken is not None:
            raise self._broken

    def _request(
        self,
        op: Op,
        payload: bytes,
        *,
        tx_id: int,
        what: str,
        path: str | None,
        timeout: float | None,
    ) -> bytes:
        """Send one request and wait for its reply; XS_ERROR becomes an exception."""
        self._usable(what)
        if len(payload) > PAYLOAD_MAX:
            raise TooBig(
                "E2BIG",
                op=what,
                path=path,
                tx_id=tx_id,
                detail=f"refused before sending: the request is {len(payload)} bytes, over "
                f"xenstore's {PAYLOAD_MAX}-byte limit (xenstored would drop the connection)",
            )
        deadline = self._deadline(timeout)
        with self._cond:
            req_id = self._next_req
            self._next_req = self._next_req % 0xFFFFFFFF + 1
            self._waiting.add(req_id)
        try:
            self._send(Message(op, req_id, tx_id, payload), what)
            if not self._pump(lambda: req_id in self._replies, deadline):
                waited = self.timeout if timeout is None else timeout
                raise TimedOut(
                    f"xenstore {what}{'' if path is None else ' ' + path}: no reply from "
                    f"xenstored at {self.path} within {waited:g} s",
                    hint="xenstored may be stuck, or the host overloaded; raise the timeout",
                )
            with self._cond:
                reply = self._replies.pop(req_id)
        finally:
            with self._cond:
                self._waiting.discard(req_id)
                self._replies.pop(req_id, None)
        if reply.op == Op.ERROR:
            names = parse_strings(reply.payload)
            raise error_for(names[0] if names else "EIO", op=what, path=path, tx_id=tx_id)
        if reply.op != op:
            raise ProtocolError(
                f"xenstore {what}: xenstored answered {reply.op_name} to {op.name}",
                hint="is the socket really xenstored's?",
            )
        return reply.payload

    def _send(self, message: Message, what: str) -> None:
        data = message.pack()
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except TimeoutError as exc:
                # Part of the message may be out: nothing after it could be framed.
                stuck = TimedOut(
                    f"xenstore {what}: xenstored at {self.path} stopped reading requests",
                    hint="the connection is unusable now; open a new one",
                )
                self._broken = stuck
                raise stuck from exc
            except OSError as exc:
                raise self._lose(f"while sending {what}: {exc}") from exc

    def _lose(self, why: str) -> ConnectionLost:
        lost = ConnectionLost(
            f"lost the connection to xenstored at {self.path} {why}",
            hint="xenstored exited or dropped this client (an oversized or malformed "
            "message?); a forwarded socket also ends like this when the remote socket "
            "does not exist",
        )
        self._broken = lost
        return lost

    def _pump(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Read messages until ``ready()`` or the deadline; True if ready.

        One thread reads at a time; the others wait on the condition and are woken
        after every batch, so each finds its reply however it arrived. At least one
        read is tried even when the deadline has passed, so a zero time-out still
        collects what has already arrived.
        """
        tried = False
        with self._cond:
            while not ready():
                remaining = deadline - time.monotonic()
                if tried and remaining <= 0:
                    return False
                if self._broken is not None:
                    raise self._broken
                if self._reading:
                    self._cond.wait(max(remaining, 0.0))
                    tried = True
                    continue
                self._reading = True
                self._cond.release()
                try:
                    messages = self._receive(max(remaining, 0.0))
                finally:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                tried = True
                for message in messages:
                    self._dispatch(message)
            return True

    def _receive(self, timeout: float) -> list[Message]:
        """Whatever whole messages arrive within ``timeout`` (possibly none)."""
        if self._closed:
            raise UsageError("xenstore: the connection is closed")
        if not self._selector.select(timeout):
            return []
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, TimeoutError):
            return []
        except OSError as exc:
            raise self._lose(f"while reading: {exc}") from exc
        if not data:
            raise self._lose("(end of stream)")
        try:
            return self._decoder.feed(data)
        except ProtocolError as exc:
            self._broken = exc
            raise

    def _dispatch(self, message: Message) -> None:
        """Called with the condition held."""
        if message.op == Op.WATCH_EVENT:
            try:
                self._events.append(WatchEvent.parse(message.payload))
            except ProtocolError as exc:
                log.warning("dropped a malformed watch event: %s", exc)
        elif message.req_id in self._waiting:
            self._replies[message.req_id] = message
        else:
            log.debug("dropped a late or unknown xenstore reply: %s", message)

    # -- watches -----------------------------------------------------------

    def watch(self, path: str, token: str, *, timeout: float | None = None) -> None:
        """Ask for a WatchEvent on every change at or below ``path`` (or for a special
        path: ``@introduceDomain``, ``@releaseDomain``).

        xenstored fires the watch once straight away, with the watch's own path,
        whether or not the node exists: expect that event first.
        """
        for value, what in ((path, "path"), (token, "token")):
            _check_field(value, what=what, op="watch")
        self._request(
            Op.WATCH, encode_strings(path, token), tx_id=0, what="watch", path=path, timeout=timeout
        )

    def unwatch(self, path: str, token: str, *, timeout: float | None = None) -> None:
        """Remove a watch (same path and token); events already queued stay queued."""
        for value, what in ((path, "path"), (token, "token")):
            _check_field(value, what=what, op="unwatch")
        self._request(
            Op.UNWATCH,
            encode_strings(path, token),
            tx_id=0,
            what="unwatch",
            path=path,
            timeout=timeout,
        )

    def next_event(self, *, token: str | None = None, timeout: float | None = None) -> WatchEvent:
        """The oldest queued event (for ``token``, if given), waiting for one to arrive.

        Events for other tokens stay queued, so several watchers can share one
        connection. Raises TimedOut if none comes in time.
        """
        self._usable("next_event")

        def found() -> bool:
            return any(token is None or e.token == token for e in self._events)

        deadline = self._deadline(timeout)
        while True:
            if not self._pump(found, deadline):
                which = "" if token is None else f" for token {token!r}"
                raise TimedOut(
                    f"xenstore: no watch event{which} from {self.path} in time",
                    hint="is the watch registered, and did anything change under it?",
                )
            with self._cond:
                for event in self._events:
                    if token is None or event.token == token:
                        self._events.remove(event)
                        return event
            # Another thread took it between the pump and the lock: wait for the next.

    def drain_events(self, *, token: str | None = None) -> list[WatchEvent]:
        """Every event already received (for ``token``, if given), without waiting."""
        self._usable("drain_events")
        self._pump(lambda: False, time.monotonic())
        with self._cond:
            taken = [e for e in self._events if token is None or e.token == token]
            kept = [e for e in self._events if not (token is None or e.token == token)]
            self._events = deque(kept)
        return taken

    # -- transactions ------------------------------------------------------

    def transaction_start(self, *, timeout: float | None = None) -> Transaction:
        """Open a transaction; its operations see a snapshot and change nothing visible
        until ``commit``. Prefer ``transaction()``, which retries on conflict."""
        reply = self._request(
            Op.TRANSACTION_START,
            # A lone NUL, not an empty payload: oxenstored leaves a message with an empty
            # payload unanswered until the next message arrives.
            encode_strings(""),
            tx_id=0,
            what="transaction_start",
            path=None,
            timeout=timeout,
        )
        fields = parse_strings(reply)
        try:
            return Transaction(self, int(fields[0]))
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"xenstore transaction_start: malformed reply {reply!r}") from exc

    def transaction_end(
        self, tx: Transaction, *, commit: bool = True, timeout: float | None = None
    ) -> None:
        """Commit (or abort) ``tx``. A commit that lost to a concurrent change raises
        Conflict; the transaction is over in every case, even on error."""
        if tx._client is not self:
            raise UsageError(f"transaction {tx.id} belongs to another xenstore connection")
        if tx.ended:
            raise UsageError(f"xenstore transaction {tx.id} has already ended")
        tx._ended = True
        self._request(
            Op.TRANSACTION_END,
            encode_strings("T" if commit else "F"),
            tx_id=tx.id,
            what="commit" if commit else "abort",
            path=None,
            timeout=timeout,
        )

    def transaction(
        self,
        body: Callable[[Transaction], _T],
        *,
        attempts: int = 5,
        backoff: float = 0.01,
        timeout: float | None = None,
    ) -> _T:
        """Run ``body`` in a transaction and commit it, running it again from the start
        when xenstored answers EAGAIN (a concurrent change to what it read or wrote).

        ``body`` may run up to ``attempts`` times, so it must only compute from what it
        reads in the transaction; the sleep between attempts doubles from ``backoff``
        (capped at 0.5 s). Raises Conflict when every attempt lost; an exception from
        ``body`` aborts the transaction and propagates, without a retry.
        """
        if attempts < 1:
            raise UsageError(f"xenstore transaction: attempts must be at least 1, not {attempts}")
        for attempt in range(1, attempts + 1):
            tx = self.transaction_start(timeout=timeout)
            try:
                result = body(tx)
                if not tx.ended:
                    tx.commit(timeout=timeout)
                return result
            except Conflict:
                # EAGAIN from the commit (already ended) or from an operation inside.
                tx._abort_quietly()
                log.debug("xenstore transaction %d conflicted (attempt %d)", tx.id, attempt)
            except BaseException:
                tx._abort_quietly()
                raise
            if attempt < attempts:
                time.sleep(min(backoff * 2 ** (attempt - 1), 0.5))
        raise Conflict(
            "EAGAIN",
            op="transaction",
            detail=f"still conflicting after {attempts} attempts",
            hint="something keeps changing the nodes this transaction reads; "
            "raise attempts, or narrow what the body touches",
        )

    # -- domains -----------------------------------------------------------

    def get_domain_path(self, domid: int, *, timeout: float | None = None) -> str:
        """Where the domain's own subtree lives (``/local/domain/<domid>``)."""
        reply = self._request(
            Op.GET_DOMAIN_PATH,
            encode_strings(str(domid)),
            tx_id=0,
            what="get_domain_path",
            path=None,
            timeout=timeout,
        )
        fields = parse_strings(reply)
        if not fields:
            raise ProtocolError(f"xenstore get_domain_path: empty reply for domain {domid}")
        return fields[0]


def walk(
    store: XenStore | Transaction, path: str, *, timeout: float | None = None
) -> Iterator[tuple[str, str]]:
    """Every node at and below ``path`` with its value, depth first (``xenstore-ls``).

    Nodes removed while walking are skipped rather than failing the walk.
    """
    try:
        value = store.read(path, timeout=timeout)
        children = store.directory(path, timeout=timeout)
    except NoEntry:
        return
    yield path, value
    base = path.rstrip("/")
    for child in children:
        yield from walk(store, f"{base}/{child}", timeout=timeout)
