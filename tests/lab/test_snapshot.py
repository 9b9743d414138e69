"""VM snapshots against a real lab: guests write to their disks, snapshots are taken,
the guests overwrite, the snapshot is reverted, and the guests read the original.

The guests are the kit booted with its agent (block frontends loaded, commands over
the PV console), so what is checked is what a guest sees, not what dom0 wrote.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

import pytest

from xenkit.config import parse_config
from xenkit.host.guestexec import GuestRun, guest_exec
from xenkit.host.host import Host
from xenkit.lab import GuestType, LabImage, Machine, guest_config

pytestmark = pytest.mark.lab

WRITE = "printf '%s\\n' {text} | dd of=/dev/{vdev} bs=512 count=1 conv=sync,fsync 2>/dev/null"
READ = "dd if=/dev/{vdev} bs=512 count=1 2>/dev/null | head -n1"


class Guest:
    """A kit guest with its agent, by name (its domid changes when it is reverted)."""

    def __init__(self, host: Host, name: str) -> None:
        self.host, self.name = host, name

    def run(self, command: str, *, wait: float = 0.0) -> GuestRun:
        return guest_exec(self.host, self.host.xl.domid(self.name), command, wait=wait).check()

    def up(self) -> None:
        self.run("true", wait=180)

    def write(self, vdev: str, text: str) -> None:
        self.run(WRITE.format(text=shlex.quote(text), vdev=vdev))

    def read(self, vdev: str) -> str:
        return self.run(READ.format(vdev=vdev)).text.strip()


def snap(host: Host, *args: str, ok: bool = True) -> dict[str, Any]:
    r = host.run_dom0(["snapshot", *args], timeout=1800)
    data: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    if ok:
        assert r.returncode == 0 and "error" not in data, (args, data, r.stderr)
    return data


def make_guest(
    host: Host, image: LabImage, name: str, disks: list[str], kind: GuestType = "pv"
) -> Guest:
    specs = ", ".join(f'"{d}"' for d in disks)
    cfg = guest_config(image.guest, kind, name, agent=True) + f"disk = [ {specs} ]\n"
    host.xl.create(parse_config(cfg))
    g = Guest(host, name)
    g.up()
    return g


def qcow2_disk(host: Host, path: str, vdev: str, size: str = "64M") -> str:
    host.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size], check=True)
    return f"format=qcow2,vdev={vdev},access=rw,backendtype=qdisk,target={path}"


@pytest.fixture
def host(lab: Machine) -> Host:
    return Host.from_machine(lab)


@pytest.mark.parametrize("mode", ["external", "internal"])
def test_disk_only_snapshot_and_revert(host: Host, lab_image: LabImage, mode: str) -> None:
    g = make_guest(host, lab_image, "web", [qcow2_disk(host, "/root/web.qcow2", "xvda")])
    g.write("xvda", "original")
    made = snap(host, "create", "web", "s1", "--disk-only", "--mode", mode)["snapshot"]
    assert [d["kind"] for d in made["disks"]] == [mode]
    assert made["paused_seconds"] is not None and made["state"] == "complete"
    record = host.run("xl list -l web", check=True).stdout
    xenstore = host.run("xenstore-ls /local/domain/0/backend/qdisk", check=True).stdout
    if mode == "external":
        # libxl's records follow the overlay, so xl save, migrate and reboot use it.
        assert '"pdev_path": "/root/web.s1.qcow2"' in record
        assert 'params = "qcow2:/root/web.s1.qcow2"' in xenstore
        info = host.run("qemu-img info -U --output=json /root/web.s1.qcow2", check=True)
        assert json.loads(info.stdout)["backing-filename"] == "/root/web.qcow2"
    else:
        assert '"pdev_path": "/root/web.qcow2"' in record
        assert "s1" in host.run("qemu-img snapshot -U -l /root/web.qcow2", check=True).stdout
    g.write("xvda", "overwritten")
    assert g.read("xvda") == "overwritten"
    snap(host, "revert", "web", "s1")
    g.up()
    assert g.read("xvda") == "original"
    listed = snap(host, "list", "web")
    assert listed["current"] == "s1" and [s["name"] for s in listed["snapshots"]] == ["s1"]
    assert snap(host, "verify", "web")["ok"]


def test_two_disks_are_snapshotted_in_the_same_instant(host: Host, lab_image: LabImage) -> None:
    """A guest writes one counter to both disks, always xvda first: any instant has
    xvda == xvdb or xvda == xvdb + 1, and so must the snapshot."""
    disks = [
        qcow2_disk(host, "/root/a.qcow2", "xvda"),
        qcow2_disk(host, "/root/b.qcow2", "xvdb"),
    ]
    g = make_guest(host, lab_image, "pair", disks)
    loop = (
        "i=0; while :; do i=$((i+1)); "
        + WRITE.format(text="$i", vdev="xvda")
        + "; "
        + WRITE.format(text="$i", vdev="xvdb")
        + "; done"
    )
    g.run(f"setsid sh -c {shlex.quote(loop)} >/dev/null 2>&1 &")
    time.sleep(3)
    snap(host, "create", "pair", "both", "--disk-only")
    time.sleep(2)
    before = int(g.read("xvda"))
    snap(host, "revert", "pair", "both")
    g.up()
    a, b = int(g.read("xvda")), int(g.read("xvdb"))
    assert b >= 1 and a - b in (0, 1), (a, b)
    assert a < before, "the revert went back in time"


def test_checkpoint_resumes_where_it_was(host: Host, lab_image: LabImage) -> None:
    """A counter in the guest's memory carries on from its snapshotted value, and the
    disk it wrote matches that memory."""
    g = make_guest(host, lab_image, "count", [qcow2_disk(host, "/root/c.qcow2", "xvda")])
    g.write("xvda", "original")
    counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.5; done"
    g.run(f"setsid sh -c {shlex.quote(counter)} >/dev/null 2>&1 &")
    time.sleep(2)
    at_least = int(g.run("cat /tmp/n").text)
    made = snap(host, "create", "count", "cp")["snapshot"]
    assert made["kind"] == "checkpoint" and made["memory"]
    g.write("xvda", "overwritten")
    time.sleep(8)
    later = int(g.run("cat /tmp/n").text)
    snap(host, "revert", "count", "cp")
    resumed = int(g.run("cat /tmp/n", wait=60).text)
    # Not from zero (no reboot), and well behind where the domain had got to: reading
    # takes a few ticks, the 8 s after the snapshot were 16.
    assert at_least <= resumed < later - 6, (at_least, resumed, later)
    assert g.read("xvda") == "original"
    time.sleep(1)
    assert int(g.run("cat /tmp/n").text) > resumed, "the counter runs on after the revert"


def active_disk(host: Host, name: str) -> str:
    """The image domain ``name`` writes to, as libxl records it."""
    rows = json.loads(host.run(["xl", "list", "-l", name], check=True).stdout)
    return str(rows[0]["config"]["disks"][0]["pdev_path"])


def disk_state(host: Host, image: str, out: str) -> None:
    host.run(["qemu-img", "convert", "-U", "-O", "raw", image, out], check=True, timeout=300)


def test_deleting_any_node_of_a_tree_keeps_the_others(host: Host, lab_image: LabImage) -> None:
    """s1 → s2 → s3 on one branch, s1 → s4 on another (after a revert to s1). Each
    snapshot's disk, as a raw image, stays byte-identical whatever else is deleted."""
    g = make_guest(host, lab_image, "tree", [qcow2_disk(host, "/root/t.qcow2", "xvda")])
    for name in ("s1", "s2", "s3"):
        g.write("xvda", f"before {name}")
        snap(host, "create", "tree", name, "--disk-only")
    g.write("xvda", "after s3")
    snap(host, "revert", "tree", "s1")
    g.up()
    g.write("xvda", "branch")
    snap(host, "create", "tree", "s4", "--disk-only")
    g.write("xvda", "present")
    listed = snap(host, "list", "tree")
    parents = {s["name"]: s["parent"] for s in listed["snapshots"]}
    assert parents == {"s1": None, "s2": "s1", "s3": "s2", "s4": "s1"}

    def states(names: list[str]) -> None:
        for s in snap(host, "list", "tree")["snapshots"]:
            if s["name"] in names:
                disk_state(host, s["disks"][0]["image"], f"/root/state-{s['name']}.raw")

    def unchanged(names: list[str]) -> None:
        for s in snap(host, "list", "tree")["snapshots"]:
            if s["name"] in names:
                image = s["disks"][0]["image"]
                r = host.run(["qemu-img", "compare", "-U", f"/root/state-{s['name']}.raw", image])
                assert r.ok, (s["name"], r.stdout, r.stderr)

    states(["s1", "s2", "s3", "s4"])
    disk_state(host, active_disk(host, "tree"), "/root/state-present.raw")
    for victim, rest in (("s2", ["s1", "s3", "s4"]), ("s1", ["s3", "s4"])):
        snap(host, "delete", "tree", victim)
        unchanged(rest)
        active = active_disk(host, "tree")
        assert host.run(["qemu-img", "compare", "-U", "/root/state-present.raw", active]).ok
        assert snap(host, "verify", "tree")["ok"]
    assert g.read("xvda") == "present"
    snap(host, "revert", "tree", "s3")
    g.up()
    assert g.read("xvda") == "before s3"
    snap(host, "delete", "tree", "s3")  # the current one, the domain running on it
    assert g.read("xvda") == "before s3"
    g.write("xvda", "still writable")
    assert g.read("xvda") == "still writable"
    # Only what s4 and the running domain need is left of the overlays.
    (s4,) = snap(host, "list", "tree")["snapshots"]
    needed = {s4["disks"][0]["image"], active_disk(host, "tree"), "/root/t.qcow2"}
    files = {f"/root/{f}" for f in host.run("ls /root", check=True).stdout.split()}
    assert {f for f in files if re.fullmatch(r"/root/t\..*qcow2", f)} == needed


def test_refusals_are_clear_and_leave_nothing(host: Host, lab_image: LabImage) -> None:
    host.run("truncate -s 32M /root/raw.img", check=True)
    raw = "format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=/root/raw.img"
    g = make_guest(host, lab_image, "bad", [qcow2_disk(host, "/root/q.qcow2", "xvda"), raw])
    del g
    err = snap(host, "create", "nosuch", "x", ok=False)["error"]
    assert "no running domain 'nosuch'" in err["message"]
    err = snap(host, "create", "bad", "x", "--mode", "internal", "--disk-only", ok=False)["error"]
    assert "disk xvdb of bad is raw" in err["message"] and "--external" in err["hint"]
    err = snap(host, "create", "bad", "../x", ok=False)["error"]
    assert "bad snapshot name" in err["message"]
    snap(host, "create", "bad", "one", "--disk-only")
    err = snap(host, "create", "bad", "one", "--disk-only", ok=False)["error"]
    assert "already has a snapshot 'one'" in err["message"]
    err = snap(host, "revert", "bad", "two", ok=False)["error"]
    assert "no snapshot 'two'" in err["message"] and "one" in err["hint"]
    err = snap(host, "create", "bad", "x", "--disk", "xvdz", ok=False)["error"]
    assert "has no disk xvdz" in err["message"]
    files = sorted(host.run("ls /root", check=True).stdout.split())
    assert [f for f in files if ".x." in f] == []
    assert [s["name"] for s in snap(host, "list", "bad")["snapshots"]] == ["one"]


def test_a_killed_create_is_repaired_by_verify(host: Host, lab_image: LabImage) -> None:
    """The engine is killed at several moments of a create; afterwards verify --repair
    leaves either a whole snapshot or none, and the guest's disk keeps its data."""
    g = make_guest(host, lab_image, "kill", [qcow2_disk(host, "/root/k.qcow2", "xvda")])
    g.write("xvda", "data")
    host.push_dom0()
    for i, delay in enumerate((0.3, 0.9, 1.6, 2.5)):
        name = f"k{i}"
        app = "/var/lib/xenkit/xenkit-dom0.pyz"
        host.run(
            f"python3 -I {app} snapshot create kill {name} --disk-only >/dev/null 2>&1 & "
            f"sleep {delay}; kill -9 $! 2>/dev/null; true",
            check=True,
        )
        host.run("xl unpause kill 2>/dev/null; true")
        report = snap(host, "verify", "kill", "--repair")
        assert all(p["repaired"] for p in report["problems"]), report
        assert snap(host, "verify", "kill")["ok"]
        names = [s["name"] for s in snap(host, "list", "kill")["snapshots"]]
        if name not in names:
            assert host.run(["test", "-e", f"/root/k.{name}.qcow2"]).returncode == 1
        assert g.read("xvda") == "data"


LVM_CONFIG = "activation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 1 }"


def test_lvm_volume_on_blkback(host: Host, lab_image: LabImage) -> None:
    """The backend without QEMU: a logical volume served by blkback gets an LVM
    snapshot; revert merges it back and keeps it; delete removes it."""
    c = shlex.quote(LVM_CONFIG)
    host.run(
        "modprobe dm-snapshot && truncate -s 256M /root/pv.img && "
        "L=$(losetup -f --show /root/pv.img) && "
        f"pvcreate -q --config {c} $L && vgcreate -q --config {c} vgx $L && "
        f"lvcreate -q --config {c} -L 64M -n db vgx",
        check=True,
    )
    g = make_guest(host, lab_image, "db", ["format=raw,vdev=xvda,access=rw,target=/dev/vgx/db"])
    g.write("xvda", "original")
    made = snap(host, "create", "db", "l1", "--disk-only")["snapshot"]
    assert [(d["kind"], d["image"]) for d in made["disks"]] == [("lvm", "/dev/vgx/db.l1")]
    g.write("xvda", "overwritten")
    snap(host, "revert", "db", "l1")
    g.up()
    assert g.read("xvda") == "original"
    g.write("xvda", "again")
    snap(host, "revert", "db", "l1")  # the snapshot survived the first revert
    g.up()
    assert g.read("xvda") == "original"
    err = snap(host, "create", "db", "x", "--mode", "internal", ok=False)["error"]
    assert "no internal snapshots" in err["message"]
    snap(host, "delete", "db", "l1")
    lvs = host.run(f"lvs --noheadings -o lv_name --config {c} vgx", check=True).stdout.split()
    assert lvs == ["db"]


def test_a_file_on_blkback_is_refused_by_name(host: Host, lab_image: LabImage) -> None:
    host.run("truncate -s 16M /root/plain.img", check=True)
    make_guest(host, lab_image, "plain", ["format=raw,vdev=xvda,access=rw,target=/root/plain.img"])
    err = snap(host, "create", "plain", "x", "--disk-only", ok=False)["error"]
    assert "disk xvda of plain (/root/plain.img" in err["message"]
    assert "not an LVM logical volume" in err["message"]


def test_live_merges_leave_no_open_overlays(host: Host, lab_image: LabImage) -> None:
    """Snapshots deleted while the domain runs are merged by its QEMU; the overlays
    xenkit opened there are closed, so the next snapshot works and no deleted file
    stays open."""
    g = make_guest(host, lab_image, "live", [qcow2_disk(host, "/root/l.qcow2", "xvda")])
    for name in ("f1", "f2", "f3"):
        g.write("xvda", name)
        snap(host, "create", "live", name, "--disk-only")
    g.write("xvda", "present")
    for name in ("f1", "f3", "f2"):  # an intermediate, the active one's, the last
        snap(host, "delete", "live", name)
        assert g.read("xvda") == "present"
    made = snap(host, "create", "live", "f4", "--disk-only")["snapshot"]
    assert made["disks"][0]["image"] == "/root/l.qcow2"
    with host.qmp(host.xl.domid("live")) as qmp:
        files = {n.file for n in qmp.named_block_nodes()}
    assert files == {"/root/l.qcow2", "/root/l.f4.qcow2"}, files
    deleted = host.run("ls -l /proc/$(pgrep -f 'xen-domid' | head -1)/fd | grep -c deleted")
    assert deleted.stdout.strip() in ("", "0"), deleted.stdout


def test_save_keeps_the_disks_of_that_moment(host: Host, lab_image: LabImage) -> None:
    """xenkit save: memory and disks of one instant. The domain is booted again from
    its disks and writes to them; restore still brings back what was saved."""
    g = make_guest(host, lab_image, "sv", [qcow2_disk(host, "/root/sv.qcow2", "xvda")])
    g.write("xvda", "saved")
    g.run("echo 41 > /tmp/mem")
    made = snap(host, "save", "sv", "/root/sv.save")["snapshot"]
    assert made["memory"] == "/root/sv.save" and made["kind"] == "checkpoint"
    assert "sv" not in {d.name for d in host.xl.list()}, "save stops the domain"
    err = snap(host, "save", "sv", "/root/other.save", ok=False)["error"]
    assert "no running domain 'sv'" in err["message"]
    err = snap(host, "restore", "/root/nothing.save", ok=False)["error"]
    assert "not a save xenkit knows of" in err["message"]
    snap(host, "restore", "/root/sv.save")
    assert g.run("cat /tmp/mem", wait=60).text.strip() == "41", "the memory came back"
    assert g.read("xvda") == "saved"
    g.write("xvda", "after")
    snap(host, "save", "sv", "/root/sv2.save", "--keep-running")
    assert g.read("xvda") == "after", "--keep-running leaves it running"
    g.write("xvda", "later")
    snap(host, "restore", "/root/sv.save")
    assert g.read("xvda") == "saved" and g.run("cat /tmp/mem").text.strip() == "41"


def test_no_space_is_refused_before_anything_starts(host: Host, lab_image: LabImage) -> None:
    host.run("mkdir -p /mnt/small && mount -t tmpfs -o size=8M small /mnt/small", check=True)
    try:
        g = make_guest(host, lab_image, "tight", [qcow2_disk(host, "/mnt/small/t.qcow2", "xvda")])
        g.write("xvda", "before")
        err = snap(host, "create", "tight", "s1", "--disk-only", ok=False)["error"]
        assert "/mnt/small has" in err["message"] and "MiB free" in err["message"], err
        assert "free some space" in err["hint"]
        assert host.run("ls /mnt/small", check=True).stdout.split() == ["t.qcow2"]
        assert snap(host, "list", "tight")["snapshots"] == []
        g.write("xvda", "after")  # the guest still writes to its own image
        assert g.read("xvda") == "after"
        host.xl.destroy("tight")
    finally:
        host.run("umount /mnt/small", timeout=60)


def test_revert_is_refused_while_a_block_job_runs(host: Host, lab_image: LabImage) -> None:
    """A mirror to a null node never ends by itself: the job a revert must not cut."""
    g = make_guest(host, lab_image, "busy", [qcow2_disk(host, "/root/busy.qcow2", "xvda")])
    g.write("xvda", "original")
    snap(host, "create", "busy", "s1", "--disk-only")
    g.write("xvda", "newer")
    domid = host.xl.domid("busy")
    with host.qmp(domid) as qmp:
        (top,) = [b.node_name for b in qmp.query_block() if b.file == "/root/busy.s1.qcow2"]
        qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "t-null",
                                     "size": 64 << 20})  # fmt: skip
        qmp.execute("blockdev-mirror", {"job-id": "t-job", "device": top, "target": "t-null",
                                        "sync": "full"})  # fmt: skip
    err = snap(host, "revert", "busy", "s1", ok=False)["error"]
    assert "has a block job running (t-job)" in err["message"], err
    assert host.xl.domid("busy") == domid, "the domain was not restarted"
    assert g.read("xvda") == "newer"
    with host.qmp(domid) as qmp:
        qmp.execute("block-job-cancel", {"device": "t-job", "force": True})
        deadline = time.monotonic() + 60
        while qmp.execute("query-block-jobs") and time.monotonic() < deadline:
            time.sleep(0.2)
        qmp.execute("blockdev-del", {"node-name": "t-null"})
    snap(host, "revert", "busy", "s1")
    g.up()
    assert g.read("xvda") == "original"


def test_a_killed_delete_is_finished_by_verify(host: Host, lab_image: LabImage) -> None:
    """The engine is killed at several moments of a live merge of the active layer
    (before, during and after its QEMU job and pivot). The snapshot cannot be reverted
    to meanwhile; verify --repair finishes the delete; what the guest reads is the same
    bytes throughout, and an older snapshot still reverts."""
    disk = qcow2_disk(host, "/root/cut.qcow2", "xvda", size="256M")
    g = make_guest(host, lab_image, "cut", [disk])
    g.write("xvda", "base")
    snap(host, "create", "cut", "base", "--disk-only")
    sums = "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/xvda bs=1M count=48 | md5sum"
    app = "/var/lib/xenkit/xenkit-dom0.pyz"
    host.push_dom0()
    cut = 0
    for i, delay in enumerate((0.0, 0.15, 0.3, 0.5)):
        name = f"a{i}"
        uuid = snap(host, "create", "cut", name, "--disk-only")["snapshot"]["domain_uuid"]
        g.run("dd if=/dev/urandom of=/dev/xvda bs=1M count=40 seek=4 conv=fsync 2>/dev/null")
        g.write("xvda", f"after {name}")
        before = g.run(sums).text
        record = f"/var/lib/xenkit/snapshots/{uuid}/records/{name}.json"
        # Cut at a moment counted from the merge's start (the record says "deleting").
        host.run(
            f"python3 -I {app} snapshot delete cut {name} >/dev/null 2>&1 & p=$!; i=0; "
            f"until grep -qs deleting {record} || [ $i -gt 400 ]; do i=$((i+1)); "
            f"sleep 0.01; done; sleep {delay}; kill -9 $p 2>/dev/null; true",
            check=True,
            timeout=120,
        )
        listed = {s["name"]: s for s in snap(host, "list", "cut")["snapshots"]}
        if listed.get(name, {}).get("state") == "deleting":
            cut += 1
            err = snap(host, "revert", "cut", name, ok=False)["error"]
            assert "half deleted" in err["message"] or "block job" in err["message"], err
        report = snap(host, "verify", "cut", "--repair")
        assert all(p["repaired"] for p in report["problems"]), report
        assert snap(host, "verify", "cut")["ok"]
        assert [s["name"] for s in snap(host, "list", "cut")["snapshots"]] == ["base"]
        assert g.run(sums).text == before, f"the guest's disk changed (cut at {delay} s)"
        record = json.loads(host.run("xl list -l cut", check=True).stdout)[0]["config"]
        (path,) = [d["pdev_path"] for d in record["disks"]]
        with host.qmp(host.xl.domid("cut")) as qmp:
            (top,) = [b.file for b in qmp.query_block() if b.file]
        assert path == top, "libxl's record names what QEMU writes"
        assert not host.run(f"ls /root/cut.{name}.qcow2").ok, "the merged overlay is gone"
    assert cut >= 1, "no kill landed during a merge: the delays need adjusting"
    snap(host, "revert", "cut", "base")
    g.up()
    assert g.read("xvda") == "base"


QMP_HOLDER = (
    "import socket, sys, time, pathlib\n"
    "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(4096)\n"
    "pathlib.Path('/run/qmp-held').touch()\n"
    "while not pathlib.Path('/run/qmp-release').exists(): time.sleep(0.1)\n"
    "s.close()\n"
)


def test_a_busy_qmp_socket_is_a_clear_error_and_leaves_nothing(
    host: Host, lab_image: LabImage
) -> None:
    """Another client (as libxl can) holds the domain's only QMP session for longer
    than the engine waits: the create fails saying so, with nothing made; once the
    socket is free, the same create works."""
    g = make_guest(host, lab_image, "held", [qcow2_disk(host, "/root/held.qcow2", "xvda")])
    g.write("xvda", "data")
    domid = host.xl.domid("held")
    host.run("rm -f /run/qmp-held /run/qmp-release", check=True)
    host.run(
        f"setsid python3 -c {shlex.quote(QMP_HOLDER)} /var/run/xen/qmp-libxl-{domid} "
        "</dev/null >/dev/null 2>&1 &",
        check=True,
    )
    deadline = time.monotonic() + 30
    while not host.run(["test", "-e", "/run/qmp-held"]).ok:
        assert time.monotonic() < deadline, "the holder never got the socket"
        time.sleep(0.2)
    try:
        err = snap(host, "create", "held", "q1", "--disk-only", ok=False)["error"]
    finally:
        host.run("touch /run/qmp-release", check=True)
    assert "no QMP session on the QEMU of domain" in err["message"], err
    assert "holding the socket" in err["hint"]
    assert snap(host, "list", "held")["snapshots"] == []
    assert host.run("ls /root", check=True).stdout.split().count("held.q1.qcow2") == 0
    assert g.read("xvda") == "data"
    snap(host, "create", "held", "q1", "--disk-only")
    assert [s["name"] for s in snap(host, "list", "held")["snapshots"]] == ["q1"]
