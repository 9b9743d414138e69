"""The user's own caps, saved before the clamp changes any, so that none is ever lost.

The journal (``/var/lib/xenkit/clamp/journal.json``) holds, per domain the
clamp caps, the cap the *user* gave it: read from Xen before the clamp first
writes to that domain, and fsync'd (file and directory) before that write. It
changes only when a domain comes or goes, or when the user changes a cap while
the clamp runs (the daemon sees a cap it did not write), and each change is
fsync'd before the daemon acts on it.

What the clamp last wrote is not worth an fsync a period: it lives in the
daemon's state file under ``/run`` (a tmpfs, gone at a reboot, when every domain
is gone too). :func:`repair` reads both: a domain whose cap is still what the
clamp wrote gets the user's cap back; one whose cap differs was changed by the
user after the clamp died, and keeps it. A domain that came back with the cap
it left with (``xl save``/``restore`` keeps it, see :attr:`Journal.departed`)
gets its own cap back too. A journal from an earlier boot (dom0's
``boot_id``) names domains that no longer exist and is only discarded; so is a
domain whose UUID no longer matches its domid.

Standard library only: this runs in dom0.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xenkit.clamp.xenctl import DomainGone, XenControl
from xenkit.core.errors import OperationFailed

FORMAT = 1
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def write_file(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` with ``data`` atomically (a reader sees the old or the new file);
    ``durable`` also fsyncs the file and its directory, so a crash keeps the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, data: Any, *, durable: bool = False) -> None:
    write_file(path, (json.dumps(data, sort_keys=True) + "\n").encode(), durable=durable)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or torn."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class SavedCap:
    domid: int
    uuid: str
    #: The user's cap (0: none).
    cap: int
    name: str = ""
    #: For a domain that left while clamped: the clamp's cap it left with.
    written: int | None = None


def _saved(v: dict[str, Any]) -> SavedCap:
    written = v.get("written")
    return SavedCap(
        int(v["domid"]),
        str(v["uuid"]),
        int(v["cap"]),
        str(v.get("name", "")),
        None if written is None else int(written),
    )


@dataclass
class Journal:
    path: Path
    scheduler: str
    pool: int
    boot_id: str
    pid: int
    caps: dict[int, SavedCap] = field(default_factory=dict)
    #: By UUID: domains that left while clamped. ``xl save`` and ``xl migrate`` keep the
    #: live cap in the saved configuration (libxl_retrieve_domain_configuration reads
    #: the scheduler's parameters), so one that comes back with the clamp's cap gets
    #: its own back.
    departed: dict[str, SavedCap] = field(default_factory=dict)

    def save(self) -> None:
        """Durably: the caller writes a cap only after this returns."""
        data = {
            "format": FORMAT,
            "scheduler": self.scheduler,
            "pool": self.pool,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "caps": {str(k): asdict(v) for k, v in sorted(self.caps.items())},
            "departed": {k: asdict(v) for k, v in sorted(self.departed.items())},
        }
        write_json(self.path, data, durable=True)

    def remove(self) -> None:
        if self.path.exists():
            self.path.unlink()
            sync_dir(self.path.parent)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            if path.exists():
                raise OperationFailed(
                    f"the clamp's journal {path} is unreadable",
                    hint="it holds the users' caps: restore them by hand (xl sched-credit "
                    "-d DOMAIN -c CAP), then remove it",
                )
            return None
        return cls(
            path,
            str(data["scheduler"]),
            int(data["pool"]),
            str(data["boot_id"]),
            int(data["pid"]),
            {int(k): _saved(v) for k, v in data["caps"].items()},
            {str(k): _saved(v) for k, v in data.get("departed", {}).items()},
        )


@dataclass(frozen=True)
class Restored:
    """What :func:`repair` or a stopping daemon did for one domain."""

    domid: int
    name: str
    #: restored | kept (the user changed it) | gone | stale (earlier boot) | failed
    action: str
    cap: int
    detail: str = ""


def restore_caps(
    xen: XenControl,
    scheduler: str,
    saved: Mapping[int, SavedCap],
    written: Mapping[int, int],
) -> list[Restored]:
    """Give every saved domain its user's cap back, unless the user changed it since
    the clamp last wrote it (``written``: domid -> the clamp's last cap, where known)."""
    live = {d.domid: d for d in xen.domains()}
    done: list[Restored] = []
    for domid, s in sorted(saved.items()):
        d = live.get(domid)
        if d is None or (s.uuid and d.uuid and d.uuid != s.uuid):
            done.append(Restored(domid, s.name, "gone", s.cap))
            continue
        try:
            now = xen.sched_get(domid, scheduler).cap
            ours = written.get(domid)
            if ours is not None and now != ours:
                done.append(Restored(domid, s.name, "kept", now, "the user changed it"))
                continue
            if now != s.cap:
                xen.set_cap(domid, scheduler, s.cap)
            done.append(Restored(domid, s.name, "restored", s.cap))
        except DomainGone:
            done.append(Restored(domid, s.name, "gone", s.cap))
        except OperationFailed as exc:
            done.append(Restored(domid, s.name, "failed", s.cap, exc.message))
    return done


def restore_departed(
    xen: XenControl, scheduler: str, departed: Mapping[str, SavedCap]
) -> list[Restored]:
    """Domains that left while clamped: one that is back (same UUID) with the cap it
    left with gets its own cap; the others are reported (``left``), since a saved
    configuration of theirs may carry the clamp's cap."""
    live = {d.uuid: d for d in xen.domains() if d.uuid}
    done: list[Restored] = []
    for uuid, s in sorted(departed.items()):
        d = live.get(uuid)
        if d is None:
            detail = f"left while clamped: a saved configuration may carry cap {s.written}"
            done.append(Restored(s.domid, s.name, "left", s.cap, detail))
            continue
        try:
            if xen.sched_get(d.domid, scheduler).cap == s.written:
                xen.set_cap(d.domid, scheduler, s.cap)
                done.append(Restored(d.domid, s.name, "restored", s.cap, "came back"))
        except DomainGone:
            continue
        except OperationFailed as exc:
            done.append(Restored(d.domid, s.name, "failed", s.cap, exc.message))
    return done


def repair(
    xen: XenControl,
    path: Path,
    written: Mapping[int, int],
    *,
    boot_id: str | None = None,
) -> list[Restored]:
    """Undo what a controller that died left, from its journal at ``path`` (removed
    once every cap is back; kept if any restore failed)."""
    journal = Journal.load(path)
    if journal is None:
        return []
    if journal.boot_id != (boot_id or current_boot_id()):
        journal.remove()
        return [Restored(s.domid, s.name, "stale", s.cap) for s in journal.caps.values()]
    done = restore_caps(xen, journal.scheduler, journal.caps, written)
    done += restore_departed(xen, journal.scheduler, journal.departed)
    failed = {r.domid for r in done if r.action == "failed"}
    if failed:
        journal.caps = {k: v for k, v in journal.caps.items() if k in failed}
        journal.departed = {}
        journal.save()
    else:
        journal.remove()
    return done
