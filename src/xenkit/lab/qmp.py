"""A minimal synchronous QMP client for the lab's QEMU (the host machine, not Xen's).

The lab only needs a handful of commands (savevm/loadvm through HMP, quit,
status), so this stays a blocking socket client instead of pulling in an
asyncio library; events are kept but never waited for.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from xenkit.core.errors import OperationFailed


class QmpError(OperationFailed):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command}: {error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    """One QMP connection; QEMU accepts one client per socket at a time."""

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buf = b""

    def connect(self, *, wait: float = 10.0) -> QmpClient:
        """Connect and negotiate; retries while QEMU is still creating the socket."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"cannot connect to QEMU's QMP socket {self.path}: {exc}",
                        hint="is the lab running? check its state with Machine.is_running()",
                    ) from exc
                time.sleep(0.05)
        self._sock = sock
        greeting = self._read()
        if "QMP" not in greeting:
            raise OperationFailed(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QmpClient:
        return self if self._sock is not None else self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise OperationFailed(
                    f"QEMU did not answer on QMP within {self.timeout} s"
                ) from exc
            if not chunk:
                raise OperationFailed("QEMU closed the QMP connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        """Run one command and return its ``return`` value."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        request: dict[str, object] = {"execute": command}
        if arguments:
            request["arguments"] = dict(arguments)
        self._sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(command, str(err.get("class")), str(err.get("desc")))
            return reply.get("return")

    def hmp(self, command_line: str) -> str:
        """A human-monitor command; its text output (errors are text too, check it)."""
        out = self.execute("human-monitor-command", {"command-line": command_line})
        return str(out or "")
