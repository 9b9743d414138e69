"""Joined labs: two real labs on one private segment, and the switch between them.

``xenkit lab up jb --join ja`` puts jb on ja's network: their dom0s are
192.0.2.1 and .2 on xenbr0, reach each other over a unix-socket switch, and
trust each other for root SSH (what ``xl migrate`` needs). The switch itself
is also tested without a lab, on plain unix sockets.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xenkit.cli import lab_cmds
from xenkit.cli.main import main
from xenkit.config import parse_config
from xenkit.core.errors import OperationFailed
from xenkit.host.guestexec import guest_exec
from xenkit.host.host import Host
from xenkit.lab import LabImage, guest_config, list_labs, network

A, B = "ja", "jb"


def cli_json(*args: str) -> tuple[int, Any]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--json", *args])
    try:
        return rc, json.loads(out.getvalue())
    except ValueError as exc:
        raise AssertionError(f"rc {rc}: {out.getvalue()!r} {err.getvalue()!r}") from exc


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory, lab_image: LabImage) -> Iterator[Path]:
    """Labs ja and jb, jb joined to ja; yields the state dir."""
    home = tmp_path_factory.mktemp("xdg")
    labs = home / "xenkit" / "labs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(home))
        try:
            rc, data = cli_json("lab", "up", A)
            assert rc == 0, json.dumps(data)
            rc, data = cli_json("lab", "up", B, "--join", A)
            assert rc == 0, json.dumps(data)
            assert data["network"]["name"] == A
            assert data["network"]["address"] == "192.0.2.2"
            assert data["network"]["reachable"] == {A: True}
            yield labs
        finally:
            for m in list_labs(labs):
                m.destroy()
            lab_cmds._MACHINES.clear()


def run_in(lab: str, command: str) -> dict[str, Any]:
    rc, data = cli_json("lab", "exec", lab, "--", command)
    assert rc == data.get("returncode", rc), data
    return dict(data)


@pytest.mark.lab
def test_the_dom0s_ping_each_other(joined: Path) -> None:
    r = run_in(A, "busybox ping -c 3 -W 3 192.0.2.2")
    assert r["returncode"] == 0, r
    assert "3 packets received" in r["stdout"]
    r = run_in(B, "busybox ping -c 3 -W 3 192.0.2.1")
    assert r["returncode"] == 0, r
    r = run_in(A, "ip -o addr show xenbr0; bridge link")
    assert "inet 192.0.2.1/24" in r["stdout"] and "master xenbr0" in r["stdout"]


@pytest.mark.lab
def test_dom0_sshes_to_the_other_as_root(joined: Path) -> None:
    r = run_in(A, "ssh -o BatchMode=yes root@192.0.2.2 true")
    assert r["returncode"] == 0, r
    r = run_in(A, f"ssh -o BatchMode=yes root@{B} hostname")
    assert (r["returncode"], r["stdout"]) == (0, f"{B}\n"), r
    r = run_in(B, f"ssh -o BatchMode=yes root@{A} xl info -n | grep -c xen_version")
    assert (r["returncode"], r["stdout"]) == (0, "1\n"), r


@pytest.mark.lab
def test_list_shows_the_network(joined: Path) -> None:
    _, data = cli_json("lab", "list")
    rows = {r["name"]: r for r in data["labs"]}
    assert (rows[A]["network"], rows[A]["address"]) == (A, "192.0.2.1")
    assert (rows[B]["network"], rows[B]["address"]) == (A, "192.0.2.2")
    assert network.switch_pid(joined, A) is not None


@pytest.mark.lab
def test_nothing_leaves_unix_sockets_and_localhost(joined: Path) -> None:
    """QEMU's only netdevs: user networking forwarding 127.0.0.1 (restricted), and the
    join NIC's stream server on a unix socket in the lab's own directory."""
    for name in (A, B):
        m = lab_cmds.machine(name)
        st = m.state
        assert st is not None
        argv = Path(f"/proc/{st.pid}/cmdline").read_bytes().decode().split("\0")
        netdevs = [argv[i + 1] for i, word in enumerate(argv) if word in ("-netdev", "-nic")]
        assert len(netdevs) == 2, netdevs
        user, join = netdevs
        assert user.startswith("user,") and "restrict=on" in user
        assert f"hostfwd=tcp:127.0.0.1:{st.ssh_port}-:22" in user
        assert join == (f"stream,id=join0,server=on,addr.type=unix,addr.path={m.paths.join_socket}")


@pytest.mark.lab
def test_joining_a_lab_that_is_not_running(joined: Path) -> None:
    rc, data = cli_json("lab", "up", "jc", "--join", "nosuch")
    assert rc == 2 and "is not running" in data["error"]["message"]
    rc, data = cli_json("lab", "up", "jc", "--join", "jc")
    assert rc == 2 and "cannot join itself" in data["error"]["message"]
    assert not (joined / "jc").exists()


@pytest.mark.lab
def test_xl_migrate_moves_a_pvh_guest_to_the_other_host(joined: Path, lab_image: LabImage) -> None:
    """Live migration over the joined network (PVH: log-dirty needs HAP; Debian's Xen
    has no shadow paging for PV). The guest leaves ja and runs on jb."""
    ha, hb = Host.open(A, state_dir=joined), Host.open(B, state_dir=joined)
    cfg = parse_config(guest_config(lab_image.guest, "pvh", "mover", hold=True))

    def move() -> None:
        ha.xl.create(cfg)
        ha.xl.migrate("mover", B)
        assert "mover" not in {d.name for d in ha.xl.list()}
        (moved,) = [d for d in hb.xl.list() if d.name == "mover"]
        assert moved.domid > 0 and not moved.state.paused and moved.domain_type == "pvh", moved
        hb.xl.destroy("mover")

    rerun_if_a_guest_triple_faults([ha, hb], move, lambda: destroy_movers([ha, hb]))


WRITER = (
    "i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); printf '%s\\n' $i | "
    "dd of=/dev/xvda bs=512 seek=$((i % 64)) count=1 conv=sync,fsync 2>/dev/null "
    "&& echo $i > /tmp/last; done; echo $i > /tmp/stopped"
)
SLOTS = (
    "sync; echo 3 > /proc/sys/vm/drop_caches; for s in $(seq 0 63); do "
    "echo $s:$(dd if=/dev/xvda bs=512 skip=$s count=1 2>/dev/null | head -n1); done"
)


#: PVH guests run on the SVM that QEMU's TCG emulates for the lab's Xen, and now and
#: then their vCPU triple-faults there, at boot or during a live migration (Xen logs
#: "dNv0 Triple fault"), whatever xenkit does: in the lab, 3 of 13 moves of a writing
#: guest (docs/lab.md). A scenario that met one is run again, up to this many times
#: in all; any other failure fails at once.
PVH_ATTEMPTS = 4


def triple_faulted(host: Host, domid: int) -> bool:
    return f"d{domid}v0 Triple fault" in host.run("xl dmesg", check=True).stdout


def triple_faults(host: Host) -> int:
    return host.run("xl dmesg", check=True).stdout.count("Triple fault")


class GuestTripleFaulted(AssertionError):
    """xenkit itself named a triple fault of the guest as the cause of a failure."""


def rerun_if_a_guest_triple_faults(
    hosts: list[Host], scenario: Callable[[], None], cleanup: Callable[[], None]
) -> None:
    """Runs the scenario again (after cleanup) when it failed with a triple fault
    xenkit named, or when some host's Xen logged a new one meanwhile (counted in
    ``xl dmesg``, a ring that drops old lines: a count that did not grow is not proof
    that none came); any other failure is the test's."""
    for attempt in range(1, PVH_ATTEMPTS + 1):
        before = [triple_faults(h) for h in hosts]
        try:
            scenario()
            return
        except (OperationFailed, AssertionError) as failure:
            named = isinstance(failure, GuestTripleFaulted)
            if attempt == PVH_ATTEMPTS or (
                not named and [triple_faults(h) for h in hosts] == before
            ):
                raise
            cleanup()


def destroy_movers(hosts: list[Host], *images: str) -> None:
    for host in hosts:
        host.run("xl destroy mover 2>/dev/null; pkill -9 -x qemu-nbd; true", timeout=60)
        if images:
            host.run(["rm", "-f", *images], check=True)


def mover_with_a_local_disk(host: Host, image: LabImage, path: str, size: str = "64M") -> None:
    host.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)
    disk = f"format=qcow2,vdev=xvda,access=rw,backendtype=qdisk,target={path}"
    cfg = guest_config(image.guest, "pvh", "mover", agent=True) + f'disk = [ "{disk}" ]\n'
    for attempt in range(1, PVH_ATTEMPTS + 1):
        domid = host.xl.create(parse_config(cfg))
        try:
            guest_exec(host, domid, "true", wait=180).check()
            return
        except OperationFailed:
            if attempt == PVH_ATTEMPTS or not triple_faulted(host, domid):
                raise
            host.run("xl destroy mover 2>/dev/null; true")


def guest_crashed(data: dict[str, Any]) -> bool:
    return "Triple fault" in str(data.get("error", {}).get("hint", ""))


def in_mover(host: Host, command: str) -> str:
    return guest_exec(host, host.xl.domid("mover"), command, wait=30).check().text


def written(host: Host) -> int:
    """The writer's last count. Its ``echo > /tmp/last`` empties the file before it
    writes it, so an empty read is that moment, and is read again."""
    for _ in range(20):
        text = in_mover(host, "cat /tmp/last 2>/dev/null || echo 0").strip()
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("/tmp/last stayed empty: the writer in the guest stopped")


@pytest.fixture
def no_mover_left(joined: Path) -> Iterator[None]:
    """Whatever a migration test leaves (a failed one most of all) goes after it, so
    that the next test starts on clean hosts."""
    yield
    hosts = [Host.open(A, state_dir=joined), Host.open(B, state_dir=joined)]
    destroy_movers(hosts, "/root/mover.qcow2", "/root/taken.qcow2", "/root/cutmove.qcow2")


def state_of(host: Host) -> str:
    """What to look at when the mover stops answering: its console and Xen's log."""
    return host.run(
        "xl list; tail -n 20 /var/log/xen/console/guest-mover.log; xl dmesg | tail -n 15; "
        "tail -n 20 /var/log/xen/xl-mover.log",
        timeout=60,
    ).stdout


def until_written(host: Host, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while (n := written(host)) < at_least:
        assert time.monotonic() < deadline, f"the guest wrote only {n} sectors"
        time.sleep(1)
    return n


@pytest.mark.lab
@pytest.mark.usefixtures("no_mover_left")
def test_migrate_moves_a_guest_with_local_disks_and_loses_no_write(
    joined: Path, lab_image: LabImage
) -> None:
    """xenkit migrate: a PVH guest writes a counter to its local qcow2 disk without a
    pause, before, during and after the move; on the other host every sector holds the
    last value the guest wrote there."""
    ha, hb = Host.open(A, state_dir=joined), Host.open(B, state_dir=joined)
    rerun_if_a_guest_triple_faults(
        [ha, hb],
        lambda: move_a_writing_guest(ha, hb, lab_image),
        lambda: destroy_movers([ha, hb], "/root/mover.qcow2"),
    )


def move_a_writing_guest(ha: Host, hb: Host, lab_image: LabImage) -> None:
    mover_with_a_local_disk(ha, lab_image, "/root/mover.qcow2")
    in_mover(ha, f"setsid sh -c {shlex.quote(WRITER)} >/dev/null 2>&1 &")
    until_written(ha, 20)
    rc, data = cli_json("migrate", "--host", f"lab:{A}", "mover", B)
    if rc != 0 and guest_crashed(data):
        # The attempt is rerun; nothing of it may be left on the destination.
        assert not hb.run("ls /root/mover.qcow2").ok and not hb.run("pgrep -x qemu-nbd").ok
        raise GuestTripleFaulted(str(data))
    assert rc == 0, json.dumps(data)  # a str: pytest cuts a repr to 240 characters
    assert data["dest"] == B and data["left_here"] == ["/root/mover.qcow2"], data
    assert data["handover_seconds"] > 0
    assert "mover" not in {d.name for d in ha.xl.list()}
    (moved,) = [d for d in hb.xl.list() if d.name == "mover"]
    assert moved.domain_type == "pvh" and not moved.state.paused
    # The guest goes on writing on jb, to jb's copy of the disk.
    try:
        until_written(hb, written(hb) + 10)
    except OperationFailed as exc:
        raise AssertionError(f"the moved guest does not answer: {exc}\n{state_of(hb)}") from exc
    assert "/root/mover.qcow2" in hb.run("xl list -l mover", check=True).stdout
    in_mover(hb, "touch /tmp/stop; while [ ! -e /tmp/stopped ]; do sleep 0.1; done")
    last = int(in_mover(hb, "cat /tmp/stopped"))
    assert written(hb) == last, "the guest's last write failed"
    slots = dict(line.split(":", 1) for line in in_mover(hb, SLOTS).split())
    want = {str(s): str(max(i for i in range(1, last + 1) if i % 64 == s)) for s in range(64)}
    assert slots == want
    left = hb.run("pgrep -a qemu-nbd; ls /run | grep -c xenkit-nbd", timeout=30)
    assert left.stdout.strip() == "0", left.stdout
    hb.xl.destroy("mover")
    assert ha.run("qemu-img info -U /root/mover.qcow2").ok, "the source's image is kept"
    ha.run("rm -f /root/mover.qcow2", check=True)
    hb.run("rm -f /root/mover.qcow2", check=True)


@pytest.mark.lab
@pytest.mark.usefixtures("no_mover_left")
def test_migrate_refuses_to_overwrite_the_destination(joined: Path, lab_image: LabImage) -> None:
    ha, hb = Host.open(A, state_dir=joined), Host.open(B, state_dir=joined)
    hb.run("echo keep > /root/taken.qcow2", check=True)
    mover_with_a_local_disk(ha, lab_image, "/root/taken.qcow2")
    rc, data = cli_json("migrate", "--host", f"lab:{A}", "mover", B)
    assert rc == 2 and "already has /root/taken.qcow2" in data["error"]["message"], data
    assert hb.run("cat /root/taken.qcow2").stdout == "keep\n"
    assert not hb.run("pgrep qemu-nbd").ok
    assert in_mover(ha, "echo alive") == "alive\n"
    rc, data = cli_json("migrate", "--host", f"lab:{A}", "nosuch", B)
    assert rc == 2 and "no running domain 'nosuch'" in data["error"]["message"], data
    rc, data = cli_json("migrate", "--host", f"lab:{A}", "mover", "no-such-host")
    assert rc == 2 and "cannot resolve" in data["error"]["message"], data
    ha.xl.destroy("mover")


@pytest.mark.lab
@pytest.mark.usefixtures("no_mover_left")
def test_a_migration_cut_during_its_mirror_leaves_the_guest_here(
    joined: Path, lab_image: LabImage
) -> None:
    """The destination's NBD server dies while the disk is being mirrored: the move
    fails saying so, the guest runs on here on its own disk, and neither host keeps
    anything of the attempt (no image there, no job or NBD node here)."""
    ha, hb = Host.open(A, state_dir=joined), Host.open(B, state_dir=joined)
    rerun_if_a_guest_triple_faults(
        [ha],
        lambda: cut_a_mirror(ha, hb, lab_image),
        lambda: destroy_movers([ha], "/root/cutmove.qcow2"),
    )


def cut_a_mirror(ha: Host, hb: Host, lab_image: LabImage) -> None:
    mover_with_a_local_disk(ha, lab_image, "/root/cutmove.qcow2", size="512M")
    in_mover(ha, "dd if=/dev/urandom of=/dev/xvda bs=1M count=192 conv=fsync 2>/dev/null")
    in_mover(ha, "printf 'still here\\n' | dd of=/dev/xvda bs=512 count=1 conv=sync,fsync")
    outcome: dict[str, Any] = {}

    def move() -> None:
        outcome["rc"], outcome["data"] = cli_json("migrate", "--host", f"lab:{A}", "mover", B)

    mover = threading.Thread(target=move)
    mover.start()
    established = "ss -Htn state established '( sport = :10809 )' | wc -l"
    deadline = time.monotonic() + 300
    while hb.run(established, timeout=30).stdout.strip() in ("", "0"):
        assert mover.is_alive(), f"the move ended before its mirror could be cut: {outcome}"
        assert time.monotonic() < deadline, "the mirror never connected"
        time.sleep(0.2)
    hb.run("pkill -9 -x qemu-nbd", check=True)
    mover.join(600)
    assert outcome["rc"] == 1, outcome
    assert f"mirroring to {B} failed" in outcome["data"]["error"]["message"], outcome
    assert in_mover(ha, "dd if=/dev/xvda bs=512 count=1 2>/dev/null | head -n1") == "still here\n"
    assert "mover" not in {d.name for d in hb.xl.list()}
    assert not hb.run("ls /root/cutmove.qcow2").ok, "the destination's copy was removed"
    assert not hb.run("pgrep -x qemu-nbd").ok
    with ha.qmp(ha.xl.domid("mover")) as qmp:
        assert qmp.execute("query-jobs") == []
        assert not [n for n in qmp.named_block_nodes() if n.node_name.startswith("xk-nbd")]
    ha.xl.destroy("mover")


@pytest.mark.lab
def test_a_member_returned_to_a_snapshot_is_back_on_the_network(joined: Path) -> None:
    """Loading a snapshot starts a new QEMU; the switch reconnects to it."""
    assert cli_json("lab", "snapshot", "save", "--lab", B, "net")[0] == 0
    rc, data = cli_json("lab", "snapshot", "load", "--lab", B, "net")
    assert rc == 0, json.dumps(data)
    r = run_in(A, "busybox ping -c 2 -W 5 192.0.2.2")
    assert r["returncode"] == 0, r
    r = run_in(B, "sleep 1; echo slept")
    assert r["stdout"] == "slept\n"


@pytest.mark.lab
def test_the_switch_goes_when_the_members_do(joined: Path) -> None:
    assert cli_json("lab", "down", B)[0] == 0
    time.sleep(0.5)
    assert network.switch_pid(joined, A) is not None  # ja is still a member
    assert cli_json("lab", "destroy", A)[0] == 0
    deadline = time.monotonic() + 15
    while network.switch_pid(joined, A) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert network.switch_pid(joined, A) is None


# -- the switch, on plain sockets -------------------------------------------------------


def frame(dst: str, src: str, payload: bytes = b"x" * 50) -> bytes:
    mac = bytes.fromhex
    return mac(dst.replace(":", "")) + mac(src.replace(":", "")) + b"\x08\x00" + payload


def framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_frames_are_cut_from_the_stream() -> None:
    one, two = frame("ff:ff:ff:ff:ff:ff", "52:54:00:c0:02:01"), frame("a" * 12, "b" * 12)
    buf = bytearray(framed(one) + framed(two)[:7])
    assert list(network.frames(buf)) == [one]
    buf += framed(two)[7:]
    assert list(network.frames(buf)) == [two]
    assert buf == b""
    with pytest.raises(ValueError):
        list(network.frames(bytearray(struct.pack(">I", 1 << 30))))


def test_switch_floods_then_learns(tmp_path: Path) -> None:
    servers = {}
    for name in "abc":
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(tmp_path / f"{name}.sock"))
        srv.listen(1)
        servers[name] = srv
    switch = network.Switch()
    for i, name in enumerate("abc"):
        assert switch.add(name, i, tmp_path / f"{name}.sock")
    peers = {name: srv.accept()[0] for name, srv in servers.items()}
    for s in peers.values():
        s.settimeout(2)

    def pump() -> None:
        for _ in range(5):
            switch.poll(0.05)

    mac_a, mac_b = "52:54:00:c0:02:01", "52:54:00:c0:02:02"
    hello = frame("ff:ff:ff:ff:ff:ff", mac_a)
    peers["a"].sendall(framed(hello))
    pump()
    assert peers["b"].recv(4096) == framed(hello)
    assert peers["c"].recv(4096) == framed(hello)
    reply = frame(mac_a, mac_b)
    peers["b"].sendall(framed(reply))
    pump()
    assert peers["a"].recv(4096) == framed(reply)
    peers["c"].setblocking(False)
    with pytest.raises(BlockingIOError):
        peers["c"].recv(4096)  # a's address was learnt: unicast went to a only
    peers["a"].close()
    pump()
    assert "a" not in switch.ports
    assert not switch.add("gone", 9, tmp_path / "nothing.sock")


def test_member_addresses_and_macs() -> None:
    assert network.dom0_address(1) == "192.0.2.1"
    assert network.bridge_cidr(2) == "192.0.2.2/24"
    assert network.join_mac(10) == "52:54:00:c0:02:0a"
    members = [
        network.Member("a", 1, Path("a"), 1, 1, ""),
        network.Member("c", 3, Path(), 1, 1, ""),
    ]
    assert network.free_index(members) == 2
