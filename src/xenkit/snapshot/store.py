"""Snapshot metadata on the host: one JSON file per snapshot, per domain UUID.

``/var/lib/xenkit/snapshots/<uuid>/`` holds ``records/<name>.json`` for every
snapshot, ``current.json`` (the snapshot the domain's disks now descend from,
the parent of the next one), ``files.json`` (the overlays xenkit made there,
the only files it ever deletes), checkpoints' memory files, and a lock, so
two commands on one domain never interleave.
Files are replaced atomically (write, fsync, rename): a command killed half-way
leaves the old record or the new, never half of one. Keyed by UUID, not domid
or name: both change across reboots, restores and migrations.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.snapshot.model import Snapshot, check_name

DEFAULT_ROOT = Path("/var/lib/xenkit/snapshots")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class SnapshotStore:
    def __init__(
        self, domain_uuid: str, root: Path = DEFAULT_ROOT, *, label: str | None = None
    ) -> None:
        self.domain_uuid = domain_uuid
        self.dir = root / domain_uuid
        #: How messages name the domain (its name when known).
        self.label = label or domain_uuid

    # -- files -------------------------------------------------------------

    @property
    def records(self) -> Path:
        return self.dir / "records"

    def path(self, name: str) -> Path:
        return self.records / f"{check_name(name)}.json"

    def memory_path(self, name: str) -> Path:
        """Where a checkpoint's ``xl save`` file goes."""
        return self.dir / f"{check_name(name)}.save"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".lock").open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OperationFailed(
                    f"another snapshot command is working on domain {self.label}",
                    hint="wait for it to finish, then try again",
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- records -----------------------------------------------------------

    def names(self) -> list[str]:
        if not self.records.is_dir():
            return []
        return sorted(p.stem for p in self.records.glob("*.json"))

    def all(self) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        found = [self.get(n) for n in self.names()]
        return sorted(found, key=lambda s: (s.created, s.name))

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def get(self, name: str) -> Snapshot:
        path = self.path(name)
        try:
            return Snapshot.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise UsageError(
                f"domain {self.label} has no snapshot {name!r}",
                hint=f"its snapshots: {known}",
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise OperationFailed(
                f"the record of snapshot {name!r} ({path}) is damaged: {exc}",
                hint="xenkit snapshot verify explains and repairs what it can",
            ) from exc

    def put(self, snapshot: Snapshot) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(snapshot.name), json.dumps(snapshot.to_json(), indent=1) + "\n")

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    # -- the current snapshot --------------------------------------------------

    def recorded_current(self) -> str | None:
        """What ``current.json`` says, whether or not that snapshot still exists."""
        try:
            value = json.loads((self.dir / "current.json").read_text()).get("current")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def current(self) -> str | None:
        value = self.recorded_current()
        return value if value is not None and self.exists(value) else None

    def set_current(self, name: str | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / "current.json", json.dumps({"current": name}) + "\n")

    # -- the files xenkit made ----------------------------------------------

    def owned(self) -> set[str]:
        """Overlays this store's commands created: the only files they may delete."""
        try:
            data = json.loads((self.dir / "files.json").read_text())
        except (OSError, ValueError):
            return set()
        return {str(f) for f in data.get("files", []) if isinstance(f, str)}

    def own(self, *paths: str) -> None:
        self._write_owned(self.owned() | set(paths))

    def disown(self, *paths: str) -> None:
        self._write_owned(self.owned() - set(paths))

    def _write_owned(self, files: set[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / "files.json", json.dumps({"files": sorted(files)}, indent=1))

    # -- the tree ----------------------------------------------------------

    def children(self, name: str | None) -> list[Snapshot]:
        return [s for s in self.all() if s.parent == name]


def tree_lines(snapshots: list[Snapshot], current: str | None) -> list[str]:
    """``--tree``: each snapshot under its parent, the current one marked."""
    by_parent: dict[str | None, list[Snapshot]] = {}
    names = {s.name for s in snapshots}
    for s in snapshots:
        by_parent.setdefault(s.parent if s.parent in names else None, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, prefix: str) -> None:
        kids = by_parent.get(parent, [])
        for i, s in enumerate(kids):
            last = i == len(kids) - 1
            mark = " *" if s.name == current else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{s.name}{mark}")
            walk(s.name, prefix + ("   " if last else "│  "))

    walk(None, "")
    return lines
