"""Snapshots of running xl domains: create, list, revert, delete.

All of a domain's chosen disks are snapshotted by one QMP ``transaction`` (all
or nothing), with the domain paused only around it. A checkpoint adds the
memory: ``xl save -p`` suspends the guest, writes its memory and leaves it
paused exactly there, the disks are snapshotted while it cannot write, and the
domain goes on. External snapshots freeze the image the domain was writing and
give it a new qcow2 overlay; libxl's records (xenstore ``params`` and the stored
configuration) are pointed at the overlay so that ``xl save``, migrate and reboot
use it too.

Every step that changes something is recorded first (``state: creating`` in
the snapshot's record), so a command killed half-way leaves a record that
``verify`` finishes or rolls back.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.host.qmp import Qmp, QmpError, QmpUnavailable
from xenkit.snapshot import lvm
from xenkit.snapshot.dom0 import Dom0, DomainView, disks_of, wait_for_job
from xenkit.snapshot.model import Disk, DiskKind, DiskSnapshot, Snapshot, check_name
from xenkit.snapshot.store import DEFAULT_ROOT, SnapshotStore, tree_lines
from xenkit.snapshot.xlcfg import xlcfg_from_libxl

Mode = Literal["external", "internal"]
#: Space an operation wants free beyond what it writes (overlays start small).
HEADROOM = 64 << 20


class SnapshotRefused(UsageError):
    """A disk cannot be snapshotted the way asked."""


@dataclass(frozen=True)
class Plan:
    disk: Disk
    kind: DiskKind
    #: external: the overlay to create; lvm: the snapshot LV.
    target: str | None = None


def stem_of(path: str) -> Path:
    """``/images/web.s1.qcow2`` → ``/images/web``: the name xenkit's overlays share."""
    p = Path(path)
    return p.with_name(p.name.split(".", 1)[0])


def overlay_path(active: str, name: str) -> str:
    """``/images/web.qcow2`` → ``/images/web.<name>.qcow2`` (and the same for overlays)."""
    return str(stem_of(active)) + f".{name}.qcow2"


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


class SnapshotEngine:
    def __init__(self, dom0: Dom0 | None = None, *, root: Path = DEFAULT_ROOT) -> None:
        self.dom0 = dom0 or Dom0()
        self.root = root
        #: Overlay nodes opened for a create still in progress (closed if it fails).
        self._added: list[tuple[int, str]] = []
        #: What the last revert's xl.cfg could not carry over from libxl's record.
        self.last_dropped: list[str] = []
        #: Disks a delete moved to another image (vdev -> image), for its clean-up.
        self._pivots: dict[str, str] = {}

    # -- finding the domain ---------------------------------------------------

    def running(self, ref: str) -> DomainView:
        view = self.dom0.domain(ref, exact=True)
        if view is None:
            raise UsageError(
                f"no running domain {ref!r}",
                hint="xl list shows the running domains; snapshots are taken of running ones",
            )
        return view

    def store_for(self, ref: str) -> tuple[SnapshotStore, DomainView | None]:
        """The store of domain ``ref``: running (name or domid), or known by the name or
        UUID its snapshots recorded."""
        view = self.dom0.domain(ref)
        if view is not None:
            return SnapshotStore(view.uuid, self.root, label=view.name), view
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                store = SnapshotStore(d.name, self.root, label=ref)
                if d.name == ref:
                    return store, None
                with contextlib.suppress(OperationFailed, UsageError):
                    if any(s.domain_name == ref for s in store.all()):
                        return store, None
        raise UsageError(
            f"no domain {ref!r}: not running, and no snapshots recorded for it",
            hint="name a running domain (xl list), or one that has snapshots",
        )

    # -- planning --------------------------------------------------------------

    def plan(
        self, view: DomainView, name: str, mode: Mode | None, vdevs: Sequence[str] | None
    ) -> list[Plan]:
        chosen = [view.disk(v) for v in vdevs] if vdevs else [d for d in view.disks if d.readwrite]
        if not chosen:
            raise SnapshotRefused(
                f"domain {view.name} has no writable disk to snapshot",
                hint="name the disks with --disk",
            )
        plans = []
        for disk in chosen:
            plans.append(self._plan_disk(view, disk, name, mode))
        return plans

    def _plan_disk(self, view: DomainView, disk: Disk, name: str, mode: Mode | None) -> Plan:
        if disk.backend == "qdisk":
            kind: DiskKind = mode or "external"
            if kind == "internal" and disk.format != "qcow2":
                raise SnapshotRefused(
                    f"disk {disk.vdev} of {view.name} is {disk.format}: internal snapshots "
                    "live inside qcow2 images",
                    hint="use --external (a qcow2 overlay works over any format)",
                )
            if kind == "internal":
                if name in self.dom0.internal_tags(disk.path):
                    raise SnapshotRefused(
                        f"{disk.path} already has an internal snapshot {name!r}",
                        hint="choose another name",
                    )
                return Plan(disk, "internal")
            target = overlay_path(disk.path, name)
            if Path(target).exists():
                raise SnapshotRefused(
                    f"the overlay for disk {disk.vdev} would be {target}, which exists",
                    hint="choose another snapshot name, or remove the stale file "
                    "(xenkit snapshot verify lists files no snapshot uses)",
                )
            return Plan(disk, "external", target)
        if disk.backend == "phy":
            if mode == "internal":
                raise SnapshotRefused(
                    f"disk {disk.vdev} of {view.name} is a block device served by blkback: "
                    "it has no internal snapshots",
                    hint="leave out --internal: an LVM volume is snapshotted by LVM",
                )
            reason = lvm.refusal(self.dom0, disk.path)
            if reason is not None:
                raise SnapshotRefused(
                    f"disk {disk.vdev} of {view.name} ({disk.path}) cannot be snapshotted: "
                    + reason,
                    hint="blkback disks can be snapshotted when they are LVM logical volumes",
                )
            return Plan(disk, "lvm", lvm.snapshot_lv_path(disk.path, name))
        raise SnapshotRefused(
            f"disk {disk.vdev} of {view.name} uses the {disk.backend} backend, which xenkit "
            "cannot snapshot",
            hint="qdisk (QEMU) disks and LVM volumes on blkback can be snapshotted",
        )

    def _check_space(self, plans: list[Plan], memory_bytes: int, memory: Path | None) -> None:
        wanted: dict[Path, int] = {}
        for p in plans:
            if p.kind == "external" and p.target:
                d = Path(p.target).parent
                wanted[d] = wanted.get(d, 0) + HEADROOM
        if memory_bytes and memory is not None:
            memory.parent.mkdir(parents=True, exist_ok=True)
            d = memory.parent
            wanted[d] = wanted.get(d, 0) + memory_bytes + HEADROOM
        for directory, need in wanted.items():
            free = _free_bytes(directory)
            if free < need:
                raise OperationFailed(
                    f"{directory} has {free >> 20} MiB free; the snapshot needs about "
                    f"{need >> 20} MiB there",
                    hint="free some space (or delete old snapshots) and try again",
                )

    # -- create ----------------------------------------------------------------

    def create(
        self,
        ref: str,
        name: str | None = None,
        *,
        disk_only: bool = False,
        mode: Mode | None = None,
        vdevs: Sequence[str] | None = None,
        description: str = "",
        memory_file: Path | None = None,
    ) -> Snapshot:
        view = self.running(ref)
        store = SnapshotStore(view.uuid, self.root, label=view.name)
        name = check_name(name or time.strftime("snap-%Y%m%d-%H%M%S"))
        with store.locked():
            if store.exists(name):
                raise UsageError(
                    f"domain {view.name} already has a snapshot {name!r}",
                    hint="choose another name, or delete the old one first",
                )
            plans = self.plan(view, name, mode, vdevs)
            memory = None if disk_only else (memory_file or store.memory_path(name))
            if memory is not None and memory.exists():
                raise UsageError(
                    f"{memory} exists", hint="give another file, or remove this one first"
                )
            mem_bytes = int(view.config.get("b_info", {}).get("max_memkb", 0)) * 1024
            self._check_space(plans, mem_bytes if memory else 0, memory)
            parent = store.current()
            draft = Snapshot(
                name=name,
                domain_uuid=view.uuid,
                domain_name=view.name,
                created=time.time(),
                parent=parent,
                disks=tuple(self._record(p) for p in plans),
                description=description,
                memory=str(memory) if memory else None,
                extra={"state": "creating", "libxl_config": view.config},
            )
            store.put(draft)
            store.own(*(p.target for p in plans if p.kind == "external" and p.target))
            try:
                paused = self._take(view, plans, name, memory)
            except BaseException:
                self._roll_back(view, plans, memory)
                store.remove(name)
                raise
            self._added.clear()
            for p in plans:
                if p.kind == "external" and p.target:
                    self.dom0.point_disk_at(view, p.disk.vdev, p.target, "qcow2")
            done = replace(draft, paused_seconds=round(paused, 4), extra={**draft.extra})
            done.extra.pop("state", None)
            store.put(done)
            store.set_current(name)
            return done

    def _record(self, p: Plan) -> DiskSnapshot:
        if p.kind == "external":
            return DiskSnapshot(
                p.disk.vdev, "external", p.disk.format, p.disk.path, overlay=p.target
            )
        if p.kind == "internal":
            return DiskSnapshot(p.disk.vdev, "internal", "qcow2", p.disk.path, tag=None)
        return DiskSnapshot(p.disk.vdev, "lvm", "raw", p.target or "", overlay=p.disk.path)

    def _take(self, view: DomainView, plans: list[Plan], name: str, memory: Path | None) -> float:
        """Snapshot the disks (and memory); seconds the guest was held.

        QEMU's transaction alone is atomic across the qdisk disks: it drains their
        I/O, switches them all, and lets I/O go on, while the vCPUs keep running. The
        domain is paused only when blkback (LVM) disks must share that instant. For a
        checkpoint, ``xl save -p`` leaves it suspended and paused, which covers both.
        """
        actions = self._actions(view, plans, name)
        lvm_plans = [p for p in plans if p.kind == "lvm" and p.target]
        start = time.monotonic()
        if memory is not None:
            self.dom0.save_paused(view.domid, memory)
        elif lvm_plans:
            self.dom0.pause(view.domid)
        held = memory is not None or bool(lvm_plans)
        try:
            if actions:
                with self.dom0.qmp(view.domid) as qmp:
                    if not held:
                        start = time.monotonic()
                    qmp.execute("transaction", {"actions": actions})
                    if not held:
                        return time.monotonic() - start
            for p in lvm_plans:
                lvm.create_snapshot(self.dom0, p.disk.path, p.target or "")
        finally:
            if held:
                self.dom0.unpause(view.domid)
        return time.monotonic() - start

    def _actions(self, view: DomainView, plans: list[Plan], name: str) -> list[dict[str, Any]]:
        """The transaction's actions. An external snapshot's overlay is created and
        opened first (``blockdev-add``), so the held instant only switches nodes."""
        qdisk = [p for p in plans if p.kind in ("external", "internal")]
        if not qdisk:
            return []
        actions: list[dict[str, Any]] = []
        with self.dom0.qmp(view.domid) as qmp:
            blocks = {b.file: b for b in qmp.query_block() if b.file}
            for p in qdisk:
                block = blocks.get(p.disk.path)
                if block is None or not block.node_name:
                    raise OperationFailed(
                        f"the QEMU of {view.name} has no block node for {p.disk.path} "
                        f"(disk {p.disk.vdev})",
                        hint="libxl's record and QEMU disagree; xenkit snapshot verify explains",
                    )
                if p.kind == "internal":
                    data: dict[str, Any] = {"device": block.node_name, "name": name}
                    actions.append({"type": "blockdev-snapshot-internal-sync", "data": data})
                    continue
                size = block.image.virtual_size if block.image else 0
                fmt = block.image.format if block.image else p.disk.format
                self.dom0.run(
                    [
                        "qemu-img", "create", "-q", "-f", "qcow2", "-u",
                        "-b", p.disk.path, "-F", fmt, p.target or "", str(size),
                    ]
                )  # fmt: skip
                node = f"xk{os.urandom(6).hex()}"
                qmp.execute(
                    "blockdev-add",
                    {
                        "driver": "qcow2",
                        "node-name": node,
                        "file": {"driver": "file", "filename": p.target, "locking": "off"},
                        "backing": None,
                    },
                )
                self._added.append((view.domid, node))
                data = {"node": block.node_name, "overlay": node}
                actions.append({"type": "blockdev-snapshot", "data": data})
        return actions

    def _roll_back(self, view: DomainView, plans: list[Plan], memory: Path | None) -> None:
        """After a failed create: the transaction was all or nothing, so only files that
        no QEMU writes to are removed (overlays opened for it are closed first)."""
        for domid, node in self._added:
            with contextlib.suppress(OperationFailed, OSError), self.dom0.qmp(domid) as q:
                if node not in {b.node_name for b in q.query_block()}:
                    q.execute("blockdev-del", {"node-name": node})
        self._added.clear()
        with contextlib.suppress(OperationFailed, OSError):
            current = self.dom0.domain(str(view.domid))
            in_use = {d.path for d in current.disks} if current else set()
            with contextlib.suppress(OperationFailed, OSError), self.dom0.qmp(view.domid) as q:
                in_use |= set(top_nodes(q))
            for p in plans:
                if p.kind == "external" and p.target and p.target not in in_use:
                    Path(p.target).unlink(missing_ok=True)
        if memory is not None:
            memory.unlink(missing_ok=True)

    # -- save and restore ----------------------------------------------------

    def save(self, ref: str, file: Path, *, keep_running: bool = False) -> Snapshot:
        """``xl save`` with the disks: a checkpoint whose memory is ``file``, the disks
        snapshotted at the moment the memory was saved; then the domain is destroyed
        (as ``xl save`` does) unless ``keep_running``."""
        file = file.absolute()
        view = self.running(ref)
        stem = re.sub(r"[^A-Za-z0-9._+-]", "-", file.name.split(".", 1)[0])[:40] or "file"
        name = check_name(f"save-{stem}")
        if SnapshotStore(view.uuid, self.root).exists(name):
            name = f"{name}-{os.urandom(2).hex()}"
        snap = self.create(ref, name, description="xenkit save", memory_file=file)
        if not keep_running:
            self.dom0.destroy(view.domid)
        return snap

    def restore(self, file: Path) -> Snapshot:
        """Bring back what ``save`` wrote to ``file``: its memory and its disks."""
        file = file.absolute()
        for store in self._stores():
            for s in store.all():
                if s.memory == str(file):
                    running = self.dom0.domain(s.domain_name)
                    same = running is not None and running.uuid == s.domain_uuid
                    return self.revert(s.domain_name if same else s.domain_uuid, s.name)
        raise UsageError(
            f"{file} is not a save xenkit knows of",
            hint="xenkit restore takes files written by xenkit save; "
            "for a plain xl save file use xl restore",
        )

    def _stores(self) -> list[SnapshotStore]:
        if not self.root.is_dir():
            return []
        return [SnapshotStore(d.name, self.root) for d in sorted(self.root.iterdir())]

    # -- list and info -------------------------------------------------------

    def snapshots(self, ref: str) -> tuple[SnapshotStore, list[Snapshot], str | None]:
        store, _ = self.store_for(ref)
        return store, store.all(), store.current()

    def tree(self, ref: str) -> list[str]:
        _, snapshots, current = self.snapshots(ref)
        return tree_lines(snapshots, current)

    # -- revert --------------------------------------------------------------

    def revert(self, ref: str, name: str) -> Snapshot:
        store, view = self.store_for(ref)
        with store.locked():
            snap = store.get(name)
            if snap.extra.get("state") in ("creating", "deleting"):
                what = (
                    "was never finished"
                    if snap.extra["state"] == "creating"
                    else ("is half deleted (a delete stopped during its merge)")
                )
                raise OperationFailed(
                    f"snapshot {name!r} {what}",
                    hint="xenkit snapshot verify --repair finishes or removes it",
                )
            if view is not None:
                self._refuse_if_jobs(view)
            config = snap.extra.get("libxl_config")
            if not isinstance(config, dict):
                raise OperationFailed(f"snapshot {name!r} has no domain configuration recorded")
            base_disks = {d.vdev: d for d in disks_of(config)}
            new_active: dict[str, str] = {}
            for d in snap.disks:
                if d.kind == "external":
                    new_active[d.vdev] = revert_overlay_path(d.image, name)
                    if Path(new_active[d.vdev]).exists():
                        Path(new_active[d.vdev]).unlink()
            if view is not None:
                old_active = {d.vdev: d.path for d in view.disks}
                self.dom0.destroy(view.domid)
            else:
                old_active = {}
            for d in snap.disks:
                if d.kind == "external":
                    self.dom0.run(
                        [
                            "qemu-img", "create", "-q", "-f", "qcow2",
                            "-b", d.image, "-F", d.format, new_active[d.vdev],
                        ]
                    )  # fmt: skip
                elif d.kind == "internal":
                    self.dom0.run(["qemu-img", "snapshot", "-a", name, d.image])
                else:
                    lvm.revert(self.dom0, origin=d.overlay or "", snapshot=d.image)
            disks = []
            for vdev, disk in base_disks.items():
                if vdev in new_active:
                    disk = replace(disk, path=new_active[vdev], format="qcow2")
                disks.append(disk)
            cfg = xlcfg_from_libxl(config, disks)
            self.last_dropped = cfg.dropped
            cfg_path = store.dir / f".revert-{name}.cfg"
            cfg_path.write_text(cfg.text)
            store.own(*new_active.values())
            if snap.memory:
                self.dom0.restore(cfg_path, Path(snap.memory))
            else:
                self.dom0.create(cfg_path)
            cfg_path.unlink(missing_ok=True)
            # The present the domain left is gone; the snapshot's point now leads to
            # the new overlay.
            abandoned = set(old_active.values())
            now = tuple(
                replace(d, overlay=new_active[d.vdev]) if d.vdev in new_active else d
                for d in snap.disks
            )
            for d in snap.disks:
                if d.overlay:
                    abandoned.add(d.overlay)
            snap = replace(snap, disks=now)
            store.put(snap)
            for other in store.all():
                if other.name != name and any(x.overlay in abandoned for x in other.disks):
                    store.put(
                        replace(
                            other,
                            disks=tuple(
                                replace(x, overlay=None) if x.overlay in abandoned else x
                                for x in other.disks
                            ),
                        )
                    )
            store.set_current(name)
            self.collect(store, set(new_active.values()))
            return snap

    def _refuse_if_jobs(self, view: DomainView) -> None:
        if not any(d.backend == "qdisk" for d in view.disks):
            return
        # No QMP answer means no QEMU to run a job (the revert then stops it anyway).
        with contextlib.suppress(QmpUnavailable):
            self.dom0.refuse_if_jobs(
                view, doing="reverting", hint="wait for it to finish (or cancel it) first"
            )

    def collect(self, store: SnapshotStore, active: set[str]) -> list[str]:
        """Delete the overlays xenkit made that nothing needs any more: no record names
        them, no domain writes to them, no other image is backed by them. Files
        xenkit did not make are never touched."""
        removed: list[str] = []
        while True:
            owned = {p for p in store.owned() if Path(p).exists()}
            used = referenced_images(store.all()) | active
            backing = {self.dom0.backing_of(p) for p in owned | used if Path(p).exists()}
            garbage = sorted(owned - used - backing)
            if not garbage:
                store.disown(*(p for p in store.owned() if not Path(p).exists()))
                return removed
            for path in garbage:
                Path(path).unlink(missing_ok=True)
                removed.append(path)
            store.disown(*garbage)

    # -- delete --------------------------------------------------------------

    def delete(self, ref: str, name: str) -> Snapshot:
        store, view = self.store_for(ref)
        with store.locked():
            snap = store.get(name)
            # A merge changes the snapshot's own image first: until the record goes,
            # it says the snapshot is no longer what it was (verify finishes it).
            if any(d.kind == "external" for d in snap.disks):
                store.put(replace(snap, extra={**snap.extra, "state": "deleting"}))
            others = [s for s in store.all() if s.name != name]
            for d in snap.disks:
                if d.kind == "internal":
                    self._delete_internal(view, d, name)
                elif d.kind == "external":
                    others = self._merge_external(view, d, others, store)
                else:
                    lvm.remove(self.dom0, d.image)
            for child in others:
                if child.parent == name:
                    child = replace(child, parent=snap.parent)
                store.put(child)
            if snap.memory:
                Path(snap.memory).unlink(missing_ok=True)
            store.remove(name)
            if store.recorded_current() == name:
                store.set_current(snap.parent)
            # A merge of the active layer moved the domain to the image below it.
            active = {x.vdev: x.path for x in view.disks} if view is not None else {}
            active.update(self._pivots)
            self._pivots.clear()
            self.collect(store, set(active.values()))
            return snap

    def _delete_internal(self, view: DomainView | None, d: DiskSnapshot, name: str) -> None:
        if view is not None and any(x.path == d.image for x in view.disks):
            with self.dom0.qmp(view.domid) as qmp:
                node = top_nodes(qmp).get(d.image)
                if node is not None:
                    qmp.execute(
                        "blockdev-snapshot-delete-internal-sync", {"device": node, "name": name}
                    )
                    return
        if name in self.dom0.internal_tags(d.image):
            self.dom0.run(["qemu-img", "snapshot", "-d", name, d.image])

    def _merge_external(
        self,
        view: DomainView | None,
        d: DiskSnapshot,
        others: list[Snapshot],
        store: SnapshotStore,
    ) -> list[Snapshot]:
        """Take snapshot point ``d.image`` out of the chain without changing what any
        other snapshot or the running domain reads.

        The frozen image F has the overlay O on top. If O is F's only child, O is
        committed into F (a running domain's QEMU does it live) and F takes O's place;
        if F has other children (the domain was reverted to this point), F stays
        as their shared base and only the record goes."""
        frozen = d.image
        if not Path(frozen).exists():
            return others
        if view is not None and any(x.backend == "qdisk" for x in view.disks):
            with self.dom0.qmp(view.domid) as qmp:
                release_dropped(qmp)
        children = self._backed_by(frozen, store, others, view)
        if len(children) != 1:
            return others
        (overlay,) = children
        recorded = {x.vdev: x.path for x in view.disks} if view is not None else {}
        chain = self._qemu_chain(view, frozen)
        if chain:
            assert view is not None
            if overlay in chain:
                self._commit_live(view, d.vdev, top=overlay, base=frozen, active=chain[0])
                chain = chain[chain.index(overlay) + 1 :]
            # Else a delete stopped after its pivot: QEMU writes below the overlay.
            if recorded.get(d.vdev) == overlay:
                self.dom0.point_disk_at(view, d.vdev, chain[0], d.format)
                self._pivots[d.vdev] = chain[0]
        else:
            self.dom0.run(["qemu-img", "commit", "-q", "-d", overlay], timeout=7200)
            for path in self._backed_by(overlay, store, others, view):
                self.dom0.run(["qemu-img", "rebase", "-u", "-b", frozen, "-F", d.format, path])
        moved = []
        for s in others:
            disks = tuple(
                replace(
                    x,
                    image=frozen if x.image == overlay else x.image,
                    overlay=frozen if x.overlay == overlay else x.overlay,
                )
                for x in s.disks
            )
            if disks != s.disks:
                s = replace(s, disks=disks)
                store.put(s)  # before the overlay goes: a cut delete can still find it
            moved.append(s)
        if overlay in store.owned():
            Path(overlay).unlink(missing_ok=True)
            store.disown(overlay)
        return moved

    def _backed_by(
        self, image: str, store: SnapshotStore, others: list[Snapshot], view: DomainView | None
    ) -> list[str]:
        """The files whose backing file is ``image``, among those any record, the
        running domain or the store knows."""
        candidates = referenced_images(others) | store.owned()
        if view is not None:
            candidates.update(x.path for x in view.disks)
        return sorted(
            p
            for p in candidates
            if p != image and Path(p).exists() and self.dom0.backing_of(p) == image
        )

    def _qemu_chain(self, view: DomainView | None, image: str) -> list[str]:
        """The chain (top first) in which the domain's QEMU reads ``image``, as QEMU
        has it (libxl's records can lag behind it when a command was cut short);
        empty when no running QEMU reads it."""
        if view is None or not any(x.backend == "qdisk" for x in view.disks):
            return []
        with self.dom0.qmp(view.domid) as qmp:
            blocks = qmp.query_block()
        for block in blocks:
            chain: list[str] = []
            node = block.image
            while node is not None:
                chain.append(node.filename)
                node = node.backing
            if image in chain:
                return chain
        return []

    def _commit_live(
        self, view: DomainView, vdev: str, *, top: str, base: str, active: str | None
    ) -> None:
        job = f"xk-commit-{vdev}"
        with self.dom0.qmp(view.domid, timeout=120) as qmp:
            nodes = node_names(qmp)
            tops = top_nodes(qmp)
            device = tops.get(active or "")
            if device is None or base not in nodes:
                missing = base if base not in nodes else active
                raise OperationFailed(f"the QEMU of {view.name} has no node for {missing}")
            args: dict[str, Any] = {"job-id": job, "device": device, "base-node": nodes[base]}
            if top != active:
                args["top-node"] = nodes[top]
            qmp.execute("block-commit", args)
            if top == active:
                wait_for_job(qmp, job, want="ready", timeout=7200)
                qmp.execute("block-job-complete", {"device": job})
            wait_for_job(qmp, job, want="concluded", timeout=7200)
            with contextlib.suppress(QmpError):
                qmp.execute("job-dismiss", {"id": job})
            release_dropped(qmp)


def revert_overlay_path(frozen: str, name: str) -> str:
    """A fresh overlay over snapshot ``name``'s frozen image for a reverted domain."""
    return str(stem_of(frozen)) + f".{name}-{os.urandom(3).hex()}.qcow2"


def referenced_images(snapshots: list[Snapshot]) -> set[str]:
    used: set[str] = set()
    for s in snapshots:
        for d in s.disks:
            used.update(p for p in (d.image, d.overlay) if p)
    return used


def top_nodes(qmp: Qmp) -> dict[str, str]:
    """The node each attached image is the top of, by its file name."""
    tops = {}
    for block in qmp.query_block():
        if block.file and block.node_name:
            tops[block.file] = block.node_name
    return tops


def release_dropped(qmp: Qmp) -> list[str]:
    """Close the overlay nodes xenkit opened (``blockdev-add``) that a merge took out
    of every disk's chain: QEMU keeps a node the monitor added until it is deleted,
    with its file open and its backing held. Topmost first, until none is left."""
    in_use: set[str] = set()
    for block in qmp.query_block():
        image = block.image
        while image is not None:
            in_use.add(image.filename)
            image = image.backing
    released: list[str] = []
    progress = True
    while progress:
        progress = False
        for node in qmp.named_block_nodes():
            if not node.node_name.startswith("xk") or node.file in in_use:
                continue
            try:
                qmp.execute("blockdev-del", {"node-name": node.node_name})
            except QmpError:
                continue
            released.append(node.node_name)
            progress = True
    return released


def node_names(qmp: Qmp) -> dict[str, str]:
    """Format nodes by the file they open (the first, topmost, for each file)."""
    found: dict[str, str] = {}
    for node in qmp.named_block_nodes():
        if node.drv in ("file", "host_device", "host_cdrom"):
            continue
        if node.file and node.file not in found:
            found[node.file] = node.node_name
    return found
