"""Commands in a guest through its PV console, answered by the guest kit's agent.

A guest booted with ``xenkit.agent`` (see ``xenkit.lab.scripts.GUEST_AGENT``)
reads one request per line on ``hvc0`` and answers between two marker lines,
its output in base64. Here, in dom0, the request goes into the console's pty
(the one xenconsoled publishes in xenstore) and the answer is read back from
it. No network, bridge or address is needed, so it works the same for a guest
that was just restored, migrated in, or reverted to a snapshot.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import select
import subprocess
import time
import tty
from dataclasses import dataclass

from xenkit.core.errors import OperationFailed, UsageError

#: N_TTY holds 4095 bytes of a line; the request carries an id and base64.
MAX_REQUEST = 4000
_DONE = re.compile(r"XENKIT-DONE (?P<id>[0-9a-f]+) (?P<status>\d+)")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/=]+")


@dataclass(frozen=True)
class GuestResult:
    status: int
    output: bytes


class GuestAgentError(OperationFailed):
    """The guest did not answer on its console."""


def console_tty(domid: int) -> str:
    """The pty of the domain's console, as xenconsoled published it."""
    done = subprocess.run(
        ["xenstore-read", f"/local/domain/{domid}/console/tty"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = done.stdout.strip()
    if done.returncode != 0 or not path.startswith("/dev/"):
        raise GuestAgentError(
            f"domain {domid} has no console pty ({done.stderr.strip() or 'none published'})",
            hint="is the domain running, with a PV console, and xenconsoled up?",
        )
    return path


def request_line(request_id: str, command: str) -> bytes:
    line = f"{request_id} {base64.b64encode(command.encode()).decode()}\n".encode()
    if len(line) > MAX_REQUEST:
        raise UsageError(
            f"the command is too long for the console ({len(line)} bytes, at most {MAX_REQUEST})",
            hint="send data in several commands, or put it on a disk",
        )
    return line


def parse_answer(lines: list[str], request_id: str) -> GuestResult | None:
    """The answer to ``request_id`` in the console lines read so far, if complete.

    Lines that are not base64 (the kernel's own messages) are left out of the output.
    """
    begin = f"XENKIT-BEGIN {request_id}"
    try:
        start = lines.index(begin)
    except ValueError:
        return None
    chunks: list[bytes] = []
    for line in lines[start + 1 :]:
        m = _DONE.fullmatch(line)
        if m and m["id"] == request_id:
            return GuestResult(int(m["status"]), b"".join(chunks))
        if _BASE64_LINE.fullmatch(line):
            try:
                chunks.append(base64.b64decode(line, validate=True))
            except binascii.Error:
                continue
    return None


class _Pty:
    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise GuestAgentError(f"cannot open the console {path}: {exc.strerror}") from exc
        tty.setraw(self.fd)
        self.pending = b""

    def close(self) -> None:
        os.close(self.fd)

    def drain(self) -> None:
        while self._read(0.0):
            pass
        self.pending = b""

    def _read(self, wait: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return b""
            raise

    def lines(self, wait: float) -> list[str]:
        self.pending += self._read(wait)
        *whole, self.pending = self.pending.split(b"\n")
        return [w.decode("utf-8", "replace").strip("\r\x00 ") for w in whole]

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self.fd], [], 5.0)
            if not writable:
                raise GuestAgentError("the console does not take input")
            view = view[os.write(self.fd, view) :]


def guest_exec(domid: int, command: str, *, timeout: float = 60.0) -> GuestResult:
    """Run ``command`` (``sh`` syntax) in the guest; its status and output (stdout and
    stderr together)."""
    request_id = os.urandom(4).hex()
    line = request_line(request_id, command)
    pty = _Pty(console_tty(domid))
    try:
        pty.drain()
        pty.write(line)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += pty.lines(min(0.5, max(0.0, deadline - time.monotonic())))
            answer = parse_answer(seen, request_id)
            if answer is not None:
                return answer
    finally:
        pty.close()
    started = any(s == f"XENKIT-BEGIN {request_id}" for s in seen)
    raise GuestAgentError(
        f"domain {domid} did not finish the command within {timeout:g} s"
        if started
        else f"domain {domid} did not answer on its console within {timeout:g} s",
        hint="was it booted with xenkit.agent, and is it up (its console log shows "
        "XENKIT-AGENT-READY)? is someone else attached with xl console?",
    )


def wait_for_agent(domid: int, timeout: float) -> float:
    """Block until the guest's agent answers; seconds waited. A request sent before the
    agent reads its console is lost, so this asks again until one is answered."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            guest_exec(domid, "true", timeout=min(3.0, max(0.5, deadline - time.monotonic())))
            return time.monotonic() - start
        except GuestAgentError:
            if time.monotonic() >= deadline:
                raise
