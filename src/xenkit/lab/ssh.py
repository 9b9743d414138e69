"""Commands in a lab's dom0 over OpenSSH, multiplexed on one connection.

A master connection (ControlMaster, ControlPersist) is opened once; every
``run`` then only opens a channel on it, which is what makes a round trip
cost milliseconds instead of a key exchange under TCG. The master is started
explicitly with ``-f`` and its output sent to a log file: a master that
ssh backgrounds by itself keeps the caller's pipes open and hangs it.

The master also forwards a local unix socket to dom0's command agent
(``dom0agent``): a command sent there costs one process start in dom0
instead of two, which halves a round trip under TCG. ``run`` uses it when
it answers and falls back to a plain ``ssh host command`` when it does not.

``forward_unix`` does the same for any other dom0 socket (xenstored's, a
domain's QMP): the control side then speaks the socket's own protocol with
the same client code that runs in dom0, at the price of one channel open per
connection.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.lab.paths import check_socket_path
from xenkit.lab.tools import require, run_tool


@dataclass(frozen=True)
class RunResult:
    """What a remote command did, shaped like ``subprocess.CompletedProcess``."""

    args: str
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> RunResult:
        """Return self, or raise OperationFailed quoting stderr if the command failed."""
        if self.returncode != 0:
            detail = (self.stderr or self.stdout).strip()[-2000:]
            raise OperationFailed(
                f"command failed in the lab (exit {self.returncode}): {self.args}\n{detail}",
                hint="see stderr above; the lab's console log may say more",
            )
        return self


@dataclass(frozen=True)
class SshEndpoint:
    """Everything ssh needs to reach one lab's dom0 and trust it."""

    port: int
    identity: Path
    known_hosts: Path
    host_alias: str
    control_path: Path
    log: Path
    agent_socket: Path | None = None
    host: str = "127.0.0.1"
    user: str = "root"


#: Where dom0's agent listens (started by the image's dom0-boot).
DOM0_AGENT_SOCKET = "/run/xenkit/agent.sock"

#: Local ends of ``forward_unix`` sockets, beside the control socket; the name is a
#: hash of the remote path, so any process finds (and cleans) the same socket.
FORWARD_GLOB = "fwd-*.sock"

Via = Literal["agent", "ssh"]


def make_identity(path: Path) -> Path:
    """A passphrase-less ed25519 key for one lab; kept if it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        run_tool(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.parent.name, "-f", path]
        )
    return path


def public_key_blob(identity: Path) -> str:
    """The base64 part of the public key: fits a kernel command line word."""
    return identity.with_name(identity.name + ".pub").read_text().split()[1]


class SshSession:
    """Runs commands in dom0 through the endpoint's master connection."""

    def __init__(self, endpoint: SshEndpoint) -> None:
        self.endpoint = endpoint
        self._ssh = require("ssh")
        self._agent = None if endpoint.agent_socket is None else AgentClient(endpoint.agent_socket)
        self._forward_lock = threading.Lock()

    def _argv(self, *extra: str) -> list[str]:
        e = self.endpoint
        return [
            self._ssh,
            "-F", "/dev/null",
            "-i", str(e.identity),
            "-p", str(e.port),
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={e.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={e.host_alias}",
            "-o", f"ControlPath={e.control_path}",
            "-o", "ConnectTimeout=5",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
            *extra,
            f"{e.user}@{e.host}",
        ]  # fmt: skip

    def start_master(self, *, timeout: float = 15.0) -> bool:
        """Open the shared connection; False if dom0 does not answer yet."""
        if self.master_alive():
            return True
        self.endpoint.control_path.unlink(missing_ok=True)
        argv = self._argv("-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N")
        with self.endpoint.log.open("ab") as log:
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                return False
        if done.returncode != 0 or not self.master_alive():
            return False
        # A new master has no forwards: sockets left by an earlier one lead nowhere.
        self._remove_forwards()
        self._forward_agent()
        return True

    def _forward_agent(self) -> None:
        local = self.endpoint.agent_socket
        if local is None:
            return
        local.unlink(missing_ok=True)
        subprocess.run(
            self._argv(
                "-o", "StreamLocalBindUnlink=yes",
                "-O", "forward", "-L", f"{local}:{DOM0_AGENT_SOCKET}",
            ),
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def forward_path(self, remote_path: str) -> Path:
        """Where ``forward_unix(remote_path)`` puts (or has put) its local socket."""
        digest = hashlib.sha256(remote_path.encode()).hexdigest()[:16]
        return self.endpoint.control_path.parent / FORWARD_GLOB.replace("*", digest)

    def forward_unix(self, remote_path: str) -> Path:
        """A local unix socket whose every connection reaches ``remote_path`` in dom0.

        The master serves it (``-O forward -L``), so connecting costs a channel open,
        not a login. Idempotent per remote path, across processes too: the local name
        is derived from the remote one, and a new or stopped master removes them all,
        so an existing socket always belongs to the live master. A remote socket that
        does not exist still forwards; each connection is then closed at once.
        """
        if not remote_path.startswith("/"):
            raise UsageError(
                f"remote socket path must be absolute: {remote_path!r}",
                hint="give the full dom0 path, e.g. /run/xenstored/socket",
            )
        local = check_socket_path(self.forward_path(remote_path))
        with self._forward_lock:
            if local.exists():
                return local
            if not self.master_alive():
                raise OperationFailed(
                    f"cannot forward {remote_path}: no ssh master connection to the lab",
                    hint="boot the lab (or wait for it) before forwarding sockets",
                )
            argv = self._argv(
                "-o", "StreamLocalBindUnlink=yes",
                "-O", "forward", "-L", f"{local}:{remote_path}",
            )  # fmt: skip
            try:
                done = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    stdin=subprocess.DEVNULL,
                    timeout=15,
                )
            except subprocess.TimeoutExpired as exc:
                raise OperationFailed(
                    f"ssh did not set up the forward to {remote_path} within 15 s",
                    hint="the lab's ssh master may be stuck; Machine.loadvm or a reboot resets it",
                ) from exc
            if done.returncode != 0 or not local.exists():
                local.unlink(missing_ok=True)
                raise OperationFailed(
                    f"ssh could not forward {local} to {remote_path} in dom0: "
                    f"{(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}",
                    hint=f"see {self.endpoint.log}",
                )
            return local

    def _remove_forwards(self) -> None:
        for stale in self.endpoint.control_path.parent.glob(FORWARD_GLOB):
            stale.unlink(missing_ok=True)

    def master_alive(self) -> bool:
        if not self.endpoint.control_path.exists():
            return False
        done = subprocess.run(
            [*self._argv("-O", "check")], capture_output=True, stdin=subprocess.DEVNULL
        )
        return done.returncode == 0

    def stop_master(self) -> None:
        """Close the shared connection (and every session on it)."""
        if self._agent is not None:
            self._agent.close()
        if self.endpoint.control_path.exists():
            subprocess.run(
                [*self._argv("-O", "exit")], capture_output=True, stdin=subprocess.DEVNULL
            )
            self.endpoint.control_path.unlink(missing_ok=True)
        if self.endpoint.agent_socket is not None:
            self.endpoint.agent_socket.unlink(missing_ok=True)
        self._remove_forwards()

    def wait(self, timeout: float) -> float:
        """Block until dom0 accepts the lab key; returns the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while not self.start_master(timeout=max(1.0, min(15.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                tail = self.endpoint.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise OperationFailed(
                    f"ssh to the lab on port {self.endpoint.port} did not answer "
                    f"within {timeout:.0f} s: {' / '.join(tail)}",
                    hint="look at the lab's serial console log",
                )
            time.sleep(0.2)
        return time.monotonic() - start

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float = 60.0,
        input: str | None = None,
        check: bool = False,
        via: Via = "agent",
    ) -> RunResult:
        """Run ``command`` in dom0: a shell string (``/bin/sh -c`` through the agent, root's
        shell through ssh) or an argv list, executed directly by the agent and quoted for
        the shell by ssh."""
        if via == "agent" and self._agent is not None:
            result = self._agent.run(command, timeout=timeout, input=input)
            if result is not None:
                return result.check() if check else result
        remote = command if isinstance(command, str) else shlex.join(command)
        argv = self._argv("-o", "ControlMaster=no", "-T")
        argv.append(remote)
        start = time.monotonic()
        try:
            done = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise OperationFailed(
                f"command in the lab timed out after {timeout} s: {remote}",
                hint="raise the timeout, or check that the lab is still running",
            ) from exc
        result = RunResult(
            remote, done.returncode, done.stdout, done.stderr, time.monotonic() - start
        )
        return result.check() if check else result


class AgentClient:
    """Talks to dom0's agent through the master's forwarded socket.

    The connection is kept between calls (a new one costs a channel open on
    the master, ~5 ms); one request at a time per client.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._stream: io.BufferedIOBase | None = None
        self._lock = threading.Lock()

    def _connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.connect(str(self.path))
            stream = sock.makefile("rwb")
            if not stream.readline().startswith(b'{"agent"'):
                sock.close()
                return False
        except OSError:
            sock.close()
            return False
        self._sock, self._stream = sock, stream
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._stream = None

    def _stale(self) -> bool:
        """A kept connection that the far end closed reads as ready (EOF)."""
        assert self._sock is not None
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def run(
        self, command: str | Sequence[str], *, timeout: float, input: str | None = None
    ) -> RunResult | None:
        """The command's result, or None when the agent is not there (nothing was run)."""
        request: dict[str, Any] = (
            {"shell": command} if isinstance(command, str) else {"argv": list(command)}
        )
        request["timeout"] = timeout
        if input is not None:
            request["stdin"] = base64.b64encode(input.encode()).decode()
        shown = command if isinstance(command, str) else shlex.join(command)
        with self._lock:
            start = time.monotonic()
            if self._sock is not None and self._stale():
                self.close()
            if self._sock is None and not self._connect():
                return None
            assert self._sock is not None and self._stream is not None
            try:
                self._sock.settimeout(timeout + 10)
                self._stream.write(json.dumps(request).encode() + b"\n")
                self._stream.flush()
                line = self._stream.readline()
            except OSError as exc:
                self.close()
                raise OperationFailed(
                    f"lost the lab's agent while running: {shown} ({exc})",
                    hint="the lab may have crashed; check its console",
                ) from exc
            if not line:
                self.close()
                raise OperationFailed(
                    f"the lab's agent closed the connection while running: {shown}",
                    hint="the lab may have crashed; check its console",
                )
        reply = json.loads(line)
        if reply.get("timed_out"):
            raise OperationFailed(
                f"command in the lab timed out after {timeout} s: {shown}",
                hint="raise the timeout, or check that the lab is still running",
            )
        return RunResult(
            shown,
            int(reply["rc"]),
            base64.b64decode(reply["stdout"]).decode("utf-8", "replace"),
            base64.b64decode(reply["stderr"]).decode("utf-8", "replace"),
            time.monotonic() - start,
        )
