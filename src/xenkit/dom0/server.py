"""``xenkit-dom0.pyz serve``: a resident fork server for the zipapp's commands.

Starting Python and importing the engine costs about 0.6 s in an emulated dom0 (0.2 s
on hardware), which is most of what a short command such as a snapshot ``delete``
costs beyond its QEMU job. The server pays it once: it imports the commands' modules,
listens on a root-only unix socket named for the archive's hash, and forks one child
per call. The child runs the command exactly as ``python3 xenkit-dom0.pyz ARGS``
would, with its stdin, stdout and stderr in memory files, and sends them back framed.

A call is one connection: a JSON line ``{"argv": [...], "input": N}`` and N bytes of
stdin; the answer is :data:`MAGIC`, sent before the command starts (so a client that
never saw it knows nothing ran), then JSON lines ``{"o": text}``, ``{"e": text}`` and
last ``{"x": status}``: stdout, stderr (as UTF-8, like any command's output read over
ssh) and the exit status. A call with ``"stream": true`` (a command that runs
until it is stopped, as ``clamp watch``) gets the command's stdout itself after
:data:`MAGIC`, as it is written, and no frames. The server leaves after ``idle`` seconds
without a call, and a new archive gets a new socket, so an old server never runs new
code.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MAGIC = b"xenkit-dom0-server 1\n"
SOCKET_DIR = "/run/xenkit"
IDLE_SECONDS = 600.0
#: What a call may send as its stdin; the zipapp's commands read a shell command at most.
MAX_INPUT = 16 << 20
#: Between SIGTERM and SIGKILL for a command whose caller went away (as ``timeout -k``).
KILL_AFTER = 5.0


def socket_path(archive_sha256: str) -> str:
    return f"{SOCKET_DIR}/dom0-{archive_sha256[:16]}.sock"


def frame(channel: str, value: str | int) -> bytes:
    return json.dumps({channel: value}).encode() + b"\n"


def unframe(lines: str) -> tuple[str, str, int | None]:
    """stdout, stderr and the exit status (None if the answer was cut) of an answer
    without its MAGIC line."""
    out: list[str] = []
    err: list[str] = []
    status = None
    for line in lines.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            break
        if "o" in message:
            out.append(message["o"])
        elif "e" in message:
            err.append(message["e"])
        elif "x" in message:
            status = int(message["x"])
    return "".join(out), "".join(err), status


def serve(path: str, main: Callable[[Sequence[str]], int], *, idle: float = IDLE_SECONDS) -> int:
    """Answer calls on ``path`` until ``idle`` seconds pass without one. Another live
    server on the path wins (exit 0); a dead one's socket is replaced."""
    sock = Path(path)
    sock.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError:
        if _alive(path):
            return 0
        sock.unlink(missing_ok=True)
        listener.bind(path)
    sock.chmod(0o600)
    listener.listen(16)
    listener.settimeout(idle)
    before = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies from the calls
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return 0
            if os.fork() == 0:
                status = 1
                try:
                    listener.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    status = _call(conn, main)
                finally:
                    os._exit(status)
            conn.close()
    finally:
        signal.signal(signal.SIGCHLD, before)
        sock.unlink(missing_ok=True)


def _alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _end_with_the_caller(conn: socket.socket) -> None:
    """A caller that went away (its ssh killed by a time-out) takes the command with
    it, as it would have taken a command it ran itself."""
    poll = select.poll()
    poll.register(conn, select.POLLHUP)
    while not poll.poll():
        pass
    os.killpg(0, signal.SIGTERM)
    time.sleep(KILL_AFTER)
    os.killpg(0, signal.SIGKILL)


def _call(conn: socket.socket, main: Callable[[Sequence[str]], int]) -> int:
    """One call, in the forked child: becomes the command, then reports it."""
    reader = conn.makefile("rb")
    try:
        request = json.loads(reader.readline(1 << 20))
        argv = [str(a) for a in request["argv"]]
        size = int(request.get("input", 0))
        stream = bool(request.get("stream", False))
    except (ValueError, KeyError, TypeError):
        return 2  # not a call (a probe of whether the server lives, or garbage)
    if not 0 <= size <= MAX_INPUT:
        return 2
    data = reader.read(size)
    conn.sendall(MAGIC)
    files = [os.memfd_create(name) for name in ("stdin", "stdout", "stderr")]
    if stream:
        os.close(files[1])
        files[1] = os.dup(conn.fileno())
    os.write(files[0], data)
    os.lseek(files[0], 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, target in zip(files, (0, 1, 2), strict=True):
        os.dup2(fd, target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (they live as long as the call)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115
    os.setsid()
    threading.Thread(target=_end_with_the_caller, args=(conn,), daemon=True).start()
    status = 1
    try:
        sys.argv = [sys.argv[0], *argv]
        status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if stream:
        conn.close()
        return status
    for channel, fd in (("o", files[1]), ("e", files[2])):
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if text:
            conn.sendall(frame(channel, text))
    conn.sendall(frame("x", status))
    conn.close()
    return status
