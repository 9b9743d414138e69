"""QMP to the QEMU of a Xen domain: its device model, or the qdisk backend of a PV guest.

libxl starts that QEMU with its monitor on ``/var/run/xen/qmp-libxl-<domid>``
(and a second one, ``qmp-libxenstat-<domid>``, for xenstat). From the
control side the socket is reached through the host's forwarded unix socket
(``Host.forward_unix``); in dom0 the same class opens the path itself. This
module imports only the standard library and ``xenkit.core``, so it ships in
the dom0 zipapp too.

One client at a time: QEMU serves a QMP socket to one connection and keeps
the next waiting, and libxl connects on demand (device hot-plug, save,
``xl qemu-monitor-command``...). So ``connect`` retries, with a short
back-off, while the socket refuses or closes before QEMU's greeting (which
is also what a forwarded socket does when the domain has no QEMU yet);
keep a session short, or libxl's own operations wait for it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from xenkit.core.errors import OperationFailed

#: libxl's QMP socket for a domain's QEMU.
QMP_SOCKET = "/var/run/xen/qmp-libxl-{domid}"
#: Back-off between connection attempts: starts here, doubles, stops growing at the cap.
BACKOFF_START = 0.05
BACKOFF_CAP = 0.8


class QmpError(OperationFailed):
    """QEMU answered a command with an error (``error_class`` is QEMU's, e.g.
    ``GenericError``, ``CommandNotFound``, ``DeviceNotFound``)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(
            f"QMP {command}: {error_class}: {desc}",
            hint="see QEMU's QMP reference for the command's arguments",
        )
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpUnavailable(OperationFailed):
    """No QMP session could be opened (no QEMU for the domain, or it stayed busy)."""


class SocketForwarder(Protocol):
    """What ``Qmp.for_domain`` needs of a host: ``Host.forward_unix``."""

    def forward_unix(self, remote_path: str) -> Path: ...


@dataclass(frozen=True)
class BlockImage:
    """``query-block``'s ``inserted.image``: one layer of the image chain."""

    filename: str
    format: str
    virtual_size: int
    backing: BlockImage | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockImage:
        backing = data.get("backing-image")
        return cls(
            filename=str(data.get("filename", "")),
            format=str(data.get("format", "")),
            virtual_size=int(data.get("virtual-size", 0)),
            backing=cls.from_json(backing) if isinstance(backing, Mapping) else None,
        )


@dataclass(frozen=True)
class BlockInfo:
    """One entry of ``query-block``: a disk of the domain as its QEMU sees it.

    ``node_name`` is the top block node (libxl names them ``<vdev>-<format>``,
    e.g. ``xvda-qcow2``): what snapshot and mirror commands take.
    """

    device: str
    qdev: str
    node_name: str | None
    drv: str | None
    file: str | None
    read_only: bool
    removable: bool
    image: BlockImage | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockInfo:
        inserted = data.get("inserted")
        ins: Mapping[str, Any] = inserted if isinstance(inserted, Mapping) else {}
        image = ins.get("image")
        return cls(
            device=str(data.get("device", "")),
            qdev=str(data.get("qdev", "")),
            node_name=ins.get("node-name"),
            drv=ins.get("drv"),
            file=ins.get("file"),
            read_only=bool(ins.get("ro", False)),
            removable=bool(data.get("removable", False)),
            image=BlockImage.from_json(image) if isinstance(image, Mapping) else None,
            raw=data,
        )


@dataclass(frozen=True)
class BlockNode:
    """One entry of ``query-named-block-nodes``: every node, format and protocol layers."""

    node_name: str
    drv: str
    file: str
    read_only: bool
    backing_file: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockNode:
        return cls(
            node_name=str(data.get("node-name", "")),
            drv=str(data.get("drv", "")),
            file=str(data.get("file", "")),
            read_only=bool(data.get("ro", False)),
            backing_file=data.get("backing_file"),
        )


class Qmp:
    """A synchronous QMP client on one unix socket (local, or forwarded from dom0)."""

    def __init__(
        self,
        path: Path | str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        what: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.what = what or str(path)
        #: Events QEMU sent while we waited for replies, oldest first.
        self.events: list[dict[str, Any]] = []
        #: QEMU's version from the greeting, e.g. ``(7, 2, 22)``.
        self.version: tuple[int, int, int] | None = None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    @classmethod
    def for_domain(cls, host: SocketForwarder, domid: int, *, timeout: float = 30.0) -> Qmp:
        """The QEMU of domain ``domid`` on ``host``, through a forwarded socket."""
        remote = QMP_SOCKET.format(domid=int(domid))
        return cls(host.forward_unix(remote), timeout=timeout, what=f"{remote} (domain {domid})")

    # -- session -------------------------------------------------------------

    def connect(self) -> Qmp:
        """Open the session: retries while the socket refuses or closes before the
        greeting (busy with libxl, or no QEMU yet), until ``connect_timeout``."""
        deadline = time.monotonic() + self.connect_timeout
        delay = BACKOFF_START
        last = "no attempt"
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.connect(str(self.path))
                self._sock, self._buf = sock, b""
                greeting = self._read_message()
                self._greet(greeting)
                self._command("qmp_capabilities", None)
                return self
            except QmpError:
                self.close()
                raise
            except (OSError, EOFError, ValueError) as exc:
                self.close()
                sock.close()
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise QmpUnavailable(
                    f"no QMP session on {self.what} within {self.connect_timeout:g} s ({last})",
                    hint="does the domain have a QEMU (a device model, or a qdisk disk)? "
                    "is another client (libxl, xl qemu-monitor-command) holding the socket?",
                )
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    def _greet(self, greeting: dict[str, Any]) -> None:
        if "QMP" not in greeting:
            raise ValueError(f"not a QMP greeting: {greeting}")
        v = greeting["QMP"].get("version", {}).get("qemu", {})
        self.version = (int(v.get("major", 0)), int(v.get("minor", 0)), int(v.get("micro", 0)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Qmp:
        return self if self._sock is not None else self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- wire ----------------------------------------------------------------

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("QMP socket closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _command(self, command: str, arguments: Mapping[str, Any] | None) -> Any:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            request["arguments"] = dict(arguments)
        self._sock.settimeout(self.timeout)
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read_message()
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id") not in (self._next_id, None):
                continue
            if "error" in message:
                err = message["error"]
                raise QmpError(command, str(err.get("class", "")), str(err.get("desc", "")))
            return message.get("return")

    def wait_event(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any] | None:
        """The first event ``match`` accepts, already received or arriving within
        ``timeout`` seconds (None if none did); the others are kept in ``events``."""
        for i, event in enumerate(self.events):
            if match(event):
                return self.events.pop(i)
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._sock.settimeout(remaining)
            try:
                message = self._read_message()
            except TimeoutError:
                return None
            except (OSError, EOFError, ValueError) as exc:
                raise self._lost("events", exc) from exc
            if "event" in message:
                if match(message):
                    return message
                self.events.append(message)
        return None

    # -- commands --------------------------------------------------------------

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value; ``QmpError`` on an error
        reply; ``QmpUnavailable`` if the session cannot be opened."""
        try:
            return self._command(command, arguments)
        except (OSError, EOFError, ValueError) as exc:
            raise self._lost(command, exc) from exc

    def _lost(self, doing: str, exc: Exception) -> QmpUnavailable:
        self.close()
        return QmpUnavailable(
            f"QMP {doing} on {self.what}: the connection failed ({exc})",
            hint="the domain (or its QEMU) may have gone away",
        )

    def hmp(self, command_line: str) -> str:
        """A human-monitor command (``info block``...); its text output."""
        out = self.execute("human-monitor-command", {"command-line": command_line})
        return str(out)

    def query_block(self) -> list[BlockInfo]:
        """The domain's disks as QEMU sees them (``query-block``)."""
        return [BlockInfo.from_json(d) for d in self.execute("query-block") or []]

    def named_block_nodes(self) -> list[BlockNode]:
        """Every block node (``query-named-block-nodes``, flat)."""
        nodes = self.execute("query-named-block-nodes", {"flat": True}) or []
        return [BlockNode.from_json(n) for n in nodes]

    def status(self) -> str:
        """QEMU's run state (``query-status``): ``running``, ``paused``..."""
        return str((self.execute("query-status") or {}).get("status", ""))
