"""``Xl`` and ``Qmp`` against a real Xen 4.17 lab, with PV (and one PVH) kit guests."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from xenkit.config import DomainConfig, parse_config, parse_disk_spec
from xenkit.core.errors import UsageError
from xenkit.host.errors import NoSuchDomain, XlError
from xenkit.host.host import Host
from xenkit.host.qmp import QMP_SOCKET, Qmp, QmpUnavailable
from xenkit.lab import GuestType, LabImage, Machine, guest_config, guest_console_log

pytestmark = pytest.mark.lab

QCOW2 = "/root/xvda.qcow2"
RAW = "/root/small.img"


@pytest.fixture
def host(lab: Machine) -> Host:
    return Host.from_machine(lab)


def kit_config(
    image: LabImage, name: str, kind: GuestType = "pv", *, extra: str = "", **kw: int
) -> DomainConfig:
    """A kit guest that stays up (``hold``), as a typed config."""
    return parse_config(guest_config(image.guest, kind, name, hold=True, **kw) + extra)


def wait_for_marker(
    host: Host, image: LabImage, name: str, kind: GuestType, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    log = guest_console_log(name, kind)
    while time.monotonic() < deadline:
        if host.run(["grep", "-q", image.guest.marker, log]).ok:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} did not boot within {timeout} s")


def wait_for_file(host: Host, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not host.run(["test", "-e", path]).ok:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def test_info_and_dom0(host: Host) -> None:
    info = host.xl.info()
    assert info.xen_version.startswith("4.17.") and info.xen_major == 4
    assert info.xen_scheduler == "credit" and info.hap and info.nr_cpus == 2
    (dom0,) = host.xl.list()
    assert (dom0.domid, dom0.name, dom0.domain_type, dom0.vcpus) == (0, "Domain-0", "pv", 2)
    assert dom0.uuid == "00000000-0000-0000-0000-000000000000" and dom0.state.running
    assert host.xl.domain(0).name == "Domain-0" == host.xl.domname(0)


def test_create_from_a_file_and_from_a_domain_config(host: Host, lab_image: LabImage) -> None:
    host.put_file("/root/kf.cfg", guest_config(lab_image.guest, "pv", "kf", hold=True).encode())
    kf = host.xl.create(Path("/root/kf.cfg"))
    kc = host.xl.create(kit_config(lab_image, "kc", vcpus=2, memory_mib=96), paused=True)
    assert kc > kf > 0
    assert host.run("ls /run/xenkit/xl").stdout == "", "the temporary config was removed"
    by_name = {d.name: d for d in host.xl.list()}
    assert by_name["kf"].domid == kf and by_name["kc"].domid == kc
    assert by_name["kf"].domain_type == "pv" and by_name["kf"].uuid
    assert by_name["kc"].state.paused and by_name["kc"].max_vcpus == 2
    assert by_name["kc"].memory_mib == 96
    assert host.xl.domid("kf") == kf

    host.xl.pause(kf)
    assert host.xl.domain("kf").state.paused
    host.xl.unpause("kf")
    assert not host.xl.domain(kf).state.paused

    vcpus = host.xl.vcpu_list("kc")
    assert [(v.domid, v.vcpu) for v in vcpus] == [(kc, 0), (kc, 1)]
    host.xl.vcpu_pin("kc", 1, "1")
    assert host.xl.vcpu_list(kc)[1].hard_affinity == "1"
    assert {v.domid for v in host.xl.vcpu_list()} == {0, kf, kc}

    host.xl.destroy("kf")
    host.xl.destroy(kc)
    assert [d.name for d in host.xl.list()] == ["Domain-0"]


def test_sched_credit_weight_cap_and_pool_params(host: Host, lab_image: LabImage) -> None:
    d = host.xl.create(kit_config(lab_image, "sc"))
    before = host.xl.sched_credit_get(d)
    assert (before.name, before.weight, before.cap) == ("sc", 256, 0)
    host.xl.sched_credit_set("sc", weight=512, cap=30)
    after = host.xl.sched_credit_get("sc")
    assert (after.domid, after.weight, after.cap) == (d, 512, 30)
    assert host.xl.domain(d).config["b_info"]["sched_params"]["weight"] == 512
    (pool,) = host.xl.sched_credit_list()
    assert {x.name: x.weight for x in pool.domains} == {"Domain-0": 256, "sc": 512}

    params = host.xl.sched_credit_pool_get()
    assert (params.pool, params.tslice_ms, params.ratelimit_us) == ("Pool-0", 30, 1000)
    host.xl.sched_credit_pool_set(tslice_ms=20, ratelimit_us=500)
    changed = host.xl.sched_credit_pool_get("Pool-0")
    assert (changed.tslice_ms, changed.ratelimit_us) == (20, 500)
    with pytest.raises(UsageError, match="weight"):
        host.xl.sched_credit_set(d, weight=70000)


def test_sched_credit2_in_a_credit2_cpupool(host: Host, lab_image: LabImage) -> None:
    # The lab boots credit1; a second cpupool with CPU 1 runs credit2.
    host.run(["xl", "cpupool-cpu-remove", "Pool-0", "1"], check=True)
    host.run(["xl", "cpupool-create", 'name="c2"', 'sched="credit2"', 'cpus="1"'], check=True)
    d = host.xl.create(kit_config(lab_image, "c2g", extra='pool = "c2"\n'))
    assert host.xl.sched_credit2_get(d).weight == 256
    host.xl.sched_credit2_set("c2g", weight=128, cap=10)
    got = host.xl.sched_credit2_get("c2g")
    assert (got.domid, got.weight, got.cap) == (d, 128, 10)
    assert host.xl.sched_credit2_pool_get("c2").ratelimit_us == 1000
    host.xl.sched_credit2_pool_set("c2", ratelimit_us=700)
    assert host.xl.sched_credit2_pool_get("c2").ratelimit_us == 700
    with pytest.raises(XlError, match="sched-credit") as wrong:
        host.xl.sched_credit_get("c2g")
    assert "credit2 cpupool" in (wrong.value.hint or "")
    with pytest.raises(XlError, match="sched-credit2"):
        host.xl.sched_credit2_pool_get()  # Pool-0 runs credit


def test_block_attach_list_detach_and_qmp(host: Host, lab_image: LabImage) -> None:
    host.run(f"qemu-img create -q -f qcow2 {QCOW2} 16M && truncate -s 8M {RAW}", check=True)
    disk = f'disk = [ "format=qcow2,vdev=xvda,access=rw,backendtype=qdisk,target={QCOW2}" ]\n'
    d = host.xl.create(kit_config(lab_image, "blk", extra=disk))
    (xvda,) = host.xl.block_list(d)
    assert (xvda.vdev, xvda.backend) == ("xvda", "qdisk")

    spec = parse_disk_spec(f"format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target={RAW}")
    row = host.xl.block_attach(d, spec)
    assert row is not None and row.vdev == "xvdb" and row.devid == 51728
    assert [b.vdev for b in host.xl.block_list("blk")] == ["xvda", "xvdb"]

    with host.qmp(d) as qmp:
        assert qmp.version is not None and qmp.version[0] >= 7
        nodes = {b.node_name: b for b in qmp.query_block()}
        assert set(nodes) == {"xvda-qcow2", "xvdb-raw"}
        assert nodes["xvda-qcow2"].image is not None
        assert nodes["xvda-qcow2"].image.virtual_size == 16 << 20
        assert nodes["xvdb-raw"].file == RAW and nodes["xvdb-raw"].drv == "raw"
        assert "xvda-qcow2" in {n.node_name for n in qmp.named_block_nodes()}
        assert qmp.status() == "running"
    # One client at a time: while another holds the socket, a session waits its turn.
    # The holder takes the greeting (it has the session), then lets go after 2 s.
    holder = (
        "import socket, sys, time, pathlib\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(4096)\n"
        "pathlib.Path('/run/qmp-held').touch(); time.sleep(2)\n"
        "pathlib.Path('/run/qmp-released').touch(); s.close()\n"
    )
    host.run("rm -f /run/qmp-held /run/qmp-released", check=True)
    host.run(
        f"setsid python3 -c {shlex.quote(holder)} {QMP_SOCKET.format(domid=d)} "
        "</dev/null >/dev/null 2>&1 &",
        check=True,
    )
    wait_for_file(host, "/run/qmp-held", 30)
    with host.qmp(d) as qmp:
        assert host.run(["test", "-e", "/run/qmp-released"]).ok, "the session waited its turn"
        assert qmp.status() == "running"
    # A domain without a QEMU: the forwarded socket closes at once, retried, then typed.
    start = time.monotonic()
    with pytest.raises(QmpUnavailable, match="no QMP session"):
        Qmp(host.forward_unix(QMP_SOCKET.format(domid=999)), connect_timeout=1.0).connect()
    assert time.monotonic() - start < 5
    # libxl itself needs the socket for the detach.
    host.xl.block_detach(d, "xvdb")
    assert [b.vdev for b in host.xl.block_list(d)] == ["xvda"]
    # A spec string works too, and is checked before xl sees it.
    assert host.xl.block_attach(d, f"{RAW},raw,xvdc,rw,backendtype=qdisk") is not None
    with host.qmp(d) as qmp:
        assert {b.node_name for b in qmp.query_block()} == {"xvda-qcow2", "xvdc-raw"}
    other = host.xl.create(kit_config(lab_image, "noqemu"))
    with pytest.raises(XlError, match="block-attach") as no_qemu:
        host.xl.block_attach(other, f"format=raw,vdev=xvdb,backendtype=qdisk,target={RAW}")
    assert "QEMU" in (no_qemu.value.hint or "")


def test_blkback_disk_through_the_block_hotplug_script(host: Host, lab_image: LabImage) -> None:
    """A file disk served by blkback: Xen's own block script sets up a loop device.

    The script takes its lock through /dev/fd; without it the attach spins until
    libxl gives up after 10 s. (No detach here: the kit guest never connects its
    frontends, so a safe remove would wait for a frontend that never answers.)
    """
    host.run(f"truncate -s 8M {RAW}", check=True)
    d = host.xl.create(kit_config(lab_image, "phy"))
    row = host.xl.block_attach(d, f"format=raw,vdev=xvdb,access=rw,target={RAW}")
    assert row is not None and row.vdev == "xvdb"
    (disk,) = host.xl.block_list(d)
    assert disk.backend == "vbd"
    # The script ran to its end: it reported success and named the loop device it made.
    backend = f"/local/domain/0/backend/vbd/{d}/{row.devid}"
    status = host.run(["xenstore-read", f"{backend}/hotplug-status"], check=True).stdout
    assert status.strip() == "connected"
    assert host.run(["xenstore-read", f"{backend}/physical-device"], check=True).stdout.strip()
    assert RAW in host.run(["losetup", "-a"], check=True).stdout


def test_network_attach_and_detach(host: Host, lab_image: LabImage) -> None:
    d = host.xl.create(kit_config(lab_image, "net"))
    assert host.xl.network_list(d) == []
    nic = host.xl.network_attach(d, "bridge=xenbr0,mac=00:16:3e:00:00:42")
    assert nic is not None and (nic.devid, nic.mac) == (0, "00:16:3e:00:00:42")
    assert host.run(["ip", "-o", "link", "show", "master", "xenbr0"]).stdout.count("vif") == 1
    assert [n.mac for n in host.xl.network_list("net")] == ["00:16:3e:00:00:42"]
    # The kit guest never connects its frontend, so libxl waits 10 s before removing.
    host.xl.network_detach(d, nic.devid, timeout=120)
    assert host.xl.network_list(d) == []


def test_save_and_restore_round_trip(host: Host, lab_image: LabImage) -> None:
    d = host.xl.create(kit_config(lab_image, "sr"))
    # A PV guest can be suspended once its kernel has set up its p2m (it has booted).
    wait_for_marker(host, lab_image, "sr", "pv", 60)
    uuid = host.xl.domain(d).uuid
    host.xl.save(d, "/root/sr.chk", checkpoint=True)
    assert host.xl.domain("sr").domid == d, "a checkpoint leaves the domain running"
    host.xl.save("sr", "/root/sr.save")
    assert [x.name for x in host.xl.list()] == ["Domain-0"]
    assert int(host.run(["stat", "-c", "%s", "/root/sr.save"]).stdout) > 128 << 20
    back = host.xl.restore("/root/sr.save")
    restored = host.xl.domain(back)
    assert back > d and (restored.name, restored.uuid) == ("sr", uuid)
    host.xl.destroy(back)
    paused = host.xl.restore("/root/sr.chk", paused=True)
    assert host.xl.domain(paused).state.paused


def test_migrate_to_localhost(host: Host, lab_image: LabImage) -> None:
    # PV live migration needs shadow paging, which Debian's Xen lacks: a typed refusal.
    pv = host.xl.create(kit_config(lab_image, "mpv"))
    wait_for_marker(host, lab_image, "mpv", "pv", 60)
    with pytest.raises(XlError, match="migrate") as refused:
        host.xl.migrate_localhost(pv)
    assert "shadow" in (refused.value.hint or "")
    host.xl.destroy("mpv")
    # PVH (HAP log-dirty) migrates: the whole stream and handshake of xl migrate.
    d = host.xl.create(kit_config(lab_image, "mpvh", "pvh"))
    wait_for_marker(host, lab_image, "mpvh", "pvh", 60)
    moved = host.xl.migrate_localhost("mpvh")
    assert moved != d and host.xl.domain("mpvh").domid == moved
    assert [x.name for x in host.xl.list()] == ["Domain-0", "mpvh"]


def test_shutdown_request_and_a_wait_that_cannot_end(host: Host, lab_image: LabImage) -> None:
    # The guest's kernel acknowledges the request (without wait, that is all xl waits
    # for); the kit's init has no /sbin/poweroff, so the guest itself stays up.
    d = host.xl.create(kit_config(lab_image, "sd"))
    wait_for_marker(host, lab_image, "sd", "pv", 60)
    host.xl.shutdown(d, wait=False, timeout=30)
    # A paused guest never sees the request: the wait ends in a typed time-out.
    host.xl.create(kit_config(lab_image, "sp"), paused=True)
    with pytest.raises(XlError, match="xl shutdown") as info:
        host.xl.shutdown("sp", wait=True, timeout=3)
    assert "no answer within 3 s" in str(info.value)


def test_errors_for_a_missing_domain(host: Host, lab_image: LabImage) -> None:
    host.xl.create(kit_config(lab_image, "here"))
    for call in (
        lambda: host.xl.pause("nosuch"),
        lambda: host.xl.destroy(99),
        lambda: host.xl.list("nosuch"),
        lambda: host.xl.sched_credit_get("nosuch"),
        lambda: host.xl.block_list("nosuch"),
        lambda: host.xl.save("nosuch", "/root/x.save"),
    ):
        with pytest.raises(NoSuchDomain) as info:
            call()
        assert info.value.domain in ("nosuch", "99")
        assert "Domain-0 (0)" in (info.value.hint or "") and "here (" in (info.value.hint or "")
    with pytest.raises(XlError, match="create") as dup:
        host.xl.create(kit_config(lab_image, "here"))
    assert "already exists" in dup.value.stderr and "destroy" in (dup.value.hint or "")
    with pytest.raises(XlError) as missing:
        host.xl.create(Path("/root/none.cfg"))
    assert "write the file there" in (missing.value.hint or "")
