"""``snapshot verify``: the records checked against the images, and what can be repaired.

A problem is either repairable (a create that was killed half-way, a stale
"current", a leftover block job, an overlay that nothing uses) or explained
(an image that was deleted or moved by hand): then the record stays, and the
message says which file is missing and what it meant.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xenkit.core.errors import OperationFailed
from xenkit.snapshot.engine import referenced_images, stem_of
from xenkit.snapshot.model import Snapshot
from xenkit.snapshot.store import SnapshotStore

if TYPE_CHECKING:
    from xenkit.snapshot.dom0 import DomainView
    from xenkit.snapshot.engine import SnapshotEngine


@dataclass
class Problem:
    snapshot: str | None
    message: str
    repairable: bool
    repaired: bool = False


@dataclass
class Report:
    domain_uuid: str
    checked: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "domain_uuid": self.domain_uuid,
            "checked": self.checked,
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
        }


def verify(engine: SnapshotEngine, ref: str, *, repair: bool = False) -> Report:
    store, view = engine.store_for(ref)
    with store.locked():
        snaps = store.all()
        report = Report(store.domain_uuid, len(snaps))
        active = {d.path for d in view.disks} if view is not None else set()
        deleting: list[Problem] = []
        for s in snaps:
            if s.extra.get("state") == "creating":
                _unfinished(engine, store, s, active, report, repair)
                continue
            if s.extra.get("state") == "deleting":
                message = "a delete stopped during its merge (--repair finishes it)"
                deleting.append(Problem(s.name, message, True))
                continue
            _check_disks(engine, s, report)
        _check_jobs(engine, view, report, repair)
        _check_current(store, report, repair)
        _check_orphans(engine, store, view, report, repair)
    report.problems += deleting
    if repair:
        for p in deleting:
            assert p.snapshot is not None
            engine.delete(ref, p.snapshot)  # takes the lock itself
            p.repaired = True
    return report


def _unfinished(
    engine: SnapshotEngine,
    store: SnapshotStore,
    s: Snapshot,
    active: set[str],
    report: Report,
    repair: bool,
) -> None:
    taken = [d for d in s.disks if d.kind == "external" and d.overlay in active]
    if taken and len(taken) == sum(1 for d in s.disks if d.kind == "external"):
        p = Problem(s.name, "created, but the command stopped before recording it", True)
        if repair:
            extra = dict(s.extra)
            extra.pop("state", None)
            store.put(replace(s, extra=extra))
            store.set_current(s.name)
            p.repaired = True
    else:
        p = Problem(s.name, "a create that never happened (stopped before the disks were)", True)
        if repair:
            for d in s.disks:
                if d.kind == "external" and d.overlay and d.overlay not in active:
                    Path(d.overlay).unlink(missing_ok=True)
                if d.kind == "internal" and s.name in _tags(engine, d.image):
                    engine.dom0.run(["qemu-img", "snapshot", "-d", s.name, d.image])
            if s.memory:
                Path(s.memory).unlink(missing_ok=True)
            store.remove(s.name)
            p.repaired = True
    report.problems.append(p)


def _tags(engine: SnapshotEngine, image: str) -> list[str]:
    with contextlib.suppress(OperationFailed, ValueError):
        return engine.dom0.internal_tags(image)
    return []


def _check_disks(engine: SnapshotEngine, s: Snapshot, report: Report) -> None:
    for d in s.disks:
        if d.kind != "lvm" and not Path(d.image).exists():
            report.problems.append(
                Problem(s.name, f"disk {d.vdev}: its image {d.image} is gone", False)
            )
            continue
        if d.kind == "internal" and s.name not in _tags(engine, d.image):
            report.problems.append(
                Problem(
                    s.name, f"disk {d.vdev}: {d.image} has no internal snapshot {s.name}", False
                )
            )
        if d.kind == "external" and d.overlay:
            if not Path(d.overlay).exists():
                continue
            backing = engine.dom0.backing_of(d.overlay)
            if backing != d.image:
                report.problems.append(
                    Problem(
                        s.name,
                        f"disk {d.vdev}: {d.overlay} is backed by {backing}, not {d.image}",
                        False,
                    )
                )
        if d.kind == "lvm" and not Path(d.image).exists():
            report.problems.append(
                Problem(s.name, f"disk {d.vdev}: the snapshot volume {d.image} is gone", False)
            )
    if s.memory and not Path(s.memory).exists():
        report.problems.append(Problem(s.name, f"its memory file {s.memory} is gone", False))


def _check_jobs(
    engine: SnapshotEngine, view: DomainView | None, report: Report, repair: bool
) -> None:
    if view is None or not any(d.backend == "qdisk" for d in view.disks):
        return
    with contextlib.suppress(OperationFailed), engine.dom0.qmp(view.domid) as qmp:
        for job in qmp.execute("query-block-jobs"):
            device = str(job.get("device", ""))
            if not device.startswith("xk-"):
                continue
            p = Problem(None, f"block job {device} left running by a stopped command", True)
            if repair:
                qmp.execute("block-job-cancel", {"device": device, "force": True})
                p.repaired = True
            report.problems.append(p)


def _check_current(store: SnapshotStore, report: Report, repair: bool) -> None:
    raw = store.recorded_current()
    if raw is not None and not store.exists(raw):
        p = Problem(None, f"the current snapshot {raw!r} does not exist", True)
        if repair:
            store.set_current(None)
            p.repaired = True
        report.problems.append(p)


def _check_orphans(
    engine: SnapshotEngine,
    store: SnapshotStore,
    view: DomainView | None,
    report: Report,
    repair: bool,
) -> None:
    """Overlays xenkit made (``<disk>.<snapshot>.qcow2``, ``<disk>.<snapshot>-<hex>.qcow2``)
    that no record, no running disk and no other image's backing chain uses."""
    snaps = store.all()
    used = referenced_images(snaps)
    if view is not None:
        used |= {d.path for d in view.disks}
    names = "|".join(re.escape(s.name) for s in snaps)
    if not names:
        return
    ours = re.compile(rf"(?:{names})(?:-[0-9a-f]{{6}})?")
    stems = {(Path(u).parent, stem_of(u).name) for u in used}
    backing = {engine.dom0.backing_of(u) for u in used if Path(u).exists()}
    for directory, stem in sorted(stems):
        for f in sorted(directory.glob(f"{stem}.*.qcow2")):
            path = str(f)
            middle = f.name[len(stem) + 1 : -len(".qcow2")]
            if path in used or path in backing or not ours.fullmatch(middle):
                continue
            p = Problem(None, f"{path} is an overlay no snapshot and no domain uses", True)
            if repair:
                f.unlink(missing_ok=True)
                p.repaired = True
            report.problems.append(p)
