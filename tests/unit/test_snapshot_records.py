"""The snapshot engine's pure parts: names, records, the store, the tree, and the
xl.cfg written from libxl's record (read back by xenkit's own xl.cfg reader)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.config import parse_config
from xenkit.core.errors import OperationFailed, UsageError
from xenkit.snapshot.dom0 import disks_of, qcow2_backing
from xenkit.snapshot.engine import overlay_path, revert_overlay_path
from xenkit.snapshot.model import Disk, DiskSnapshot, Snapshot, check_name
from xenkit.snapshot.store import SnapshotStore, tree_lines
from xenkit.snapshot.xlcfg import disk_spec, xlcfg_from_libxl

LIBXL = json.loads((Path(__file__).parent / "data" / "libxl-pv.json").read_text())
UUID = "56c97603-8a08-4441-8727-91fe5b6e00e8"


def snapshot(name: str, parent: str | None = None, created: float = 1.0) -> Snapshot:
    disk = DiskSnapshot("xvda", "external", "qcow2", f"/i/{parent or 'base'}.qcow2", overlay=None)
    return Snapshot(name, UUID, "g1", created, parent, (disk,))


@pytest.mark.parametrize("bad", ["", "../x", "a b", "-x", "x" * 65, "a/b", "é"])
def test_names_that_would_be_unsafe_as_files_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="bad snapshot name"):
        check_name(bad)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,20}", fullmatch=True))
def test_a_record_survives_json(name: str) -> None:
    s = Snapshot(
        name,
        UUID,
        "g1",
        12.5,
        None,
        (
            DiskSnapshot("xvda", "internal", "qcow2", "/i/a.qcow2"),
            DiskSnapshot("xvdb", "lvm", "raw", "/dev/vg/db.x", overlay="/dev/vg/db"),
        ),
        memory="/m.save",
        extra={"libxl_config": {"c_info": {}}},
    )
    assert Snapshot.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_overlay_names_follow_the_disk() -> None:
    assert overlay_path("/images/web.qcow2", "s1") == "/images/web.s1.qcow2"
    assert overlay_path("/images/web.s1.qcow2", "s2") == "/images/web.s2.qcow2"
    assert overlay_path("/images/web.img", "s1") == "/images/web.s1.qcow2"
    r = revert_overlay_path("/images/web.s1.qcow2", "s1")
    assert r.startswith("/images/web.s1-") and r.endswith(".qcow2")


def test_the_store_keeps_records_current_and_files(tmp_path: Path) -> None:
    store = SnapshotStore(UUID, tmp_path, label="g1")
    assert store.names() == [] and store.current() is None
    store.put(snapshot("files"))  # names of the store's own files are fine
    store.put(snapshot("current", "files", 2.0))
    assert [s.name for s in store.all()] == ["files", "current"]
    store.set_current("current")
    assert store.current() == "current"
    store.remove("current")
    assert store.current() is None, "a current that is gone is no current"
    store.own("/i/a.qcow2", "/i/b.qcow2")
    store.disown("/i/a.qcow2")
    assert store.owned() == {"/i/b.qcow2"}
    with pytest.raises(UsageError, match="domain g1 has no snapshot 'nope'") as e:
        store.get("nope")
    assert e.value.hint == "its snapshots: files"
    store.path("files").write_text("{not json")
    with pytest.raises(OperationFailed, match="damaged"):
        store.get("files")


def test_one_command_per_domain_at_a_time(tmp_path: Path) -> None:
    store = SnapshotStore(UUID, tmp_path, label="g1")
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.locked():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(5)
    try:
        with pytest.raises(OperationFailed, match="another snapshot command"), store.locked():
            pass
    finally:
        release.set()
        t.join()
    with store.locked():
        pass


def test_the_tree_puts_children_under_parents() -> None:
    snaps = [
        snapshot("s1"),
        snapshot("s2", "s1", 2),
        snapshot("s3", "s2", 3),
        snapshot("s4", "s1", 4),
        snapshot("orphan", "deleted", 5),
    ]
    assert tree_lines(snaps, "s4") == [
        "├─ s1",
        "│  ├─ s2",
        "│  │  └─ s3",
        "│  └─ s4 *",
        "└─ orphan",
    ]


def test_disks_come_from_libxls_record() -> None:
    assert disks_of(LIBXL) == (
        Disk("xvda", "qdisk", "qcow2", "/root/a.qcow2"),
        Disk("xvdb", "unknown", "raw", "/dev/vgx/db"),
    )
    assert Disk("xvda", "qdisk", "qcow2", "/x").node_name == "xvda-qcow2"


def test_the_xl_cfg_written_from_libxls_record_reads_back() -> None:
    disks = [Disk("xvda", "qdisk", "qcow2", "/root/a.s1-abc.qcow2"), *disks_of(LIBXL)[1:]]
    cfg = xlcfg_from_libxl(LIBXL, disks)
    assert cfg.dropped == ["vfbs"]
    config = parse_config(cfg.text)
    assert (config.name, config.type, config.uuid) == ("g1", "pv", UUID)
    assert (config.memory, config.maxmem, config.vcpus, config.maxvcpus) == (128, 128, 1, 1)
    assert config.extra == "console=hvc0 quiet xenkit.agent"
    assert config.kernel == "/usr/share/xenkit/guest/vmlinuz"
    assert [d.target for d in config.disk] == ["/root/a.s1-abc.qcow2", "/dev/vgx/db"]
    assert [d.backend.value for d in config.disk] == ["qdisk", "unknown"]
    assert [d.readwrite for d in config.disk] == [True, True]
    assert [v.mac for v in config.vif] == [(0x00, 0x16, 0x3E, 0x00, 0x00, 0x42)]
    assert [v.bridge for v in config.vif] == ["xenbr0"]
    assert config.on_soft_reset == "soft-reset"


def test_a_read_only_disk_stays_read_only() -> None:
    spec = disk_spec(Disk("xvdc", "qdisk", "raw", "/iso/x.img", readwrite=False))
    assert spec == "format=raw,vdev=xvdc,access=ro,backendtype=qdisk,target=/iso/x.img"


def test_backing_files_are_read_from_qcow2_headers(tmp_path: Path) -> None:
    """Against qemu-img's own images: relative and absolute backing names, and none."""
    import subprocess

    def create(name: str, *backing: str) -> Path:
        args = ["-b", backing[0], "-F", "qcow2"] if backing else []
        path = tmp_path / name
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, path, "1M"], check=True)
        return path

    base = create("base.qcow2")
    rel = create("rel.qcow2", "base.qcow2")
    absolute = create("abs.qcow2", str(base))
    (tmp_path / "raw.img").write_bytes(b"\0" * 4096)
    assert qcow2_backing(str(rel)) == str(base)
    assert qcow2_backing(str(absolute)) == str(base)
    assert qcow2_backing(str(base)) is None
    assert qcow2_backing(str(tmp_path / "raw.img")) is None
    assert qcow2_backing(str(tmp_path / "missing")) is None
