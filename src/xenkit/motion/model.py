"""The neutral record every motion direction reads or writes.

An xl.cfg, a XenAPI VM with its VBDs/VDIs/VIFs, an XVA's ``ova.xml`` and an OVF
envelope all describe the same few things: a name, a kind of guest and how it
boots, memory, vCPUs, disks and network interfaces. ``VmSpec`` holds exactly
that, in Xen's units (MiB, bytes for disks), so a converter is a reader into it
and a writer out of it. Anything a format has that ``VmSpec`` cannot hold is
reported by the reader, naming the key, in a :class:`Losses`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from xenkit.core.errors import UsageError

GuestType = Literal["pv", "pvh", "hvm"]
DiskFormat = Literal["raw", "qcow2", "vhd", "vmdk"]
LossKind = Literal["lost", "approximated"]


@dataclass(frozen=True, kw_only=True)
class DiskRef:
    """One disk of the VM. ``path`` is where its image is (a file, a block
    device, or a member name inside a package while reading one)."""

    vdev: str
    path: str
    format: DiskFormat = "raw"
    virtual_size: int = 0
    readonly: bool = False
    cdrom: bool = False
    bootable: bool = False
    label: str = ""


@dataclass(frozen=True, kw_only=True)
class NicRef:
    """One network interface. ``mac`` is ``xx:xx:xx:xx:xx:xx`` or None (the
    target chooses); ``model`` None is a PV (netfront) interface."""

    mac: str | None = None
    bridge: str | None = None
    model: str | None = None
    mtu: int | None = None


@dataclass(frozen=True, kw_only=True)
class VmSpec:
    """A VM as every format can (approximately) describe it.

    ``platform`` holds the HVM platform flags by their XenAPI names (``acpi``,
    ``apic``, ``pae``, ``nx``, ``viridian``, ``hpet``, ``videoram``, ``vga``,
    ``timeoffset``...) as strings, which is how XenAPI and XenCenter's OVF carry
    them. ``extra`` carries settings verbatim between two formats that both know
    them (e.g. xl keys round-tripped through an XVA's ``other_config``).
    """

    name: str
    guest_type: GuestType = "pv"
    uuid: str | None = None
    description: str = ""
    memory_mib: int = 128
    maxmem_mib: int | None = None
    vcpus: int = 1
    maxvcpus: int | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None
    bootloader: str | None = None
    bootloader_args: str | None = None
    firmware: str | None = None
    boot_order: str | None = None
    platform: dict[str, str] = field(default_factory=dict)
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    cpu_weight: int | None = None
    cap: int | None = None
    disks: tuple[DiskRef, ...] = ()
    nics: tuple[NicRef, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def static_max_mib(self) -> int:
        return max(self.memory_mib, self.maxmem_mib or 0)


@dataclass(frozen=True)
class Loss:
    """One thing a direction could not carry exactly. ``key`` is named in the
    source's vocabulary: an xl.cfg key, a XenAPI field, an OVF element."""

    key: str
    kind: LossKind
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message} ({self.kind})"


class StrictLoss(UsageError):
    """``--strict`` and the conversion would lose or approximate something."""


@dataclass
class Losses:
    """What a conversion lost, in the order found. With ``strict`` the first loss
    raises instead, so nothing is written."""

    strict: bool = False
    items: list[Loss] = field(default_factory=list)

    def lost(self, key: str, message: str) -> None:
        self._add(Loss(key, "lost", message))

    def approximated(self, key: str, message: str) -> None:
        self._add(Loss(key, "approximated", message))

    def _add(self, loss: Loss) -> None:
        if self.strict:
            raise StrictLoss(
                f"--strict: {loss}",
                hint="drop --strict to convert anyway, with this reported as a warning",
            )
        self.items.append(loss)

    def __iter__(self) -> Iterator[Loss]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def to_json(self) -> list[dict[str, str]]:
        return [{"key": x.key, "kind": x.kind, "message": x.message} for x in self.items]
