"""Joined labs: the dom0s and guests of several labs on one private Ethernet segment.

Every lab's QEMU has a second NIC (``join0``) whose netdev is a QEMU
``stream`` *server* on a unix socket in the lab's directory (``join.sock``);
nothing is connected to it until the lab joins a network. A network is one
small switch process (``python -m xenkit.lab.network``) that connects, as the
client, to the socket of every running member and forwards Ethernet frames
between them, learning addresses the way a switch does. It finds its members
by reading the labs' ``state.json`` files, reconnects to a member whose QEMU
was restarted, and exits by itself a few seconds after the last member is
gone. No traffic ever leaves unix sockets on this machine.

Inside each dom0 the join NIC is a port of the guest bridge ``xenbr0`` (the
init finds it by the MAC address on its command line), so the dom0s and the
guests of all members share one L2 segment on 192.0.2.0/24. A member's dom0
address is ``192.0.2.<index>``: the lowest index no running member uses, 1 for
a lab booted on its own. The members trust one network key for root SSH, so
``ssh root@<other>`` (and later ``xl migrate``) works between their dom0s.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import selectors
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xenkit.core.errors import OperationFailed, UsageError

#: The documentation range the lab's guest bridges use (RFC 5737).
SUBNET_PREFIX = "192.0.2."
PREFIX_LEN = 24
#: Member indexes, hence dom0 addresses 192.0.2.1-63; guests should use .100 and up.
MAX_INDEX = 63
#: Frames queued for one member beyond this are dropped, as a real switch would.
_MAX_BACKLOG = 4 << 20
_HEADER = struct.Struct(">I")
_MAX_FRAME = 65536 + 64


def dom0_address(index: int) -> str:
    """The dom0 address (no prefix length) of the member with ``index``."""
    _check_index(index)
    return f"{SUBNET_PREFIX}{index}"


def bridge_cidr(index: int) -> str:
    return f"{dom0_address(index)}/{PREFIX_LEN}"


def join_mac(index: int) -> str:
    """The join NIC's MAC: unique within a network because the index is."""
    _check_index(index)
    return f"52:54:00:c0:02:{index:02x}"


def _check_index(index: int) -> None:
    if not 1 <= index <= MAX_INDEX:
        raise UsageError(
            f"join index {index} is out of range", hint=f"a network has at most {MAX_INDEX} labs"
        )


def network_dir(state_dir: Path, network: str) -> Path:
    """Lab names never start with '.', so this cannot collide with a lab's directory."""
    return state_dir / ".networks" / network


@dataclass(frozen=True)
class Member:
    """A running lab on a network, as its state file records it."""

    name: str
    index: int
    socket: Path
    pid: int
    ssh_port: int
    image: str


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else fields[19]


def read_members(state_dir: Path, network: str | None = None) -> list[Member]:
    """Running labs under ``state_dir`` (on ``network``, or on any network if None).

    Read straight from the JSON so that the switch process stays independent of
    ``Machine``; a lab counts while its QEMU (pid + start time) is alive.
    """
    found: list[Member] = []
    for path in sorted(state_dir.glob("*/state.json")):
        try:
            st = json.loads(path.read_text())
            options = st.get("options", {})
            net = options.get("network")
            pid = int(st.get("pid", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        if network is not None and net != network:
            continue
        if network is None and not net:
            continue
        if pid <= 0 or _proc_start(pid) != st.get("pid_start"):
            continue
        found.append(
            Member(
                name=str(st["name"]),
                index=int(options.get("join_index", 1)),
                socket=path.parent / "join.sock",
                pid=pid,
                ssh_port=int(st.get("ssh_port", 0)),
                image=str(st.get("image", "")),
            )
        )
    return found


def free_index(members: list[Member]) -> int:
    used = {m.index for m in members}
    for index in range(1, MAX_INDEX + 1):
        if index not in used:
            return index
    raise OperationFailed(
        f"the network already has {MAX_INDEX} labs", hint="take a lab down before adding one"
    )


# -- the switch ---------------------------------------------------------------


def frames(buffer: bytearray) -> Iterator[bytes]:
    """Complete frames from QEMU's stream framing (a 4-byte big-endian length, the frame);
    consumes them from ``buffer`` and leaves a partial one in it."""
    pos = 0
    while len(buffer) - pos >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, pos)
        if size > _MAX_FRAME:
            raise ValueError(f"frame of {size} bytes: not QEMU stream framing")
        if len(buffer) - pos - _HEADER.size < size:
            break
        start = pos + _HEADER.size
        yield bytes(buffer[start : start + size])
        pos = start + size
    del buffer[:pos]


@dataclass
class _Port:
    name: str
    pid: int
    sock: socket.socket
    rbuf: bytearray = field(default_factory=bytearray)
    wbuf: bytearray = field(default_factory=bytearray)
    dropped: int = 0


class Switch:
    """A learning Ethernet switch between members' stream sockets (single-threaded)."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.ports: dict[str, _Port] = {}
        self.macs: dict[bytes, str] = {}

    def add(self, name: str, pid: int, path: Path) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(1.0)
            sock.connect(str(path))
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        port = _Port(name, pid, sock)
        self.ports[name] = port
        self.sel.register(sock, selectors.EVENT_READ, port)
        _log(f"connected {name} (pid {pid})")
        return True

    def remove(self, name: str) -> None:
        port = self.ports.pop(name, None)
        if port is None:
            return
        self.sel.unregister(port.sock)
        port.sock.close()
        for mac in [m for m, owner in self.macs.items() if owner == name]:
            del self.macs[mac]
        _log(f"disconnected {name} ({port.dropped} frames dropped)")

    def forward(self, source: _Port, frame: bytes) -> None:
        if len(frame) < 14:
            return
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1:
            self.macs[src] = source.name
        owner = None if dst[0] & 1 else self.macs.get(dst)
        targets = [owner] if owner is not None else list(self.ports)
        data = _HEADER.pack(len(frame)) + frame
        for name in targets:
            port = self.ports.get(name)
            if port is None or port is source:
                continue
            if len(port.wbuf) > _MAX_BACKLOG:
                port.dropped += 1
                continue
            port.wbuf += data
            self._flush(port)

    def _flush(self, port: _Port) -> None:
        try:
            sent = port.sock.send(port.wbuf)
        except BlockingIOError:
            sent = 0
        except OSError:
            port.wbuf.clear()
            return
        del port.wbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if port.wbuf else 0)
        self.sel.modify(port.sock, events, port)

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            port: _Port = key.data
            if port.name not in self.ports:
                continue
            if mask & selectors.EVENT_WRITE:
                self._flush(port)
            if mask & selectors.EVENT_READ:
                try:
                    data = port.sock.recv(262144)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.remove(port.name)
                    continue
                port.rbuf += data
                try:
                    for frame in frames(port.rbuf):
                        self.forward(port, frame)
                except ValueError as exc:
                    _log(f"{port.name}: {exc}")
                    self.remove(port.name)


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def serve(state_dir: Path, network: str, *, idle_exit: float = 5.0) -> None:
    """The switch's main loop: follow membership, forward frames, exit when alone."""
    switch = Switch()
    last_scan = 0.0
    last_member = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last_scan >= 0.25:
            last_scan = now
            wanted = {m.name: m for m in read_members(state_dir, network)}
            for name, port in list(switch.ports.items()):
                if name not in wanted or wanted[name].pid != port.pid:
                    switch.remove(name)
            for name, member in wanted.items():
                if name not in switch.ports:
                    switch.add(name, member.pid, member.socket)
            if wanted:
                last_member = now
            elif now - last_member > idle_exit:
                _log("no members left; exiting")
                return
        switch.poll(0.25)


# -- control side ---------------------------------------------------------------


def _lock_path(state_dir: Path, network: str) -> Path:
    return network_dir(state_dir, network) / "switch.lock"


def switch_running(state_dir: Path, network: str) -> bool:
    """True while a switch holds the network's lock."""
    path = _lock_path(state_dir, network)
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def switch_pid(state_dir: Path, network: str) -> int | None:
    try:
        pid = int((network_dir(state_dir, network) / "switch.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if switch_running(state_dir, network) else None


def ensure_switch(state_dir: Path, network: str, *, timeout: float = 10.0) -> int:
    """Start the network's switch unless it runs; returns its pid."""
    pid = switch_pid(state_dir, network)
    if pid is not None:
        return pid
    d = network_dir(state_dir, network)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Not ``-m``: the package's __init__ already imports this module, and runpy warns.
    argv = [
        sys.executable, "-c", _SWITCH_MAIN,
        "--state-dir", str(state_dir), "--network", network,
    ]  # fmt: skip
    with (d / "switch.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = switch_pid(state_dir, network)
        if pid is not None:
            return pid
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    tail = (d / "switch.log").read_text(errors="replace").strip().splitlines()[-5:]
    raise OperationFailed(
        f"the switch of network {network!r} did not start: {' / '.join(tail)}",
        hint=f"its log: {d / 'switch.log'}",
    )


_SWITCH_MAIN = "import sys; from xenkit.lab.network import main; sys.exit(main(sys.argv[1:]))"


def stop_switch(state_dir: Path, network: str) -> None:
    pid = switch_pid(state_dir, network)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


def trust_script(private_key: str, public_key: str, peers: Mapping[str, tuple[str, str]]) -> str:
    """The dom0 shell script that makes a member trust the network's members.

    It installs the network's key pair as root's identity and authorises it,
    and records every member's name, address and SSH host key (``peers`` maps a
    lab name to (dom0 address, host public key)) in known_hosts and /etc/hosts,
    so ``ssh root@<name>`` and ``ssh root@192.0.2.N`` work without a prompt.
    """
    q = shlex.quote
    pub = public_key.strip()
    known = "".join(f"{addr},{name} {key.strip()}\n" for name, (addr, key) in sorted(peers.items()))
    hosts = "".join(
        f"{addr}\t{name}\t# xenkit-network\n" for name, (addr, _) in sorted(peers.items())
    )
    lines = [
        "set -e",
        "umask 077",
        "mkdir -p /root/.ssh",
        f"printf '%s\\n' {q(private_key.strip())} > /root/.ssh/id_ed25519",
        f"printf '%s\\n' {q(pub)} > /root/.ssh/id_ed25519.pub",
        f"printf %s {q(known)} > /root/.ssh/known_hosts",
        "touch /root/.ssh/authorized_keys",
        f"grep -qxF {q(pub)} /root/.ssh/authorized_keys || "
        f"printf '%s\\n' {q(pub)} >> /root/.ssh/authorized_keys",
        "umask 022",
        "sed -i '/# xenkit-network$/d' /etc/hosts",
        f"printf %s {q(hosts)} >> /etc/hosts",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xenkit.lab.network")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--network", required=True)
    args = parser.parse_args(argv)
    d = network_dir(args.state_dir, args.network)
    d.mkdir(parents=True, exist_ok=True)
    with (d / "switch.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("another switch serves this network; exiting")
            return 0
        (d / "switch.pid").write_text(f"{os.getpid()}\n")
        _log(f"switch for network {args.network} started (pid {os.getpid()})")
        try:
            serve(args.state_dir, args.network)
        finally:
            (d / "switch.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
