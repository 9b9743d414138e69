"""Boot, reach, snapshot and stop a lab: a Xen host running in QEMU (TCG).

Each lab has a name and a directory of its own (pid, ports, sockets, its
disk overlay, console capture), so several labs run side by side and a lab
outlives the Python process that booted it: ``Machine(name)`` in another
process finds it again. The cached base image is only ever a read-only
backing file; everything a lab writes, snapshots included, lands in its
overlay.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.lab import network, scripts
from xenkit.lab.console import ConsoleFault, ConsoleLog, find_fault
from xenkit.lab.image import LabImage, Progress
from xenkit.lab.paths import check_lab_name, check_socket_path, state_root
from xenkit.lab.qmp import QmpClient
from xenkit.lab.ssh import (
    RunResult,
    SshEndpoint,
    SshSession,
    Via,
    make_identity,
    public_key_blob,
)
from xenkit.lab.tools import require, run_tool

Xenstored = Literal["oxenstored", "xenstored"]
#: What ``Machine.condition`` reports: ``dead`` is a QEMU that ended without ``stop``.
Condition = Literal["running", "crashed", "dead", "stopped", "absent"]

#: The recipe's CPU: ``+npt`` gives Xen HAP, without which PVH/HVM guests cannot start
#: (Debian's Xen has no shadow paging); ``-cpu max`` kills dom0 in early PV setup.
CPU_MODEL = "qemu64,+svm,+npt"

#: A booting lab that prints nothing for this long has stalled (a boot's longest
#: quiet stretch is about 4 s, 15 s on a loaded machine); it is booted once again.
STALL_SECONDS = 60.0


def _until_quiet(log: ConsoleLog, sock: socket.socket, *, quiet: float, limit: float) -> list[str]:
    """The console's new lines until none came for ``quiet`` seconds (or ``limit``
    passed). QEMU holds the serial line back while a connected client does not read,
    so what the socket receives is read and dropped (the log file has it)."""
    lines: list[str] = []
    start = heard = time.monotonic()
    while time.monotonic() - heard < quiet and time.monotonic() - start < limit:
        time.sleep(0.1)
        with contextlib.suppress(BlockingIOError):
            while sock.recv(65536):
                pass
        new = log.poll()
        if new:
            lines += new
            heard = time.monotonic()
    return lines


class BootStalled(OperationFailed):
    """The console went quiet before the toolstack was ready."""

    def __init__(self, message: str, *, where: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.where = where


#: dom0's address on QEMU's user network; hostfwd's default target is .15.
USER_NET = "198.51.100.0/24"
DOM0_USER_IP = "198.51.100.15/24"
#: The user-network NIC's MAC (QEMU's default, made explicit: dom0 finds its NIC by it).
USER_MAC = "52:54:00:12:34:56"
#: Xen's schedulers that a lab can boot with (``sched=``).
SCHEDULERS = ("credit", "credit2", "rtds", "arinc653", "null")


class LabCrashed(OperationFailed):
    """The lab's Xen or dom0 crashed: the console says so, and the lines are quoted."""

    def __init__(
        self, name: str, fault: ConsoleFault, console: Path, lines: Sequence[str] | None = None
    ) -> None:
        shown = list(fault.excerpt if lines is None else lines)
        super().__init__(
            f"lab {name} crashed ({fault.title}): {fault.line.strip()}\n" + "\n".join(shown),
            hint=f"full console: {console}; restore a snapshot "
            f"(xenkit lab snapshot load --lab {name} TAG) or boot it again "
            f"(xenkit lab down {name} && xenkit lab up {name})",
        )
        self.name = name
        self.fault = fault
        self.lines = shown


#: Crash-dump lines that carry little for a reader: Xen's stack words and code bytes,
#: a Linux trace's unreliable ("? ") frames and code bytes.
_DUMP_NOISE = re.compile(
    r"^\(XEN\)\s+(?:[0-9a-f]{16}\s*)+$|^\(XEN\)\s+(?:<?[0-9a-f]{2}>?\s*){8,}$"
    r"|^\(XEN\) Xen (?:code around|stack trace from)"
    r"|^\[\s*\d+\.\d+\]\s+\? |^\[\s*\d+\.\d+\] Code: "
)
_AFTER = 25


def crash_excerpt(lines: Sequence[str], fault: ConsoleFault) -> list[str]:
    """The console lines that explain a fault.

    Xen prints its dump (CPU state, call trace) before the line that says
    "Panic", so a Xen fault is quoted from the dump's ``----[ Xen-`` header;
    a dom0 fault from a few lines before. Both run on to Xen's reboot line
    (at most 25 lines on); noise (stack words, code bytes, unreliable frames)
    is left out.
    """
    try:
        at = lines.index(fault.line)
    except ValueError:
        return list(fault.excerpt)
    start = max(0, at - 5)
    if fault.line.startswith("(XEN)"):
        for i in range(at, max(-1, at - 120), -1):
            if "----[ Xen-" in lines[i]:
                start = i
                break
    shown = [line for line in lines[start:at] if not _DUMP_NOISE.search(line)]
    after = 0
    for line in lines[at : at + 4 * _AFTER]:
        if _DUMP_NOISE.search(line):
            continue
        shown.append(line)
        after += 1
        if after >= _AFTER or "Reboot in five seconds" in line or "rebooting machine in" in line:
            break
    return shown


def _noop(stage: str, detail: str) -> None:
    del stage, detail


@dataclass(frozen=True)
class BootOptions:
    """How to boot one image; all of it reaches Xen or dom0 on their command lines."""

    memory_mib: int = 2048
    cpus: int = 2
    dom0_memory_mib: int = 1024
    #: Xen's ``sched=``: credit (credit1), credit2 (4.17's default), rtds, arinc653, null.
    scheduler: str = "credit"
    xenstored: Xenstored = "oxenstored"
    xen_args: tuple[str, ...] = ()
    dom0_args: tuple[str, ...] = ()
    #: The joined network this lab is on (None: on its own), see ``xenkit.lab.network``.
    network: str | None = None
    #: Its index there: dom0 is 192.0.2.<index> on xenbr0, the join NIC's MAC ends in it.
    join_index: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"cpus must be 1-64, not {self.cpus}", hint="the lab is emulated")
        if self.memory_mib < 512:
            raise UsageError(
                f"memory_mib {self.memory_mib} is too small", hint="give the lab at least 512 MiB"
            )
        if self.scheduler not in SCHEDULERS:
            raise UsageError(
                f"unknown Xen scheduler {self.scheduler!r}",
                hint=f"use one of {', '.join(SCHEDULERS)}",
            )
        network.join_mac(self.join_index)
        if self.dom0_memory_mib >= self.memory_mib:
            raise UsageError(
                f"dom0_memory_mib ({self.dom0_memory_mib}) must be below memory_mib "
                f"({self.memory_mib})",
                hint="leave room for Xen and guests",
            )
        for word in (*self.xen_args, *self.dom0_args):
            if "," in word:
                raise UsageError(
                    f"boot argument {word!r} has a comma",
                    hint="QEMU splits multiboot modules on commas; avoid them",
                )

    def xen_cmdline(self) -> str:
        d = self.dom0_memory_mib
        words = [
            "console=com1",
            "com1=115200",
            f"dom0_mem={d}M,max:{d}M",
            f"sched={self.scheduler}",
            # Scrubbing all free RAM at boot costs TCG time and makes QEMU resident
            # for the whole -m (2.4 GiB instead of 0.7 GiB with 2 GiB); a lab needs no scrub.
            "bootscrub=0",
            # Under TCG a loaded host can starve the guest for seconds, and a
            # snapshot load jumps time: the ACPI PM timer (24 bits, wraps in 4.7 s)
            # then "unexpectedly wraps" and Xen's time goes wrong. The HPET
            # counter wraps after 42 s.
            "clocksource=hpet",
            "loglvl=all",
            "guest_loglvl=all",
            *self.xen_args,
        ]
        return " ".join(words)

    def dom0_cmdline(self, ssh_key_blob: str, hostname: str | None = None) -> str:
        words = [
            "console=hvc0",
            "earlyprintk=xen",
            "rdinit=/init",
            "quiet",
            f"xenkit.xenstored={self.xenstored}",
            f"xenkit.ip={DOM0_USER_IP}",
            f"xenkit.usermac={USER_MAC}",
            f"xenkit.bridgeip={network.bridge_cidr(self.join_index)}",
            f"xenkit.joinmac={network.join_mac(self.join_index)}",
            f"xenkit.sshkey={ssh_key_blob}",
            *([f"xenkit.hostname={hostname}"] if hostname else []),
            *self.dom0_args,
        ]
        return " ".join(words)


@dataclass(frozen=True)
class LabPaths:
    """Where one lab keeps its files."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def overlay(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def qmp(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def console_socket(self) -> Path:
        return self.root / "console.sock"

    @property
    def serial_log(self) -> Path:
        return self.root / "serial.log"

    def snapshot_console(self, tag: str) -> Path:
        """The console as it was when snapshot ``tag`` was saved: the restored host's past."""
        return self.root / "snapshots" / f"{tag}.console"

    @property
    def qemu_log(self) -> Path:
        return self.root / "qemu.log"

    @property
    def identity(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_control(self) -> Path:
        return self.root / "ssh.ctl"

    @property
    def ssh_log(self) -> Path:
        return self.root / "ssh.log"

    @property
    def agent_socket(self) -> Path:
        return self.root / "agent.sock"

    @property
    def join_socket(self) -> Path:
        """The join NIC's stream server; a network's switch connects to it."""
        return self.root / "join.sock"

    def sockets(self) -> tuple[Path, ...]:
        return (
            self.qmp,
            self.console_socket,
            self.ssh_control,
            self.agent_socket,
            self.join_socket,
        )


@dataclass
class LabState:
    """What ``state.json`` records about a lab's current (or last) QEMU."""

    name: str
    image: str
    image_key: str
    pid: int
    pid_start: str
    ssh_port: int
    options: dict[str, object]
    booted_at: float
    ready_after: float | None = None
    snapshots: list[str] = field(default_factory=list)
    #: Console bytes before this offset belong to a past the host was restored from.
    console_from: int = 0
    #: SHA-256 of the base disk the overlay was created over (from the image manifest).
    base_digest: str = ""

    @classmethod
    def read(cls, path: Path) -> LabState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)


def qemu_command(
    image: LabImage,
    paths: LabPaths,
    options: BootOptions,
    *,
    ssh_port: int,
    ssh_key_blob: str,
    loadvm: str | None = None,
) -> list[str]:
    """The full QEMU command line for one lab (pure: tests and benchmarks read it)."""
    dom0 = options.dom0_cmdline(ssh_key_blob, hostname=paths.root.name)
    modules = f"{image.kernel} {dom0},{image.initrd}"
    for path in (image.xen, image.kernel, image.initrd, paths.overlay):
        if "," in str(path):
            raise UsageError(
                f"path {path} has a comma",
                hint="QEMU option syntax cannot carry it; move the cache or state directory",
            )
    netdev = f"user,id=net0,net={USER_NET},restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    join = f"stream,id=join0,server=on,addr.type=unix,addr.path={paths.join_socket}"
    argv = [
        require("qemu-system-x86_64"),
        "-name", f"xenkit-lab-{paths.root.name},process=xenkit-lab-{paths.root.name}",
        "-machine", "q35",
        "-accel", "tcg",
        "-cpu", CPU_MODEL,
        "-smp", str(options.cpus),
        "-m", str(options.memory_mib),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-chardev",
        f"socket,id=serial0,path={paths.console_socket},server=on,wait=off,"
        f"logfile={paths.serial_log},logappend={'on' if loadvm else 'off'},",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-netdev", netdev,
        "-device", f"virtio-net-pci,netdev=net0,mac={USER_MAC}",
        "-netdev", join,
        "-device", f"virtio-net-pci,netdev=join0,mac={network.join_mac(options.join_index)}",
        "-drive", f"file={paths.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-kernel", str(image.xen),
        "-append", options.xen_cmdline(),
        "-initrd", modules,
    ]  # fmt: skip
    if loadvm:
        argv += ["-loadvm", loadvm]
    return argv


def base_digest(image: LabImage) -> str:
    """The manifest's SHA-256 of the image's root disk ("" for an entry without one)."""
    try:
        manifest = json.loads((image.path / "manifest.json").read_text())
        return str(manifest["files"]["root.qcow2"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def options_from_json(data: Mapping[str, object]) -> BootOptions:
    """BootOptions back from ``state.json`` (lists become tuples; unknown keys ignored)."""
    known = {f.name for f in fields(BootOptions)}
    opts: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            opts[key] = tuple(value) if isinstance(value, list) else value
    return BootOptions(**opts)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    except OSError as exc:
        raise OperationFailed(
            f"no free TCP port on 127.0.0.1 for the lab's SSH forward ({exc})",
            hint="too many sockets are open on this machine; stop some labs or processes",
        ) from exc


def _proc_start(pid: int) -> str | None:
    """The process's start time in ticks: guards against a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return None
    return fields[19]


#: Programs every boot needs; checked before anything is written.
BOOT_TOOLS = ("qemu-system-x86_64", "qemu-img", "ssh", "ssh-keygen")

_SNAPSHOT_LINE = re.compile(
    r"^(?P<id>\d+|--)\s+(?P<tag>\S+)\s+(?P<size>\d+(?:\.\d+)?\s*\S*B)\s+"
    r"(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(?P<clock>[\d:.]+)"
)


@dataclass(frozen=True)
class SnapshotInfo:
    """One whole-host snapshot in a lab's overlay."""

    tag: str
    vm_size: str
    date: str
    vm_clock: str


class Machine:
    """One named lab. Cheap to create: it only reads state when asked."""

    def __init__(self, name: str = "default", *, state_dir: Path | None = None) -> None:
        self.name = check_lab_name(name)
        self.state_dir = state_dir or state_root()
        self.paths = LabPaths(self.state_dir / name)
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: SshSession | None = None
        self._console: ConsoleLog | None = None
        self._console_start = 0
        #: Seconds of console silence that make a boot stalled (tests shorten it).
        self.stall_after = STALL_SECONDS

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> LabState | None:
        return LabState.read(self.paths.state)

    def exists(self) -> bool:
        return self.paths.state.exists()

    def is_running(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            return False
        st = self.state
        return st is not None and st.pid > 0 and _proc_start(st.pid) == st.pid_start

    def condition(self) -> Condition:
        """running, crashed (the console shows a fault; QEMU may or may not still run),
        dead (QEMU ended without ``stop``), stopped, or absent (no such lab)."""
        st = self.state
        if st is None:
            return "absent"
        running = self.is_running()
        if (running or st.pid > 0) and self.fault() is not None:
            return "crashed"
        if running:
            return "running"
        return "dead" if st.pid > 0 else "stopped"

    def uptime(self) -> float | None:
        st = self.state
        if st is None or not self.is_running():
            return None
        return max(0.0, time.time() - st.booted_at)

    def options(self) -> BootOptions | None:
        """The options the lab was (last) booted with."""
        st = self.state
        if st is None:
            return None
        return options_from_json(st.options)

    def require_running(self) -> LabState:
        """The state of the running lab; LabCrashed if it died of a crash, else UsageError."""
        return self._require_running()

    def _require_running(self) -> LabState:
        st = self.state
        if st is None or not self.is_running():
            fault = self.fault() if st is not None and st.pid > 0 else None
            if fault is not None:
                raise self.crash_error(fault)
            raise UsageError(
                f"lab {self.name!r} is not running",
                hint=f"boot it first (xenkit lab up {self.name})",
            )
        return st

    @property
    def ssh(self) -> SshSession:
        """The lab's SSH session; kept, so its agent connection is reused."""
        st = self._require_running()
        if self._session is not None and self._session.endpoint.port == st.ssh_port:
            return self._session
        self._session = SshSession(self._endpoint(st.ssh_port))
        return self._session

    def _endpoint(self, port: int) -> SshEndpoint:
        return SshEndpoint(
            port=port,
            identity=self.paths.identity,
            known_hosts=self.paths.known_hosts,
            host_alias=f"xenkit-lab-{self.name}",
            control_path=self.paths.ssh_control,
            log=self.paths.ssh_log,
            agent_socket=self.paths.agent_socket,
        )

    def ssh_argv(self, command: Sequence[str] = (), *, tty: bool = False) -> list[str]:
        """An ``ssh`` command line into dom0 as root with the lab's key (uses the master
        connection when it is up, connects by itself when not)."""
        st = self._require_running()
        e = self._endpoint(st.ssh_port)
        argv = [
            require("ssh"),
            "-F", "/dev/null",
            "-i", str(e.identity),
            "-p", str(e.port),
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={e.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={e.host_alias}",
            "-o", f"ControlPath={e.control_path}",
            "-o", "ControlMaster=no",
            "-o", "LogLevel=ERROR",
            "-t" if tty else "-T",
            f"{e.user}@{e.host}",
        ]  # fmt: skip
        if command:
            argv += ["--", shlex.join(command) if len(command) > 1 else command[0]]
        return argv

    def console(self) -> str:
        """Everything captured on the serial console since the last boot."""
        try:
            return self.paths.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console_lines(self) -> list[str]:
        """The console since the host's present began (a restore starts a new present)."""
        log = self._console_log()
        log.poll()
        return list(log.lines)

    def _console_log(self) -> ConsoleLog:
        """A follower of the console from ``console_from``, renewed when that moves or the
        file was started over (a new QEMU truncates it)."""
        st = self.state
        start = st.console_from if st is not None else 0
        try:
            size = self.paths.serial_log.stat().st_size
        except OSError:
            size = 0
        log = self._console
        if log is None or self._console_start != start or size < log.offset:
            log = self._console = ConsoleLog(self.paths.serial_log, offset=min(start, size))
            self._console_start = start
        return log

    def fault(self) -> ConsoleFault | None:
        """The first Xen panic, dom0 oops or bring-up failure on the console, if any.

        Only the console since the last boot or snapshot restore counts. For
        callers that provoke crashes on purpose (the fuzzer) and need to know
        whether the host survived, not just whether QEMU still runs.
        """
        log = self._console_log()
        log.poll()
        return find_fault(log.lines)

    def crash(self, *, wait: float = 0.0) -> ConsoleFault | None:
        """The console's fault, waiting up to ``wait`` seconds for one to be printed
        (while QEMU still runs: a crashing host prints before it goes)."""
        deadline = time.monotonic() + wait
        while True:
            fault = self.fault()
            if fault is not None or time.monotonic() >= deadline:
                return fault
            if not self.is_running():
                time.sleep(0.1)
                return self.fault()
            time.sleep(0.1)

    def check_crash(self, *, wait: float = 0.0) -> None:
        """Raise LabCrashed if the console shows a fault."""
        fault = self.crash(wait=wait)
        if fault is not None:
            raise self.crash_error(fault)

    def crash_error(self, fault: ConsoleFault, lines: Sequence[str] | None = None) -> LabCrashed:
        """The error that reports ``fault``, quoting the console lines that explain it."""
        console = self.console_lines() if lines is None else lines
        return LabCrashed(
            self.name, fault, self.paths.serial_log, crash_excerpt(list(console), fault)
        )

    def rss_bytes(self) -> int:
        """Resident memory of this lab's QEMU."""
        st = self._require_running()
        for line in Path(f"/proc/{st.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    # -- boot --------------------------------------------------------------

    def clean_stale(self) -> LabState | None:
        """After a QEMU that died without ``stop``: remove its sockets, check its overlay.

        Returns the dead QEMU's state (None if there was nothing to clean). An
        overlay that ``qemu-img check`` finds corrupt is deleted (the next boot
        starts from the image again).
        """
        st = self.state
        if st is None or st.pid <= 0 or self.is_running():
            return None
        self._cleanup()
        if self.paths.overlay.exists():
            # Leaked clusters (what a killed QEMU usually leaves) are repaired in place;
            # exit 0 is clean or repaired, 3 is leaks left; anything else is damage.
            done = subprocess.run(
                [require("qemu-img"), "check", "-q", "-r", "leaks", str(self.paths.overlay)],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode not in (0, 3):
                self.paths.overlay.unlink(missing_ok=True)
        return st

    def boot(
        self,
        image: LabImage,
        options: BootOptions | None = None,
        *,
        snapshot: str | None = None,
        fresh: bool = False,
        timeout: float = 300.0,
        progress: Progress | None = None,
        ssh_port: int | None = None,
    ) -> float:
        """Start QEMU and wait until the toolstack is up and SSH answers.

        With ``snapshot`` QEMU resumes that saved host (``-loadvm``) instead of
        booting. The overlay is kept across boots (with its snapshots) unless
        ``fresh`` or the image changed. Returns the seconds until ready. On any
        failure (or interrupt) QEMU is ended: a failed boot leaves no process.
        """
        options = options or BootOptions()
        report = progress or _noop
        for program in BOOT_TOOLS:
            require(program)
        if self.is_running():
            st = self.state
            port = st.ssh_port if st is not None else 0
            raise UsageError(
                f"lab {self.name!r} is already running (ssh on 127.0.0.1:{port})",
                hint=f"reach it with: xenkit lab ssh {self.name}; stop it first to boot again",
            )
        start = time.monotonic()
        p = self.paths
        for sock in p.sockets():
            check_socket_path(sock)
        p.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        previous = self.state
        self._prepare_overlay(
            image, previous, fresh=fresh or previous is None, snapshot=snapshot, report=report
        )
        make_identity(p.identity)
        p.known_hosts.write_text(f"xenkit-lab-{self.name} {image.host_key}\n")
        p.ssh_log.write_text("")
        for stale in (*p.sockets(), p.serial_log):
            stale.unlink(missing_ok=True)
        console_from = 0
        if snapshot is not None:
            # The restored host's console begins with what it had printed when saved.
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(p.snapshot_console(snapshot), p.serial_log)
                console_from = p.serial_log.stat().st_size
        elif fresh or previous is None:
            shutil.rmtree(p.root / "snapshots", ignore_errors=True)
        self._console = None
        self._session = None
        blob = public_key_blob(p.identity)
        for boot in range(2):
            try:
                return self._start(
                    image, options, previous, snapshot, fresh, console_from, blob,
                    start=start, deadline=start + timeout, ssh_port=ssh_port, report=report,
                )  # fmt: skip
            except BootStalled as stalled:
                if boot == 1 or time.monotonic() + 2 * self.stall_after > start + timeout:
                    raise
                saved = p.root / "serial.stalled.log"
                console = self.console()
                saved.write_text(f"{stalled}\n\n---- the whole console ----\n{console}")
                p.serial_log.unlink(missing_ok=True)
                report(
                    "retry",
                    f"the boot of lab {self.name} stalled ({stalled.where}); booting it again "
                    f"(its console and Xen's dump: {saved})",
                )
        raise AssertionError("unreachable")

    def _start(
        self,
        image: LabImage,
        options: BootOptions,
        previous: LabState | None,
        snapshot: str | None,
        fresh: bool,
        console_from: int,
        blob: str,
        *,
        start: float,
        deadline: float,
        ssh_port: int | None,
        report: Progress,
    ) -> float:
        """One QEMU, from its start until SSH answers (see :meth:`boot`)."""
        p = self.paths
        report("boot", f"starting QEMU for lab {self.name}")
        proc: subprocess.Popen[bytes] | None = None
        try:
            for attempt in range(3):
                # A lab coming back keeps its port when it can: scripts hold on to it.
                port = ssh_port if attempt == 0 and ssh_port else free_port()
                argv = qemu_command(
                    image, p, options, ssh_port=port, ssh_key_blob=blob, loadvm=snapshot
                )
                with p.qemu_log.open("wb") as log:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._proc = proc
                time.sleep(0.05)
                if proc.poll() is None or "host forwarding" not in self._qemu_log():
                    break
                if attempt == 2:
                    raise OperationFailed(
                        f"QEMU could not bind the SSH forward on 127.0.0.1 (3 ports tried): "
                        f"{self._qemu_log().strip()[-300:]}",
                        hint="another program keeps taking the ports; retry",
                    )
            assert proc is not None
            LabState(
                name=self.name,
                image=str(image.path),
                image_key=image.key,
                pid=proc.pid,
                pid_start=_proc_start(proc.pid) or "",
                ssh_port=port,
                options=asdict(options),
                booted_at=time.time(),
                snapshots=previous.snapshots if previous and not fresh else [],
                console_from=console_from,
                base_digest=base_digest(image),
            ).write(p.state)
            if snapshot is None:
                self._wait_marker(deadline, report)
            report("ssh", "waiting for sshd")
            self.ssh.wait(max(5.0, deadline - time.monotonic()))
        except BaseException:
            if proc is not None:
                self._end(proc)
            raise
        elapsed = time.monotonic() - start
        st = self.state
        if st is not None:
            st.ready_after = round(elapsed, 3)
            st.write(p.state)
        report("ready", f"lab {self.name} ready in {elapsed:.1f} s (ssh port {port})")
        return elapsed

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        """Make sure a QEMU this object started is gone (boot failed or was interrupted)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._cleanup()

    def resume(
        self,
        image: LabImage,
        tag: str,
        *,
        timeout: float = 120.0,
        progress: Progress | None = None,
    ) -> float:
        """Start a stopped (or dead) lab from snapshot ``tag``, with the options it had."""
        _check_tag(tag)
        if tag not in self.snapshots():
            raise UsageError(
                f"lab {self.name!r} has no snapshot {tag!r}",
                hint=f"its snapshots: {', '.join(self.snapshots()) or 'none'}",
            )
        previous = self.clean_stale()
        return self.boot(
            image,
            self.options(),
            snapshot=tag,
            timeout=timeout,
            progress=progress,
            ssh_port=previous.ssh_port if previous is not None else None,
        )

    def _prepare_overlay(
        self,
        image: LabImage,
        previous: LabState | None,
        *,
        fresh: bool,
        snapshot: str | None,
        report: Progress = _noop,
    ) -> None:
        stale = previous is None or previous.image_key != image.key
        base = base_digest(image)
        if previous is not None and previous.base_digest and base != previous.base_digest:
            # Same key, another base: the cache entry was rebuilt (it was corrupt). An
            # overlay only makes sense on the very base it was written over.
            stale = True
            report(
                "overlay",
                "the image was rebuilt since this lab last ran: its disk starts again from it",
            )
        if self.paths.overlay.exists() and not fresh and not stale:
            return
        if snapshot is not None:
            raise UsageError(
                f"lab {self.name!r} has no snapshot {snapshot!r} for this image",
                hint="boot without a snapshot (its overlay is new or was reset)",
            )
        self.paths.overlay.unlink(missing_ok=True)
        run_tool(
            [
                "qemu-img", "create", "-q", "-f", "qcow2",
                "-b", image.root_disk, "-F", "qcow2", self.paths.overlay,
            ],
            what="qemu-img create (lab overlay)",
        )  # fmt: skip

    def _qemu_log(self) -> str:
        try:
            return self.paths.qemu_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_marker(self, deadline: float, report: Progress) -> None:
        log = ConsoleLog(self.paths.serial_log)
        seen_dom0 = False
        heard = time.monotonic()
        while True:
            new = log.poll()
            if new:
                heard = time.monotonic()
            first_new = len(log.lines) - len(new)
            fault = find_fault(log.lines, first_new)
            if fault is not None:
                raise self.crash_error(fault)
            for line in new:
                if line.startswith(scripts.READY_MARKER):
                    report("toolstack", line)
                    return
                if not seen_dom0 and not line.startswith("(XEN)") and line.strip():
                    seen_dom0 = True
                    report("dom0", "dom0 kernel is up")
            if not self.is_running():
                qemu = self._qemu_log().splitlines()[-5:]
                raise OperationFailed(
                    f"QEMU for lab {self.name} exited before the toolstack was ready:\n"
                    + "\n".join([*log.tail(25), *qemu]),
                    hint=f"full console: {self.paths.serial_log}; QEMU's own log: "
                    f"{self.paths.qemu_log}",
                )
            if time.monotonic() - heard > self.stall_after and time.monotonic() < deadline:
                tail = log.tail(25)
                phase = "the dom0 kernel started" if seen_dom0 else "dom0 started"
                last = (tail or ["nothing"])[-1].strip()
                raise BootStalled(
                    f"lab {self.name} printed nothing for {self.stall_after:.0f} s before its "
                    f"toolstack was ready; last console lines:\n"
                    + "\n".join([*tail, "Xen's dump of dom0:", *self._xen_dump(log)]),
                    where=f"{'after' if seen_dom0 else 'before'} {phase}; last line: {last}",
                    hint=f"full console: {self.paths.serial_log}",
                )
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"lab {self.name} was not ready in time; last console lines:\n"
                    + "\n".join(log.tail(25)),
                    hint="TCG is slow on a loaded machine; raise the timeout",
                )
            time.sleep(0.05)

    def _xen_dump(self, log: ConsoleLog) -> list[str]:
        """Xen's view of a host that went quiet: dom0's vCPUs ('0') and the domains
        ('q'), asked for over the serial line (CTRL-A three times hands its input to
        Xen, three more give it back). Each dump is read until the line goes quiet."""
        lines: list[str] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.paths.console_socket))
                sock.sendall(b"\x01\x01\x01")
                sock.setblocking(False)
                for key in b"0q":
                    sock.sendall(bytes([key]))
                    lines += _until_quiet(log, sock, quiet=1.5, limit=20.0)
                sock.sendall(b"\x01\x01\x01")
        except OSError as e:
            lines.append(f"(no dump: the console socket refused: {e})")
        return lines[-200:]

    # -- use ---------------------------------------------------------------

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float = 60.0,
        input: str | None = None,
        check: bool = False,
        via: Via = "agent",
    ) -> RunResult:
        """Run a command in dom0 (a shell string, or an argv list); see ``SshSession.run``."""
        return self.ssh.run(command, timeout=timeout, input=input, check=check, via=via)

    @contextlib.contextmanager
    def qmp(self) -> Iterator[QmpClient]:
        """A QMP connection to this lab's QEMU (one at a time)."""
        self._require_running()
        client = QmpClient(self.paths.qmp).connect()
        try:
            yield client
        finally:
            client.close()

    def savevm(self, tag: str) -> float:
        """Save the whole running host (RAM, devices, disk) under ``tag``; seconds taken."""
        _check_tag(tag)
        start = time.monotonic()
        with self.qmp() as q:
            out = q.hmp(f"savevm {tag}")
        if out.strip():
            raise OperationFailed(f"savevm {tag} failed: {out.strip()}")
        saved = self.paths.snapshot_console(tag)
        saved.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(self.paths.serial_log, saved)
        st = self.state
        if st is not None and tag not in st.snapshots:
            st.snapshots.append(tag)
            st.write(self.paths.state)
        return time.monotonic() - start

    def loadvm(self, tag: str, *, timeout: float = 60.0) -> float:
        """Return the running host to snapshot ``tag``; seconds until SSH works again.

        The snapshot is loaded by a new QEMU (``-loadvm``), not by ``loadvm`` in the
        running one. Within one process TCG never lets a guest's TSC go back, so after
        an in-place load the TSC stays in the present while the HPET and the local APIC
        timers return to the snapshot; Xen's TSC-based clock then runs ahead of its
        platform timer and Xen slows it down for the HPET to catch up, so that a
        ``sleep 1`` in dom0 can take 20 s. A new process starts the TSC from the
        snapshot along with everything else, and costs a fraction of a second.
        """
        _check_tag(tag)
        st = self.require_running()
        if tag not in self.snapshots():
            raise UsageError(
                f"lab {self.name!r} has no snapshot {tag!r}",
                hint=f"its snapshots: {', '.join(self.snapshots()) or 'none'}",
            )
        start = time.monotonic()
        image = LabImage.load(Path(st.image))
        options = self.options()
        self.ssh.stop_master()
        with contextlib.suppress(OperationFailed, OSError), self.qmp() as q:
            q.execute("quit")
        if not self._wait_exit(st.pid, 10.0):
            self.kill()
        self._cleanup()
        try:
            self.boot(image, options, snapshot=tag, timeout=timeout, ssh_port=st.ssh_port)
        except OperationFailed as e:
            tail = [line for line in self.console_lines() if line.strip()][-8:]
            raise OperationFailed(
                f"lab {self.name} could not return to {tag}: {e.message}; its console: "
                + (" / ".join(tail) if tail else "nothing"),
                hint=e.hint or f"boot it afresh: xenkit lab up {self.name} --fresh",
            ) from e
        return time.monotonic() - start

    def delvm(self, tag: str) -> None:
        _check_tag(tag)
        if self.is_running():
            with self.qmp() as q:
                out = q.hmp(f"delvm {tag}")
            if out.strip():
                raise OperationFailed(f"delvm {tag} failed: {out.strip()}")
        elif tag in self.snapshots():
            run_tool(["qemu-img", "snapshot", "-d", tag, self.paths.overlay], what="qemu-img")
        else:
            raise UsageError(f"lab {self.name!r} has no snapshot {tag!r}")
        self.paths.snapshot_console(tag).unlink(missing_ok=True)
        st = self.state
        if st is not None and tag in st.snapshots:
            st.snapshots.remove(tag)
            st.write(self.paths.state)

    def snapshot_info(self) -> list[SnapshotInfo]:
        """Snapshots in the overlay (asks QEMU when running, else qemu-img)."""
        if self.is_running():
            with self.qmp() as q:
                text = q.hmp("info snapshots")
        elif self.paths.overlay.exists():
            text = run_tool(["qemu-img", "snapshot", "-l", "-U", self.paths.overlay])
        else:
            return []
        found = []
        for line in text.splitlines():
            m = _SNAPSHOT_LINE.match(line.strip())
            if m:
                found.append(SnapshotInfo(m["tag"], m["size"], m["date"], m["clock"]))
        return found

    def snapshots(self) -> list[str]:
        """Snapshot tags in the overlay."""
        return [s.tag for s in self.snapshot_info()]

    # -- stop --------------------------------------------------------------

    def stop(self, *, timeout: float = 30.0) -> None:
        """Power dom0 off cleanly (which powers off the emulated host); kill if it hangs."""
        st = self.state
        if st is None or not self.is_running():
            self._cleanup()
            return
        with contextlib.suppress(OperationFailed, UsageError):
            ssh = self.ssh
            if ssh.master_alive():
                ssh.run("sync; busybox poweroff", timeout=5)
        if not self._wait_exit(st.pid, timeout):
            with contextlib.suppress(OperationFailed, OSError), self.qmp() as q:
                q.execute("quit")
            if not self._wait_exit(st.pid, 5):
                self.kill()
        self._cleanup()

    def kill(self) -> None:
        """End QEMU now (SIGTERM, then SIGKILL); the overlay survives."""
        st = self.state
        if st is not None and _proc_start(st.pid) == st.pid_start:
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(st.pid, sig)
                if self._wait_exit(st.pid, grace):
                    break
        self._cleanup()

    def destroy(self) -> None:
        """Stop the lab and delete its directory (overlay and snapshots included)."""
        self.kill()
        shutil.rmtree(self.paths.root, ignore_errors=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif _proc_start(pid) is None:
                return True
            time.sleep(0.05)
        return False

    def _cleanup(self) -> None:
        with contextlib.suppress(OperationFailed, UsageError, OSError):
            if self.paths.ssh_control.exists():
                st = self.state
                if st is not None:
                    SshSession(self._endpoint(st.ssh_port)).stop_master()
        if self._session is not None:
            with contextlib.suppress(OSError):
                self._session.stop_master()
            self._session = None
        for sock in self.paths.sockets():
            sock.unlink(missing_ok=True)
        st = self.state
        if st is not None and st.pid:
            st.pid = 0
            st.write(self.paths.state)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None


def _check_tag(tag: str) -> None:
    if not tag or not all(c.isalnum() or c in "-_." for c in tag) or len(tag) > 64:
        raise UsageError(f"invalid snapshot tag {tag!r}", hint="use letters, digits, '-', '_', '.'")


def list_labs(state_dir: Path | None = None) -> list[Machine]:
    """Every lab that has a state directory, running or not."""
    root = state_dir or state_root()
    if not root.exists():
        return []
    return [Machine(p.parent.name, state_dir=root) for p in sorted(root.glob("*/state.json"))]
