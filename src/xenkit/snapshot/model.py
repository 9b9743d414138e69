"""What a snapshot is: a named point in a domain's life, its disks and maybe its memory.

Records are plain frozen dataclasses with a JSON form, so the metadata on the
host stays readable (and repairable) by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from xenkit.core.errors import UsageError

#: internal: a tag inside the qcow2 image; external: the image was frozen and a new
#: overlay took its place; lvm: a snapshot LV of the disk's LV.
DiskKind = Literal["internal", "external", "lvm"]
DISK_KINDS: tuple[DiskKind, ...] = ("internal", "external", "lvm")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def check_name(name: str) -> str:
    """Snapshot names become file and tag names: keep them plain."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"bad snapshot name {name!r}",
            hint="use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class Disk:
    """A disk of a running domain, as libxl configured it."""

    vdev: str
    #: libxl's backend: ``qdisk`` (QEMU) or ``phy`` (blkback).
    backend: str
    #: ``qcow2``, ``raw``...
    format: str
    #: What the backend opens now (the active layer).
    path: str
    readwrite: bool = True

    @property
    def node_name(self) -> str:
        """The QEMU block node of a qdisk disk: libxl names it ``<vdev>-<driver>``."""
        return f"{self.vdev}-{self.format}"


@dataclass(frozen=True)
class DiskSnapshot:
    vdev: str
    kind: DiskKind
    format: str
    #: The image that holds this disk as it was: for internal, the image with the tag;
    #: for external, the frozen image (the overlay's backing file); for lvm, the snapshot LV.
    image: str
    #: internal: the qcow2 snapshot tag.
    tag: str | None = None
    #: external: the overlay the domain wrote to after this snapshot was taken.
    overlay: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DiskSnapshot:
        kind = data["kind"]
        if kind not in DISK_KINDS:
            raise ValueError(f"unknown disk snapshot kind {kind!r}")
        return cls(
            vdev=str(data["vdev"]),
            kind=kind,
            format=str(data["format"]),
            image=str(data["image"]),
            tag=data.get("tag"),
            overlay=data.get("overlay"),
        )


@dataclass(frozen=True)
class Snapshot:
    name: str
    domain_uuid: str
    domain_name: str
    #: Seconds since the epoch.
    created: float
    parent: str | None
    disks: tuple[DiskSnapshot, ...]
    description: str = ""
    #: A checkpoint's memory and device state (``xl save`` file); None for disk-only.
    memory: str | None = None
    #: The domain's xl.cfg when the snapshot was taken, its disks as they were then.
    config: str = ""
    #: How long the guest was paused while the disks were snapshotted, in seconds.
    paused_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def disk_only(self) -> bool:
        return self.memory is None

    def disk(self, vdev: str) -> DiskSnapshot | None:
        return next((d for d in self.disks if d.vdev == vdev), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["disks"] = [asdict(d) for d in self.disks]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            name=str(data["name"]),
            domain_uuid=str(data["domain_uuid"]),
            domain_name=str(data["domain_name"]),
            created=float(data["created"]),
            parent=data.get("parent"),
            disks=tuple(DiskSnapshot.from_json(d) for d in data["disks"]),
            description=str(data.get("description", "")),
            memory=data.get("memory"),
            config=str(data.get("config", "")),
            paused_seconds=data.get("paused_seconds"),
            extra=dict(data.get("extra", {})),
        )
