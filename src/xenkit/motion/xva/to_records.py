"""A VmSpec as the XenAPI records of an ``ova.xml``: one VM, a VBD per disk and
CD drive, a VDI per disk on one placeholder SR, a VIF per interface, a network
per bridge.

The records are what ``xe vm-import`` turns into a VM. The field mapping is
:mod:`xenkit.motion.xenapi_record`'s, shared with to-xapi (what XenAPI cannot
hold goes into ``other_config`` under ``xenkit-xl-<key>``, which from-xva
restores and the host ignores); here each record gets every other datamodel
field (:mod:`.datamodel`), a ``Ref:N`` id and the uuids an export has.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, Losses, NicRef, VmSpec
from xenkit.motion.vocab import DEFAULT_BRIDGE, DEFAULT_MTU
from xenkit.motion.xenapi_record import (
    Target,
    boot_disk_index,
    userdevices,
    vbd_fields,
    vdi_fields,
    vif_fields,
    vm_fields,
)
from xenkit.motion.xva.ovaxml import OvaXml, Record, XvaObject, new_record, version_record
from xenkit.motion.xva.xmlrpc import Value

XVA: Final = Target("the XVA", keeps_uuid=True)


@dataclass(frozen=True)
class Export:
    """The ``ova.xml`` and, in stream order, each disk VDI's id with the index of
    its disk among the spec's non-CD disks."""

    ova: OvaXml
    vdis: tuple[tuple[str, int], ...]


def export_spec(spec: VmSpec, sizes: Sequence[int], losses: Losses, *, date: str) -> Export:
    """``sizes`` are the virtual sizes of the spec's non-CD disks, in order."""
    return _Builder(spec, losses).build(sizes, date)


@dataclass
class _Builder:
    spec: VmSpec
    losses: Losses
    objects: list[XvaObject] = field(default_factory=list)
    vm_uuid: str = ""
    width: int = 3

    def build(self, sizes: Sequence[int], date: str) -> Export:
        spec = self.spec
        data_disks = [d for d in spec.disks if not d.cdrom]
        if len(sizes) != len(data_disks):
            raise ValueError(f"{len(sizes)} sizes for {len(data_disks)} disks")
        bridges = list(dict.fromkeys(n.bridge or DEFAULT_BRIDGE for n in spec.nics))
        count = 2 + len(spec.disks) + len(data_disks) + len(bridges) + len(spec.nics)
        self.width = max(3, len(str(count - 1)))
        try:
            self.vm_uuid = str(uuidlib.UUID(spec.uuid) if spec.uuid else uuidlib.uuid4())
        except ValueError:
            raise UsageError(
                f"uuid {spec.uuid!r} is not a UUID", hint="use the 8-4-4-4-12 hex form or none"
            ) from None
        vm = self.vm_record()
        vm_id = self.ref(0)
        sr_id = self.ref(1)
        next_id = 2
        vbds: list[Value] = []
        vdis: list[tuple[str, int]] = []
        sr_vdis: list[Value] = []
        boot = boot_disk_index(spec.disks)
        for i, (disk, slot) in enumerate(
            zip(spec.disks, userdevices(spec.disks, self.losses), strict=True)
        ):
            vdi_id = None
            if not disk.cdrom:
                vdi_id = self.ref(next_id)
                next_id += 1
                vdis.append((vdi_id, len(vdis)))
                sr_vdis.append(vdi_id)
            vbd_id = self.ref(next_id)
            next_id += 1
            vbds.append(vbd_id)
            if vdi_id is not None:
                self.add("VDI", vdi_id, self.vdi(disk, vdi_id, sr_id, vbd_id, sizes[len(vdis) - 1]))
            self.add("VBD", vbd_id, self.vbd(disk, vbd_id, vm_id, vdi_id, slot, i == boot))
        networks = {b: self.ref(next_id + i) for i, b in enumerate(bridges)}
        next_id += len(bridges)
        net_vifs: dict[str, list[Value]] = {b: [] for b in bridges}
        vifs: list[Value] = []
        for i, nic in enumerate(spec.nics):
            vif_id = self.ref(next_id + i)
            vifs.append(vif_id)
            bridge = nic.bridge or DEFAULT_BRIDGE
            net_vifs[bridge].append(vif_id)
            self.add("VIF", vif_id, self.vif(nic, i, vif_id, vm_id, networks[bridge]))
        for bridge, net_id in networks.items():
            self.add("network", net_id, self.network(net_id, bridge, net_vifs[bridge]))
        if data_disks:
            self.add("SR", sr_id, self.sr(sr_id, sr_vdis))
        vm = new_record("VM", **vm, VBDs=vbds, VIFs=vifs)
        self.objects.insert(0, XvaObject("VM", vm_id, vm))
        ova = OvaXml(version_record(date), tuple(self.objects))
        return Export(ova, tuple(sorted(vdis)))

    def ref(self, n: int) -> str:
        # Zero-padded: xapi streams VDIs in the ids' string order.
        return f"Ref:{n:0{self.width}d}"

    def uuid(self, ref: str) -> str:
        """Sub-object uuids follow from the VM's: the same VM gives the same
        ova.xml, and ``restore=true`` imports keep them apart."""
        return str(uuidlib.uuid5(uuidlib.UUID(self.vm_uuid), ref))

    def add(self, cls: str, ref: str, record: Record) -> None:
        self.objects.append(XvaObject(cls, ref, record))

    def vm_record(self) -> Record:
        spec = self.spec
        fields = vm_fields(spec, self.losses, XVA)
        if spec.guest_type == "pv":
            self.losses.approximated(
                "type",
                "pv: XCP-ng 8.1 and later do not run PV guests; boot it as HVM or PVH there",
            )
        return {
            **fields,
            "uuid": self.vm_uuid,
            "power_state": "Halted",
            "memory_target": fields["memory_dynamic_max"],
            "domid": -1,
        }

    def vbd(
        self,
        disk: DiskRef,
        vbd_id: str,
        vm_id: str,
        vdi_id: str | None,
        slot: int,
        bootable: bool,
    ) -> Record:
        if disk.cdrom and disk.path:
            self.losses.lost(
                f"disk {disk.vdev}", f"the ISO {disk.path} is not exported: the CD drive is empty"
            )
        return new_record(
            "VBD",
            **vbd_fields(disk, vm_id, vdi_id, userdevice=slot, bootable=bootable),
            uuid=self.uuid(vbd_id),
            device=disk.vdev,
            storage_lock=False,
            currently_attached=False,
        )

    def vdi(self, disk: DiskRef, vdi_id: str, sr_id: str, vbd_id: str, size: int) -> Record:
        name = f"{self.spec.name} {disk.vdev}"
        return new_record(
            "VDI",
            **vdi_fields(disk, sr_id, name=name, virtual_size=size),
            uuid=self.uuid(vdi_id),
            VBDs=[vbd_id],
            physical_utilisation=size,
            storage_lock=False,
            managed=True,
            missing=False,
        )

    def vif(self, nic: NicRef, index: int, vif_id: str, vm_id: str, net_id: str) -> Record:
        return new_record(
            "VIF",
            **vif_fields(nic, vm_id, net_id, device=index, mtu=DEFAULT_MTU),
            uuid=self.uuid(vif_id),
            MAC_autogenerated=nic.mac is None,
        )

    def network(self, net_id: str, bridge: str, vifs: list[Value]) -> Record:
        # xapi matches networks by name_label, then by bridge.
        return new_record(
            "network",
            uuid=self.uuid(net_id),
            name_label=bridge,
            VIFs=vifs,
            bridge=bridge,
            other_config={},
        )

    def sr(self, sr_id: str, vdis: list[Value]) -> Record:
        # Placeholder: a full import puts every VDI on the SR it is given.
        return new_record(
            "SR",
            uuid=self.uuid(sr_id),
            name_label="xenkit export",
            VDIs=vdis,
            type="xenkit",
            content_type="user",
            shared=False,
            other_config={},
        )
