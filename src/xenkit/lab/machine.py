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
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.lab import scripts
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

#: The recipe's CPU: ``+npt`` gives Xen HAP, without which PVH/HVM guests cannot start
#: (Debian's Xen has no shadow paging); ``-cpu max`` kills dom0 in early PV setup.
CPU_MODEL = "qemu64,+svm,+npt"
#: dom0's address on QEMU's user network; hostfwd's default target is .15.
USER_NET = "198.51.100.0/24"
DOM0_USER_IP = "198.51.100.15/24"


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

    def __post_init__(self) -> None:
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
            "loglvl=all",
            "guest_loglvl=all",
            *self.xen_args,
        ]
        return " ".join(words)

    def dom0_cmdline(self, ssh_key_blob: str) -> str:
        words = [
            "console=hvc0",
            "earlyprintk=xen",
            "rdinit=/init",
            "quiet",
            f"xenkit.xenstored={self.xenstored}",
            f"xenkit.ip={DOM0_USER_IP}",
            f"xenkit.sshkey={ssh_key_blob}",
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
    modules = f"{image.kernel} {options.dom0_cmdline(ssh_key_blob)},{image.initrd}"
    for path in (image.xen, image.kernel, image.initrd, paths.overlay):
        if "," in str(path):
            raise UsageError(
                f"path {path} has a comma",
                hint="QEMU option syntax cannot carry it; move the cache or state directory",
            )
    netdev = f"user,id=net0,net={USER_NET},restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
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
        f"logfile={paths.serial_log},logappend=off",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-netdev", netdev,
        "-device", "virtio-net-pci,netdev=net0",
        "-drive", f"file={paths.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-kernel", str(image.xen),
        "-append", options.xen_cmdline(),
        "-initrd", modules,
    ]  # fmt: skip
    if loadvm:
        argv += ["-loadvm", loadvm]
    return argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


class Machine:
    """One named lab. Cheap to create: it only reads state when asked."""

    def __init__(self, name: str = "default", *, state_dir: Path | None = None) -> None:
        self.name = check_lab_name(name)
        self.paths = LabPaths((state_dir or state_root()) / name)
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: SshSession | None = None

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> LabState | None:
        return LabState.read(self.paths.state)

    def is_running(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            return False
        st = self.state
        return st is not None and st.pid > 0 and _proc_start(st.pid) == st.pid_start

    def _require_running(self) -> LabState:
        st = self.state
        if st is None or not self.is_running():
            raise UsageError(
                f"lab {self.name!r} is not running",
                hint="boot it first (Machine.boot)",
            )
        return st

    @property
    def ssh(self) -> SshSession:
        """The lab's SSH session; kept, so its agent connection is reused."""
        st = self._require_running()
        if self._session is not None and self._session.endpoint.port == st.ssh_port:
            return self._session
        self._session = SshSession(
            SshEndpoint(
                port=st.ssh_port,
                identity=self.paths.identity,
                known_hosts=self.paths.known_hosts,
                host_alias=f"xenkit-lab-{self.name}",
                control_path=self.paths.ssh_control,
                log=self.paths.ssh_log,
                agent_socket=self.paths.agent_socket,
            )
        )
        return self._session

    def console(self) -> str:
        """Everything captured on the serial console since the last boot."""
        try:
            return self.paths.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def fault(self) -> ConsoleFault | None:
        """The first Xen panic, dom0 oops or bring-up failure on the console, if any.

        For callers that provoke crashes on purpose (the fuzzer) and need to know
        whether the host survived, not just whether QEMU still runs.
        """
        return find_fault(self.console().splitlines())

    def rss_bytes(self) -> int:
        """Resident memory of this lab's QEMU."""
        st = self._require_running()
        for line in Path(f"/proc/{st.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    # -- boot --------------------------------------------------------------

    def boot(
        self,
        image: LabImage,
        options: BootOptions | None = None,
        *,
        snapshot: str | None = None,
        fresh: bool = False,
        timeout: float = 300.0,
        progress: Progress | None = None,
    ) -> float:
        """Start QEMU and wait until the toolstack is up and SSH answers.

        With ``snapshot`` QEMU resumes that saved host (``-loadvm``) instead of
        booting. The overlay is kept across boots (with its snapshots) unless
        ``fresh`` or the image changed. Returns the seconds until ready.
        """
        options = options or BootOptions()
        report = progress or _noop
        if self.is_running():
            raise UsageError(f"lab {self.name!r} is already running", hint="stop it first")
        start = time.monotonic()
        p = self.paths
        p.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sock in (p.qmp, p.console_socket, p.ssh_control, p.agent_socket):
            check_socket_path(sock)
        previous = self.state
        self._prepare_overlay(image, previous, fresh=fresh or previous is None, snapshot=snapshot)
        make_identity(p.identity)
        p.known_hosts.write_text(f"xenkit-lab-{self.name} {image.host_key}\n")
        p.ssh_log.write_text("")
        for stale in (p.qmp, p.console_socket, p.ssh_control, p.agent_socket, p.serial_log):
            stale.unlink(missing_ok=True)
        report("boot", f"starting QEMU for lab {self.name}")
        blob = public_key_blob(p.identity)
        for attempt in range(3):
            port = free_port()
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
            time.sleep(0.05)
            if proc.poll() is None or "host forwarding" not in self._qemu_log() or attempt == 2:
                break
        self._proc = proc
        pid_start = _proc_start(proc.pid) or ""
        LabState(
            name=self.name,
            image=str(image.path),
            image_key=image.key,
            pid=proc.pid,
            pid_start=pid_start,
            ssh_port=port,
            options=asdict(options),
            booted_at=time.time(),
            snapshots=previous.snapshots if previous and not fresh else [],
        ).write(p.state)
        try:
            if snapshot is None:
                self._wait_marker(start + timeout, report)
            report("ssh", "waiting for sshd")
            self.ssh.wait(max(5.0, start + timeout - time.monotonic()))
        except BaseException:
            self.kill()
            raise
        elapsed = time.monotonic() - start
        st = self.state
        if st is not None:
            st.ready_after = round(elapsed, 3)
            st.write(p.state)
        report("ready", f"lab {self.name} ready in {elapsed:.1f} s (ssh port {port})")
        return elapsed

    def _prepare_overlay(
        self, image: LabImage, previous: LabState | None, *, fresh: bool, snapshot: str | None
    ) -> None:
        stale = previous is None or previous.image_key != image.key
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
        while True:
            new = log.poll()
            first_new = len(log.lines) - len(new)
            fault = find_fault(log.lines, first_new)
            if fault is not None:
                raise OperationFailed(
                    f"lab {self.name} crashed while booting: {fault.describe()}",
                    hint=f"full console: {self.paths.serial_log}",
                )
            for line in new:
                if line.startswith(scripts.READY_MARKER):
                    report("toolstack", line)
                    return
                if not seen_dom0 and not line.startswith("(XEN)") and line.strip():
                    seen_dom0 = True
                    report("dom0", "dom0 kernel is up")
            if not self.is_running():
                raise OperationFailed(
                    f"QEMU for lab {self.name} exited before the toolstack was ready:\n"
                    + "\n".join([*log.tail(25), *self._qemu_log().splitlines()[-5:]]),
                    hint=f"full console: {self.paths.serial_log}",
                )
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"lab {self.name} was not ready in time; last console lines:\n"
                    + "\n".join(log.tail(25)),
                    hint="TCG is slow on a loaded machine; raise the timeout",
                )
            time.sleep(0.05)

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
        st = self.state
        if st is not None and tag not in st.snapshots:
            st.snapshots.append(tag)
            st.write(self.paths.state)
        return time.monotonic() - start

    def loadvm(self, tag: str, *, timeout: float = 60.0) -> float:
        """Return the running host to snapshot ``tag``; seconds until SSH works again."""
        _check_tag(tag)
        start = time.monotonic()
        ssh = self.ssh
        # The master's TCP state belongs to the present; the restored guest has another.
        ssh.stop_master()
        with self.qmp() as q:
            out = q.hmp(f"loadvm {tag}")
        if out.strip():
            raise OperationFailed(
                f"loadvm {tag} failed: {out.strip()}",
                hint=f"saved snapshots: {', '.join(self.snapshots()) or 'none'}",
            )
        ssh.wait(timeout)
        return time.monotonic() - start

    def delvm(self, tag: str) -> None:
        _check_tag(tag)
        with self.qmp() as q:
            out = q.hmp(f"delvm {tag}")
        if out.strip():
            raise OperationFailed(f"delvm {tag} failed: {out.strip()}")
        st = self.state
        if st is not None and tag in st.snapshots:
            st.snapshots.remove(tag)
            st.write(self.paths.state)

    def snapshots(self) -> list[str]:
        """Snapshot tags in the overlay (asks QEMU when running, else qemu-img)."""
        if self.is_running():
            with self.qmp() as q:
                text = q.hmp("info snapshots")
        elif self.paths.overlay.exists():
            text = run_tool(["qemu-img", "snapshot", "-l", "-U", self.paths.overlay])
        else:
            return []
        tags: list[str] = []
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and (words[0].isdigit() or words[0] == "--"):
                tags.append(words[1])
        return tags

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
                    SshSession(
                        SshEndpoint(
                            st.ssh_port,
                            self.paths.identity,
                            self.paths.known_hosts,
                            f"xenkit-lab-{self.name}",
                            self.paths.ssh_control,
                            self.paths.ssh_log,
                            self.paths.agent_socket,
                        )
                    ).stop_master()
        p = self.paths
        for sock in (p.qmp, p.console_socket, p.ssh_control, p.agent_socket):
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
    if not tag or not all(c.isalnum() or c in "-_." for c in tag):
        raise UsageError(f"invalid snapshot tag {tag!r}", hint="use letters, digits, '-', '_', '.'")


def list_labs(state_dir: Path | None = None) -> list[Machine]:
    """Every lab that has a state directory, running or not."""
    root = state_dir or state_root()
    if not root.exists():
        return []
    return [Machine(p.parent.name, state_dir=root) for p in sorted(root.glob("*/state.json"))]
