"""The lab's command agent, run inside dom0 (standard library only, no xenkit imports).

Under TCG a process in a PV dom0 costs ~35 ms to start (every page fault and
syscall bounces through Xen, and each bounce flushes QEMU's soft TLB), so an
``ssh host cmd`` pays it twice: once for sshd's session fork, once for the
command. This agent listens on a unix socket that the host reaches through
the lab's SSH master (a streamlocal forward, which sshd serves without
forking), and spawns only the command itself.

Protocol, one JSON object per line: the agent greets with ``{"agent": N}``;
a request is ``{"argv": [...]}`` or ``{"shell": "..."}`` with optional
``stdin`` (base64) and ``timeout`` (seconds); the reply is ``{"rc": int,
"stdout": b64, "stderr": b64, "timed_out": bool}``. The file is copied into
the image as is and run as ``python3 -I lab-agent.py SOCKET``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socketserver
import subprocess
import sys
from pathlib import Path
from typing import Any

PROTOCOL = 1
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/sh",
    "LANG": "C.UTF-8",
}


def execute(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request; never raises for a bad command, only reports it."""
    if "argv" in request:
        argv = [str(a) for a in request["argv"]]
    else:
        argv = ["/bin/sh", "-c", str(request["shell"])]
    stdin = base64.b64decode(request["stdin"]) if request.get("stdin") is not None else None
    timeout = request.get("timeout")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/root",
            env=ENV,
            start_new_session=True,
        )
    except OSError as exc:
        return {"rc": 127, "stdout": "", "stderr": _b64(f"{argv[0]}: {exc}\n".encode()),
                "timed_out": False}  # fmt: skip
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return {"rc": proc.returncode, "stdout": _b64(out), "stderr": _b64(err), "timed_out": timed_out}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(json.dumps({"agent": PROTOCOL}).encode() + b"\n")
        self.wfile.flush()
        for line in self.rfile:
            try:
                reply = execute(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"rc": 255, "stdout": "", "stderr": _b64(f"bad request: {exc}\n".encode()),
                         "timed_out": False}  # fmt: skip
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(path: str) -> None:
    Path(path).unlink(missing_ok=True)
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    server = _Server(path, _Handler)
    os.umask(old)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "/run/xenkit/agent.sock")
