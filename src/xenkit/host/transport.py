"""How commands reach a Xen host: through a lab's ``Machine``, or OpenSSH to a real one.

Both transports give the same ``RunResult`` and the same typed errors
(``CommandTimedOut``, ``HostUnreachable``; a lab that crashed raises the
lab's ``LabCrashed``), so nothing above this module knows which one it has.

The OpenSSH transport opens one master connection (ControlMaster) per
target and runs every command as a channel on it, with the option set the
lab's own ``ssh.py`` uses (batch mode, keep-alives, a short connect
timeout). A command's time-out is enforced on the host too, with coreutils
``timeout``: without a tty, killing the local ``ssh`` would leave the remote
command running.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.host.errors import CommandFailed, CommandTimedOut, HostUnreachable
from xenkit.lab.machine import LabCrashed, Machine
from xenkit.lab.tools import require

#: Seconds to wait, after a command lost its connection, for a crash to show on a lab's
#: console (a dying host prints before the connection goes; after a time-out, a crash
#: would have printed during the wait already).
CRASH_GRACE = 1.5
#: Extra seconds the local ``ssh`` gets beyond the command's own time-out (which the
#: host enforces), so the host's verdict arrives first.
LOCAL_GRACE = 5.0
#: Seconds between TERM and KILL for a command that timed out on an ssh host.
KILL_AFTER = 2

Command = str | Sequence[str]


@dataclass(frozen=True)
class RunResult:
    """What a command did on the host, shaped like ``subprocess.CompletedProcess``."""

    args: str
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> RunResult:
        """Return self, or raise ``CommandFailed`` (exit code and stderr) if it failed."""
        if self.returncode != 0:
            raise CommandFailed(
                self.args, self.returncode, self.stderr, stdout=self.stdout, host=self.host
            )
        return self


class Transport(Protocol):
    """Runs commands on one host and reaches its unix sockets."""

    @property
    def name(self) -> str:
        """``lab:NAME`` or ``ssh://user@host:port``: how errors name the host."""
        ...

    def run(self, command: Command, *, timeout: float, input: str | bytes | None) -> RunResult:
        """``command`` is a shell string (``/bin/sh -c``) or an argv list (run directly)."""
        ...

    def forward_unix(self, remote_path: str) -> Path:
        """A local unix socket whose connections reach ``remote_path`` on the host."""
        ...

    def stream_argv(self, command: str) -> list[str]:
        """A local command line that runs the shell ``command`` on the host with this
        process's stdin and stdout, for streams too big to hold (files of GiBs)."""
        ...

    def close(self) -> None: ...


def shown(command: Command) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _check_remote_socket(remote_path: str) -> None:
    if not remote_path.startswith("/"):
        raise UsageError(
            f"remote socket path must be absolute: {remote_path!r}",
            hint="give the full path on the host, e.g. /var/run/xen/qmp-libxl-1",
        )


def _check_command(command: Command) -> None:
    if isinstance(command, str):
        if not command.strip():
            raise UsageError("empty command", hint="give a shell string or an argv list")
    elif not command or not all(isinstance(a, str) for a in command):
        raise UsageError(f"bad argv {command!r}", hint="give a non-empty list of strings")


# -- labs ------------------------------------------------------------------


class LabTransport:
    """Commands through a lab's ``Machine`` (its dom0 agent, or ssh), with crash detection."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    @property
    def name(self) -> str:
        return f"lab:{self.machine.name}"

    def run(self, command: Command, *, timeout: float, input: str | bytes | None) -> RunResult:
        _check_command(command)
        text = shown(command)
        command, text_input = _as_text_input(command, input)
        try:
            r = self.machine.run(command, timeout=timeout, input=text_input)
        except LabCrashed:
            raise
        except UsageError as exc:
            self.machine.check_crash()
            raise HostUnreachable(
                f"lab {self.machine.name} is not running",
                host=self.name,
                hint=f"boot it: xenkit lab up {self.machine.name}",
            ) from exc
        except OperationFailed as exc:
            # A panicking host takes the agent's connection (or the time-out) with it:
            # what the console says is the better error.
            timed_out = "timed out" in exc.message
            self.machine.check_crash(wait=0.2 if timed_out else CRASH_GRACE)
            if timed_out:
                raise CommandTimedOut(text, timeout, host=self.name) from exc
            raise HostUnreachable(
                f"lost lab {self.machine.name} while running: {text} ({exc.message})",
                host=self.name,
                hint=exc.hint,
            ) from exc
        if r.returncode != 0:
            # A failure may be the host dying under the command: the console knows. Exit
            # 255 with ssh's own words is the lab's ssh fallback failing to connect.
            self.machine.check_crash(wait=CRASH_GRACE if r.returncode == 255 else 0.0)
            if r.returncode == 255 and _SSH_OWN_ERROR.search(r.stderr):
                raise HostUnreachable(
                    f"lost lab {self.machine.name} while running: {text} "
                    f"({r.stderr.strip().splitlines()[-1]})",
                    host=self.name,
                    hint=f"is it still up? xenkit lab status {self.machine.name}",
                )
        return RunResult(text, r.returncode, r.stdout, r.stderr, r.elapsed, self.name)

    def forward_unix(self, remote_path: str) -> Path:
        _check_remote_socket(remote_path)
        try:
            return self.machine.ssh.forward_unix(remote_path)
        except LabCrashed:
            raise
        except OperationFailed as exc:
            self.machine.check_crash()
            raise HostUnreachable(exc.message, host=self.name, hint=exc.hint) from exc
        except UsageError as exc:
            self.machine.check_crash()
            raise HostUnreachable(exc.message, host=self.name, hint=exc.hint) from exc

    def stream_argv(self, command: str) -> list[str]:
        return self.machine.ssh_argv([command])

    def close(self) -> None:
        """Nothing to do: the lab's master connection belongs to the lab."""


def _as_text_input(command: Command, data: str | bytes | None) -> tuple[Command, str | None]:
    """The lab's agent carries text; bytes that are not UTF-8 travel as base64."""
    if not isinstance(data, bytes):
        return command, data
    try:
        return command, data.decode()
    except UnicodeDecodeError:
        pass
    inner = (
        f"/bin/sh -c {shlex.quote(command)}" if isinstance(command, str) else shlex.join(command)
    )
    return f"base64 -d | {inner}", base64.b64encode(data).decode()


# -- OpenSSH ---------------------------------------------------------------


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in; ``ssh://user@host:port`` plus the ssh options to use."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    host_key_alias: str | None = None
    #: An ssh_config to use instead of the user's (``-F``); None reads the user's own.
    config_file: Path | None = None

    @classmethod
    def parse(cls, spec: str, **options: object) -> SshTarget:
        """``ssh://[user@]host[:port]``; keyword options fill the other fields."""
        parts = urlsplit(spec)
        try:
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"bad port in {spec!r}", hint="use ssh://user@host:PORT") from exc
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(
                f"not an ssh host: {spec!r}",
                hint="use ssh://[user@]host[:port], e.g. ssh://root@xen1",
            )
        if parts.query or parts.fragment or parts.password:
            raise UsageError(
                f"unsupported parts in {spec!r}",
                hint="give only user, host and port; pass identity=... to Host.open",
            )
        return cls(host=parts.hostname, user=parts.username, port=port, **options)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{host}{port}"

    def key(self) -> str:
        """Names this target's control socket: same target, same master."""
        text = "\0".join(
            str(v)
            for v in (
                self.user,
                self.host,
                self.port,
                self.identity,
                self.known_hosts,
                self.host_key_alias,
                self.config_file,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def control_dir() -> Path:
    """A private directory for control sockets: short paths, owned by this user only."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        root = Path(runtime) / "xenkit"
    else:
        root = Path(tempfile.gettempdir()) / f"xenkit-{os.getuid()}"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UsageError(
            f"{root} is not private to this user",
            hint="remove it, or set XDG_RUNTIME_DIR to a directory of your own",
        )
    return root


_SSH_OWN_ERROR = re.compile(
    r"^(ssh: |kex_exchange_identification|Connection (closed|reset|timed out|refused)|"
    r"Permission denied \(|Host key verification failed|client_loop: |"
    r"mux_client_|Control socket connect|Timeout, server .* not responding)",
    re.MULTILINE,
)


class SshTransport:
    """Commands over OpenSSH, multiplexed on one master connection per target."""

    def __init__(self, target: SshTarget, *, directory: Path | None = None) -> None:
        self.target = target
        self._ssh = require("ssh")
        self._dir = directory or control_dir()
        key = target.key()
        self.control_path = self._dir / f"ssh-{key}.ctl"
        self.log = self._dir / f"ssh-{key}.log"
        self._key = key
        self._master_ok = False
        self._started_master = False
        self._forwards: dict[str, Path] = {}

    @property
    def name(self) -> str:
        return self.target.url

    def _argv(self, *extra: str) -> list[str]:
        t = self.target
        argv = [self._ssh]
        if t.config_file is not None:
            argv += ["-F", str(t.config_file)]
        if t.identity is not None:
            argv += ["-i", str(t.identity), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.user is not None:
            argv += ["-l", t.user]
        argv += ["-o", "BatchMode=yes"]
        if t.known_hosts is not None:
            argv += [
                "-o", f"UserKnownHostsFile={t.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
            ]  # fmt: skip
        if t.host_key_alias is not None:
            argv += ["-o", f"HostKeyAlias={t.host_key_alias}"]
        argv += [
            "-o", f"ControlPath={self.control_path}",
            "-o", "ConnectTimeout=5",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
            *extra,
            t.host,
        ]  # fmt: skip
        return argv

    def stream_argv(self, command: str) -> list[str]:
        self._ensure_master()
        return [*self._argv("-o", "ControlMaster=no", "-T"), command]

    # -- the master ----------------------------------------------------------

    def master_alive(self) -> bool:
        if not self.control_path.exists():
            return False
        done = subprocess.run(
            self._argv("-O", "check"), capture_output=True, stdin=subprocess.DEVNULL, timeout=10
        )
        return done.returncode == 0

    def _ensure_master(self) -> None:
        if self._master_ok and self.control_path.exists():
            return
        if self.master_alive():
            self._master_ok = True
            return
        self.control_path.unlink(missing_ok=True)
        for stale in self._dir.glob(f"fwd-{self._key}-*.sock"):
            stale.unlink(missing_ok=True)
        self._forwards.clear()
        self.log.write_text("")
        argv = self._argv("-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-f", "-N")
        with self.log.open("ab") as log:
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=30
                )
                failed = done.returncode != 0
            except subprocess.TimeoutExpired:
                failed = True
        if failed or not self.master_alive():
            said = self.log.read_text(errors="replace").strip()
            last = said.splitlines()[-1] if said else "no answer"
            raise HostUnreachable(
                f"cannot reach {self.name} over ssh: {last}",
                host=self.name,
                hint=_ssh_hint(said, self.target),
            )
        self._master_ok = True
        self._started_master = True

    def close(self) -> None:
        """Stop the master if this transport started it, and remove its forwards."""
        for local in self._forwards.values():
            local.unlink(missing_ok=True)
        self._forwards.clear()
        if self._started_master and self.control_path.exists():
            subprocess.run(
                self._argv("-O", "exit"), capture_output=True, stdin=subprocess.DEVNULL, timeout=10
            )
            self.control_path.unlink(missing_ok=True)
            self.log.unlink(missing_ok=True)
        self._master_ok = self._started_master = False

    # -- commands --------------------------------------------------------------

    def run(self, command: Command, *, timeout: float, input: str | bytes | None) -> RunResult:
        _check_command(command)
        text = shown(command)
        self._ensure_master()
        if isinstance(command, str):
            inner = f"/bin/sh -c {shlex.quote(command)}"
        else:
            inner = shlex.join(command)
        remote = f"exec timeout -k {KILL_AFTER} {timeout:g} {inner}"
        argv = self._argv("-o", "ControlMaster=no", "-T")
        argv.append(remote)
        data = input.encode() if isinstance(input, str) else input
        start = time.monotonic()
        try:
            done = subprocess.run(
                argv,
                input=data,
                stdin=subprocess.DEVNULL if data is None else None,
                capture_output=True,
                timeout=timeout + KILL_AFTER + LOCAL_GRACE,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimedOut(text, timeout, host=self.name) from exc
        elapsed = time.monotonic() - start
        out = done.stdout.decode("utf-8", "replace")
        err = done.stderr.decode("utf-8", "replace")
        if done.returncode == 255 and _SSH_OWN_ERROR.search(err):
            self._master_ok = False
            raise HostUnreachable(
                f"lost {self.name} while running: {text} ({err.strip().splitlines()[-1]})",
                host=self.name,
                hint=_ssh_hint(err, self.target),
            )
        if done.returncode in (124, 128 + 9) and elapsed >= timeout * 0.98:
            raise CommandTimedOut(text, timeout, host=self.name)
        if done.returncode == 127 and "timeout: not found" in err:
            raise HostUnreachable(
                f"{self.name} has no 'timeout' command",
                host=self.name,
                hint="install coreutils on the host; xenkit enforces time-outs there with it",
            )
        return RunResult(text, done.returncode, out, err, elapsed, self.name)

    def forward_unix(self, remote_path: str) -> Path:
        _check_remote_socket(remote_path)
        local = self._forwards.get(remote_path)
        if local is not None and local.exists() and self._master_ok:
            return local
        self._ensure_master()
        digest = hashlib.sha256(remote_path.encode()).hexdigest()[:12]
        local = self._dir / f"fwd-{self._key}-{digest}.sock"
        if len(os.fsencode(local)) > 107:
            raise UsageError(
                f"socket path too long for a unix socket: {local}",
                hint="set XDG_RUNTIME_DIR (or TMPDIR) to a shorter directory",
            )
        done = subprocess.run(
            self._argv(
                "-o", "StreamLocalBindUnlink=yes", "-O", "forward", "-L", f"{local}:{remote_path}"
            ),
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=15,
        )  # fmt: skip
        if done.returncode != 0 or not local.exists():
            raise HostUnreachable(
                f"ssh could not forward {local} to {remote_path} on {self.name}: "
                f"{(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}",
                host=self.name,
                hint="the host's sshd must allow it (AllowStreamLocalForwarding)",
            )
        self._forwards[remote_path] = local
        return local


def _ssh_hint(said: str, target: SshTarget) -> str:
    port = target.port or 22
    if "Permission denied" in said:
        return (
            "ssh could not log in: pass identity=PATH (a key the host accepts) or load "
            "the key into ssh-agent; xenkit runs ssh in batch mode, without passwords"
        )
    if "Host key verification failed" in said or "No ED25519 host key" in said:
        return (
            f"the host key is unknown or changed: check it, then add it with "
            f"ssh-keyscan -p {port} {target.host} >> ~/.ssh/known_hosts"
        )
    if "Could not resolve" in said:
        return f"{target.host} does not resolve; check the name"
    return f"check that {target.host} is up and that sshd listens on port {port}"
