"""LVM snapshots of ``phy:`` disks served by blkback: the backend that needs no QEMU.

A thin volume gets a thin snapshot (no size to choose); a classic volume gets
a copy-on-write snapshot sized at a quarter of its origin, or what the volume
group has left if less. Reverting merges the snapshot into its origin (while
the domain is down) and takes the snapshot again, so it can be reverted to
once more.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xenkit.core.errors import OperationFailed
from xenkit.snapshot.dom0 import CommandError, Dom0

#: dom0s without udev (the lab's) need LVM to manage device nodes itself.
_NO_UDEV = ["--config", "activation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 1 }"]
MIN_COW_BYTES = 8 << 20


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    lv: str
    size: int
    segtype: str
    pool: str
    vg_free: int

    @property
    def thin(self) -> bool:
        return self.segtype == "thin"


def _lvm(command: str) -> list[str]:
    argv = [command]
    if not Path("/run/udev/control").exists():
        argv += _NO_UDEV
    return argv


def volume(dom0: Dom0, path: str) -> LogicalVolume | None:
    done = dom0.run(
        [
            *_lvm("lvs"), "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
            "-o", "vg_name,lv_name,lv_size,segtype,pool_lv,vg_free", path,
        ],
        check=False,
        timeout=60,
    )  # fmt: skip
    fields = done.stdout.strip().split("|")
    if done.returncode != 0 or len(fields) != 6:
        return None
    vg, lv, size, segtype, pool, free = (f.strip() for f in fields)
    return LogicalVolume(vg, lv, int(size), segtype, pool, int(free))


def refusal(dom0: Dom0, path: str) -> str | None:
    """Why ``path`` cannot get an LVM snapshot, or None if it can."""
    if not Path(path).exists():
        return "it does not exist"
    lv = volume(dom0, path)
    if lv is None:
        return "it is not an LVM logical volume"
    if not lv.thin and min(lv.size // 4, lv.vg_free) < MIN_COW_BYTES:
        return (
            f"volume group {lv.vg} has {lv.vg_free >> 20} MiB free, too little for a "
            "copy-on-write snapshot"
        )
    return None


def snapshot_lv_path(origin: str, name: str) -> str:
    """``/dev/vg/web`` → ``/dev/vg/web.<name>``."""
    p = Path(origin)
    return str(p.with_name(f"{p.name}.{name}"))


def create_snapshot(dom0: Dom0, origin: str, target: str) -> None:
    lv = volume(dom0, origin)
    if lv is None:
        raise OperationFailed(f"{origin} is no longer an LVM logical volume")
    name = Path(target).name
    argv = [*_lvm("lvcreate"), "-q", "-s", "-n", name]
    if lv.thin:
        argv += ["-kn", "-ay"]
    else:
        argv += ["-L", f"{max(MIN_COW_BYTES, min(lv.size // 4, lv.vg_free))}b"]
    dom0.run([*argv, origin], timeout=300)


def revert(dom0: Dom0, *, origin: str, snapshot: str) -> None:
    """Return ``origin`` to ``snapshot`` (the domain must be down), keeping the snapshot."""
    dom0.run([*_lvm("lvconvert"), "-q", "--merge", snapshot], timeout=3600)
    create_snapshot(dom0, origin, snapshot)


def remove(dom0: Dom0, snapshot: str) -> None:
    try:
        dom0.run([*_lvm("lvremove"), "-q", "-f", snapshot], timeout=300)
    except CommandError as exc:
        if Path(snapshot).exists():
            raise
        del exc
