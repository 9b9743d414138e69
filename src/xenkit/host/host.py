"""``Host``: one Xen host, a lab or a real machine, reached the same way.

::

    host = Host.open()                          # the default lab, booted on demand
    host = Host.open("lab:ci")                  # a running lab by name
    host = Host.open("ssh://root@xen1")         # a real host over OpenSSH
    host.run(["xl", "info"], timeout=30, check=True).stdout
    host.xl.list()                              # typed results (see xl.py)

Every command goes through a ``Transport`` (``transport.py``); every failure
is typed: ``HostUnreachable``, ``CommandFailed``, ``CommandTimedOut``, and a
lab that crashed raises the lab's ``LabCrashed`` with its console lines.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.dom0 import server
from xenkit.host.errors import CommandFailed, CommandTimedOut, HostUnreachable
from xenkit.host.transport import (
    Command,
    LabTransport,
    RunResult,
    SshTarget,
    SshTransport,
    Transport,
)
from xenkit.host.zipapp import DOM0_APP_PATH, Dom0App, build_dom0_app
from xenkit.lab.image import Progress, build_image
from xenkit.lab.machine import Machine
from xenkit.lab.paths import check_lab_name, state_root

if TYPE_CHECKING:
    from xenkit.host.qmp import Qmp
    from xenkit.host.xl import Xl

#: The lab that ``Host.open()`` (and every ``--host``-less command) uses.
DEFAULT_LAB = "default"
_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _noop(stage: str, detail: str) -> None:
    del stage, detail


def parse_spec(spec: str | None) -> tuple[str, str]:
    """``(kind, value)`` for a host spec: ``("lab", NAME)`` or ``("ssh", URL)``."""
    if spec is None or spec == "":
        return "lab", DEFAULT_LAB
    if spec.startswith("ssh://"):
        return "ssh", spec
    name = spec.removeprefix("lab:")
    if _LAB_NAME.fullmatch(name):
        return "lab", name
    raise UsageError(
        f"not a host: {spec!r}",
        hint="give a lab name (lab:NAME or NAME) or ssh://[user@]host[:port]",
    )


class Host:
    """One Xen host. Create it with ``Host.open`` (or ``Host.from_machine`` for a lab)."""

    def __init__(self, transport: Transport, *, machine: Machine | None = None) -> None:
        self.transport = transport
        #: The lab behind this host, or None for an ssh:// host.
        self.machine = machine
        self._xl: Xl | None = None
        self._dom0_app: str | None = None

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        spec: str | None = None,
        *,
        progress: Progress | None = None,
        state_dir: Path | None = None,
        boot_timeout: float = 300.0,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        host_key_alias: str | None = None,
        ssh_config: Path | None = None,
    ) -> Host:
        """The host that ``spec`` names.

        ``None`` is the default lab, booted (from the cached image, built if
        needed) when it is not running, with ``progress(stage, detail)``
        called along the way. A lab named otherwise must be running already.
        ``ssh://[user@]host[:port]`` is a real host over OpenSSH; the ssh
        keywords (``identity`` ...) apply to it only.
        """
        kind, value = parse_spec(spec)
        if kind == "ssh":
            target = SshTarget.parse(
                value,
                identity=identity,
                known_hosts=known_hosts,
                host_key_alias=host_key_alias,
                config_file=ssh_config,
            )
            return cls(SshTransport(target))
        if identity or known_hosts or host_key_alias or ssh_config:
            raise UsageError(
                "ssh options are for ssh:// hosts", hint="a lab brings its own key and host key"
            )
        machine = Machine(check_lab_name(value), state_dir=state_dir)
        if not machine.is_running():
            if value != DEFAULT_LAB:
                raise HostUnreachable(
                    f"lab {value} is not running",
                    host=f"lab:{value}",
                    hint=f"boot it: xenkit lab up {value}",
                )
            _boot_default(machine, state_dir, progress or _noop, boot_timeout)
        return cls.from_machine(machine)

    @classmethod
    def from_machine(cls, machine: Machine) -> Host:
        """The host of a lab you already hold (a test's ``lab`` fixture, say)."""
        return cls(LabTransport(machine), machine=machine)

    @property
    def name(self) -> str:
        """``lab:NAME`` or ``ssh://user@host:port``."""
        return self.transport.name

    def __repr__(self) -> str:
        return f"Host({self.name!r})"

    def close(self) -> None:
        """Drop the connection (an ssh:// host's master); a lab keeps running."""
        self.transport.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands --------------------------------------------------------------

    def run(
        self,
        command: Command,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> RunResult:
        """Run ``command`` in dom0 as root: a shell string (``/bin/sh -c``) or an argv list.

        Raises ``CommandTimedOut`` after ``timeout`` seconds (the command is
        killed on the host), ``HostUnreachable`` when the host cannot be
        reached, a lab's ``LabCrashed`` when its console shows a crash, and
        with ``check`` ``CommandFailed`` (exit code, stderr) on a non-zero exit.
        """
        if timeout <= 0:
            raise UsageError(f"timeout must be positive, not {timeout}")
        result = self.transport.run(command, timeout=timeout, input=input)
        return result.check() if check else result

    def put_file(
        self, remote_path: str, data: bytes, *, mode: int = 0o644, timeout: float = 60.0
    ) -> None:
        """Write ``data`` to ``remote_path`` (parents made), atomically: a reader sees the
        old file or the new one, never half of it."""
        path = _absolute(remote_path)
        tmp = f"{path}.xenkit-tmp"
        script = (
            f"set -e; mkdir -p {shlex.quote(str(Path(path).parent))}; "
            f"base64 -d > {shlex.quote(tmp)}; chmod {mode:o} {shlex.quote(tmp)}; "
            f"mv -f {shlex.quote(tmp)} {shlex.quote(path)}"
        )
        self.run(script, input=base64.b64encode(data).decode(), timeout=timeout, check=True)

    def get_file(self, remote_path: str, *, timeout: float = 60.0) -> bytes:
        """The bytes of ``remote_path``; ``CommandFailed`` if it cannot be read."""
        path = _absolute(remote_path)
        r = self.run(["base64", "-w0", path], timeout=timeout)
        if not r.ok:
            raise CommandFailed(
                r.args,
                r.returncode,
                r.stderr,
                host=self.name,
                message=f"cannot read {path} on {self.name}",
                hint="check the path (and that it is a file)",
            )
        return base64.b64decode(r.stdout)

    def upload(self, local: Path, remote_path: str, *, timeout: float = 3600.0) -> None:
        """Copy the local file to ``remote_path`` in dom0 as a stream (holes are sent as
        zeros and stay holes there: ``dd conv=sparse``); atomic like ``put_file``."""
        path = _absolute(remote_path)
        tmp = shlex.quote(f"{path}.xenkit-tmp")
        script = (
            f"set -e; mkdir -p {shlex.quote(str(Path(path).parent))}; "
            f"dd of={tmp} bs=1M conv=sparse status=none iflag=fullblock; "
            f"mv -f {tmp} {shlex.quote(path)}"
        )
        with local.open("rb") as source:
            self._stream(script, stdin=source, stdout=subprocess.DEVNULL, timeout=timeout)

    def download(self, remote_path: str, local: Path, *, timeout: float = 3600.0) -> None:
        """Copy ``remote_path`` in dom0 to the local file, as a stream; the local file
        appears whole or not at all."""
        tmp = local.with_name(local.name + ".xenkit-tmp")
        try:
            with tmp.open("wb") as sink:
                self._stream(f"cat {shlex.quote(_absolute(remote_path))}", stdin=subprocess.DEVNULL,
                             stdout=sink, timeout=timeout)  # fmt: skip
            tmp.replace(local)
        finally:
            tmp.unlink(missing_ok=True)

    def _stream(self, script: str, *, stdin: Any, stdout: Any, timeout: float) -> None:
        argv = self.transport.stream_argv(script)
        try:
            done = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                  timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise CommandTimedOut(script, timeout, host=self.name) from exc
        if done.returncode != 0:
            raise CommandFailed(script, done.returncode, done.stderr.decode(errors="replace"),
                                host=self.name)  # fmt: skip

    def forward_unix(self, remote_path: str) -> Path:
        """A local unix socket whose every connection reaches ``remote_path`` in dom0."""
        return self.transport.forward_unix(remote_path)

    # -- Xen -------------------------------------------------------------------

    @property
    def xl(self) -> Xl:
        """The toolstack, with typed results."""
        if self._xl is None:
            from xenkit.host.xl import Xl

            self._xl = Xl(self)
        return self._xl

    def qmp(self, domid: int, *, timeout: float = 30.0) -> Qmp:
        """A QMP client for the QEMU of domain ``domid`` (its device model or qdisk
        backend); use it as a context manager, and briefly: libxl needs the socket too."""
        from xenkit.host.qmp import Qmp

        return Qmp.for_domain(self, domid, timeout=timeout)

    # -- the dom0 zipapp -----------------------------------------------------------

    def push_dom0(self, *, force: bool = False) -> bool:
        """Put the dom0 zipapp at ``DOM0_APP_PATH`` unless the host's copy is the same;
        True if it was sent."""
        app = build_dom0_app()
        if self._dom0_app == app.sha256 and not force:
            return False
        if not force and self._remote_sha256(DOM0_APP_PATH) == app.sha256:
            self._dom0_app = app.sha256
            return False
        self.put_file(DOM0_APP_PATH, app.path.read_bytes(), mode=0o644)
        if self._remote_sha256(DOM0_APP_PATH) != app.sha256:
            raise CommandFailed(
                f"sha256sum {DOM0_APP_PATH}",
                1,
                "",
                host=self.name,
                message=f"the dom0 zipapp on {self.name} does not match what was sent",
                hint="is the disk full? (df /var/lib)",
            )
        self._dom0_app = app.sha256
        return True

    def dom0_app(self) -> Dom0App:
        """The zipapp this host gets (built and cached locally by content)."""
        return build_dom0_app()

    def run_dom0(
        self,
        args: Sequence[str],
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> RunResult:
        """``python3 -I /var/lib/xenkit/xenkit-dom0.pyz ARGS`` in dom0 (pushed first if
        needed), through the archive's resident fork server when one runs (see
        ``xenkit.dom0.server``): the same result, without 0.6 s of Python starting. The
        first call starts the server, in the background, and runs the command itself."""
        self.push_dom0()
        assert self._dom0_app is not None
        sock = server.socket_path(self._dom0_app)
        data = input.encode() if isinstance(input, str) else (input or b"")
        request = json.dumps({"argv": list(args), "input": len(data)}).encode() + b"\n" + data
        via = (
            f"[ -S {sock} ] && command -v socat >/dev/null && "
            f"exec socat -t {timeout:.0f} - UNIX-CONNECT:{sock}"
        )
        r = self.run(via, timeout=timeout, input=request)
        magic = server.MAGIC.decode()
        if r.stdout.startswith(magic):
            out, err, status = server.unframe(r.stdout[len(magic) :])
            if status is None:
                status = 1
                err += f"\nxenkit-dom0 server on {self.name}: the call was cut (socat: {r.stderr})"
            result = RunResult(r.args, status, out, err, r.elapsed, host=self.name)
            return result.check() if check else result
        # Nothing ran: no server yet (or a dead one's socket). Start one for the next call.
        start = (
            f"python3 -I {DOM0_APP_PATH} serve {sock} --detach </dev/null >/dev/null 2>&1 & "
            f"exec python3 -I {DOM0_APP_PATH} {shlex.join(args)}"
        )
        return self.run(start, timeout=timeout, input=input, check=check)

    def follow_dom0(self, args: Sequence[str]) -> Iterator[str]:
        """The lines a long-running zipapp command (``clamp watch``) prints, as it
        prints them: one ssh session and one process in dom0 for the whole run,
        forked by the resident server when one runs (``"stream"`` calls), where
        asking again each second costs a session and a fork each time (on the lab's
        emulated dom0, 0.2-0.4 s of CPU: load an exempt dom0 puts on the clamp it
        watches). Ends when the command does; ``CommandFailed`` if it failed
        without a word on stdout."""
        self.push_dom0()
        assert self._dom0_app is not None
        sock = server.socket_path(self._dom0_app)
        script = (
            f"if [ -S {sock} ] && command -v socat >/dev/null; "
            f"then exec socat -t 86400 - UNIX-CONNECT:{sock}; "
            f"else exec python3 -I {DOM0_APP_PATH} {shlex.join(args)} </dev/null; fi"
        )
        request = json.dumps({"argv": list(args), "input": 0, "stream": True}) + "\n"
        argv = self.transport.stream_argv(script)
        said = False
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stderr is not None
            proc.stdin.write(request)
            proc.stdin.close()
            ended = False
            try:
                for line in proc.stdout:
                    if not said and line.encode() == server.MAGIC:
                        continue  # the server's: what follows is the command's stdout
                    said = True
                    yield line.rstrip("\n")
                ended = True
            finally:
                if not ended:  # the caller stopped reading (--count, Ctrl-C)
                    proc.terminate()
            stderr = proc.stderr.read()
        if proc.returncode != 0 and not said:
            raise CommandFailed(script, proc.returncode, stderr, host=self.name)

    def run_dom0_json(
        self,
        args: Sequence[str],
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
    ) -> Any:
        """``run_dom0`` for the zipapp's commands that answer with one JSON line (the
        last one); a command that gave none is an ``OperationFailed`` quoting it."""
        r = self.run_dom0(args, timeout=timeout, input=input)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise OperationFailed(
                f"xenkit-dom0.pyz {args[0]} on {self.name} gave no JSON answer "
                f"(exit {r.returncode}): {r.stdout.strip()[-200:]!r}",
                hint=(r.stderr.strip().splitlines() or ["it printed nothing on stderr"])[-1],
            ) from None

    def _remote_sha256(self, path: str) -> str | None:
        r = self.run(["sha256sum", path], timeout=30)
        if not r.ok or not r.stdout.strip():
            return None
        return r.stdout.split()[0]


def _absolute(remote_path: str) -> str:
    if not remote_path.startswith("/") or "\0" in remote_path:
        raise UsageError(
            f"remote path must be absolute: {remote_path!r}", hint="give the full path in dom0"
        )
    return remote_path


def _boot_default(
    machine: Machine, state_dir: Path | None, report: Progress, timeout: float
) -> None:
    """Boot the default lab, once, however many processes ask at the same time."""
    root = state_dir or state_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{machine.name}.boot-lock"):
        if machine.is_running():
            return
        report("image", "finding the lab image (built on first use)")
        image = build_image(progress=report)
        machine.clean_stale()
        machine.boot(image, progress=report, timeout=timeout)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
