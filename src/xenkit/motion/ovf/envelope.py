"""VmSpec → OVF envelope (DSP0243 1.x or 2.x).

The envelope is meant for three readers at once: VMware and VirtualBox, which
need DMTF items on controllers they know, and XenCenter, which reads the Xen
settings from ``xenovf:VirtualSystemOtherConfigurationData`` (see
:mod:`.xensettings`). Each choice below favours what all three accept:

* ``VirtualSystemType`` is a list, first entry first: ``xen-3.0-unknown`` for
  PV and PVH, ``hvm-3.0-unknown`` for HVM (XenCenter matches it by prefix),
  then ``vmx-07`` so VMware, which refuses a family it does not know, has one.
  PVH is ``xen-3.0-unknown`` (a Xen guest that boots its own kernel, no
  emulated BIOS) with ``domain_type=pvh``: XenCenter's import sets that field.
* Disks and CD drives go on IDE when their vdev's disk index is below 4 and the
  vdev is not ``sdX``: ``hda``/``xvda`` is the primary master, ``hdb`` the
  primary slave, ``hdc``/``hdd`` the secondary channel — where Xen's emulated
  PIIX3 puts them for an HVM guest, and what every hypervisor boots from
  without a driver. The others (``sdX``, index 4 and up, clashes) go on LSI
  Logic SCSI controllers, units 0-15 without 7 (the HBA's own id), 15 per
  controller, in the VM's order.
* The vdev itself is kept in each drive's ``rasd:Caption``; its
  ``rasd:ElementName`` is the disk's label (XenCenter names the VDI after it).
* Xen extensions carry ``ovf:required="false"``: VMware refuses unknown
  elements otherwise (xcp-ng/xenadmin#202).
* No ``StartupSection`` (VMware refuses it too) and no random ids: the same
  VmSpec and files give the same bytes, which the OVA writer relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, Losses, NicRef, VmSpec
from xenkit.motion.ovf import vocab
from xenkit.motion.ovf.xensettings import INFO, xen_settings
from xenkit.motion.ovf.xmlout import Node, invalid_chars, render

OvfVersion = Literal["1.0", "2.0"]
SCSI_UNITS = [u for u in range(16) if u != 7]

_NIC_SUBTYPES = {
    "e1000": "E1000",
    "e1000e": "E1000e",
    "vmxnet3": "VmxNet3",
    "pcnet": "PCNet32",
    "virtio-net-pci": "virtio",
    "virtio-net": "virtio",
    "virtio": "virtio",
}

_CONTROLLERS: dict[str, tuple[int, str, str, str]] = {
    "ide": (vocab.RT_IDE, "IDE Controller", "IDE", "PIIX3"),
    "scsi": (vocab.RT_SCSI, "SCSI Controller", "SCSI Controller", "lsilogic"),
}
"""Each bus's controller item: ResourceType, Description, ElementName (before
its number) and ResourceSubType."""


@dataclass(frozen=True, kw_only=True)
class OvfFile:
    """A file of the package: the image of the VmSpec disk ``vdev`` as stored
    (``size`` bytes at ``href``, in the format ``format_uri`` names), of
    ``capacity`` bytes virtual size, ``populated_size`` of them allocated."""

    vdev: str
    href: str
    size: int
    capacity: int
    format_uri: str
    populated_size: int | None = None


@dataclass(frozen=True)
class Slot:
    bus: Literal["ide", "scsi"]
    controller: int
    unit: int


def plan_slots(disks: Sequence[DiskRef]) -> list[Slot]:
    """Where each disk sits, by the rule in the module docstring."""
    slots: list[Slot] = []
    ide_used: set[int] = set()
    scsi = 0
    for disk in disks:
        parsed = vocab.split_vdev(disk.vdev)
        if parsed is not None and parsed[0] != "sd" and parsed[1] < 4 and parsed[1] not in ide_used:
            index = parsed[1]
            ide_used.add(index)
            slots.append(Slot("ide", index // 2, index % 2))
        else:
            controller, nth = divmod(scsi, len(SCSI_UNITS))
            slots.append(Slot("scsi", controller, SCSI_UNITS[nth]))
            scsi += 1
    return slots


def envelope_xml(
    spec: VmSpec,
    files: Sequence[OvfFile],
    *,
    version: OvfVersion = "1.0",
    losses: Losses,
) -> bytes:
    """The ``.ovf`` for ``spec`` whose disks' images are ``files`` (matched by
    vdev; a disk without one becomes a blank disk or an empty CD drive)."""
    if version not in ("1.0", "2.0"):
        raise UsageError(f"OVF version {version!r}", hint="use 1.0 or 2.0")
    by_vdev = _files_by_vdev(spec, files)
    _check_text(spec, losses)
    ns = vocab.OVF1 if version == "1.0" else vocab.OVF2
    root = Node("Envelope", [("ovf:version", version), ("xml:lang", "en-US")])
    refs = root.add("References")
    disk_section = Node("DiskSection")
    disk_section.add("Info", "Virtual disk information")
    builder = _Hardware(spec, losses)
    slots = plan_slots(spec.disks)
    for slot in slots:
        builder.controller(slot)
    for n, (disk, slot) in enumerate(zip(spec.disks, slots, strict=True), 1):
        image = by_vdev.get(disk.vdev)
        builder.storage(disk, slot, image, n, refs, disk_section)
    if len(disk_section.children) > 1:
        root.append(disk_section)
    networks = builder.networks()
    if networks:
        section = root.add("NetworkSection")
        section.add("Info", "Logical networks")
        for name in networks:
            net = section.add("Network", ovf_name=name)
            net.add("Description", f"Xen bridge {name}")
    root.append(_virtual_system(spec, builder, losses))
    namespaces = {
        "": ns,
        "ovf": ns,
        "rasd": vocab.RASD,
        "vssd": vocab.VSSD,
        "vmw": vocab.VMW,
        "xenovf": vocab.XENOVF,
    }
    return render(root, namespaces)


def _files_by_vdev(spec: VmSpec, files: Sequence[OvfFile]) -> dict[str, OvfFile]:
    vdevs = {d.vdev for d in spec.disks}
    if len(vdevs) != len(spec.disks):
        raise UsageError(f"{spec.name}: two disks have the same vdev", hint="give each a vdev")
    by_vdev: dict[str, OvfFile] = {}
    hrefs: set[str] = set()
    for f in files:
        if f.vdev not in vdevs:
            raise UsageError(f"OVF file {f.href!r} is for {f.vdev}, which the VM does not have")
        if f.vdev in by_vdev or f.href in hrefs:
            raise UsageError(f"OVF file {f.href!r}: a second file for {f.vdev} or the same href")
        by_vdev[f.vdev] = f
        hrefs.add(f.href)
    return by_vdev


def _check_text(spec: VmSpec, losses: Losses) -> None:
    for name, text in (("name", spec.name), ("description", spec.description)):
        if invalid_chars(text):
            losses.approximated(name, "characters XML cannot hold are written as U+FFFD")


class _Hardware:
    """The VirtualHardwareSection's items, numbered as they are added."""

    def __init__(self, spec: VmSpec, losses: Losses) -> None:
        self.spec = spec
        self.losses = losses
        self.items: list[Node] = []
        self.controllers: dict[tuple[str, int], str] = {}
        self.devices: list[Node] = []
        self.next_id = 1
        self.item(
            3,
            ElementName=f"{spec.vcpus} virtual CPU(s)",
            Description="Number of virtual CPUs",
            VirtualQuantity=str(spec.vcpus),
        )
        self.item(
            4,
            ElementName=f"{spec.memory_mib}MB of memory",
            Description="Memory Size",
            AllocationUnits="byte * 2^20",
            VirtualQuantity=str(spec.memory_mib),
        )

    def item(self, resource_type: int, *, into: list[Node] | None = None, **props: str) -> str:
        """A ``rasd`` item; 1.x and 2.x both want its children in alphabetical
        order (the CIM schema's sequence)."""
        instance = str(self.next_id)
        self.next_id += 1
        props = {**props, "InstanceID": instance, "ResourceType": str(resource_type)}
        node = Node("Item")
        for name in sorted(props):
            node.add(f"rasd:{name}", props[name])
        (self.items if into is None else into).append(node)
        return instance

    def controller(self, slot: Slot) -> str:
        key = (slot.bus, slot.controller)
        if key not in self.controllers:
            resource_type, description, name, subtype = _CONTROLLERS[slot.bus]
            self.controllers[key] = self.item(
                resource_type,
                Address=str(slot.controller),
                Description=description,
                ElementName=f"{name} {slot.controller}",
                ResourceSubType=subtype,
            )
        return self.controllers[key]

    def storage(
        self,
        disk: DiskRef,
        slot: Slot,
        image: OvfFile | None,
        n: int,
        refs: Node,
        disk_section: Node,
    ) -> None:
        parent = self.controller(slot)
        props = {
            "AddressOnParent": str(slot.unit),
            "Caption": disk.vdev,
            "ElementName": disk.label or disk.vdev,
            "Parent": parent,
        }
        if disk.cdrom:
            self._cdrom(disk, image, n, refs, props)
            return
        if disk.readonly:
            self.losses.lost(f"disk {disk.vdev}", "read-only: OVF has no read-only disk")
        disk_id = f"vmdisk{n}"
        attrs = [("ovf:diskId", disk_id)]
        if image is not None:
            refs.append(_file_node(image, f"file{n}"))
            attrs += [
                ("ovf:fileRef", f"file{n}"),
                ("ovf:capacity", str(image.capacity)),
                ("ovf:capacityAllocationUnits", "byte"),
                ("ovf:format", image.format_uri),
            ]
            if image.populated_size is not None:
                attrs.append(("ovf:populatedSize", str(image.populated_size)))
        elif disk.virtual_size > 0:
            self.losses.approximated(
                f"disk {disk.vdev}", "its image is not packaged; the OVF declares a blank disk"
            )
            attrs += [
                ("ovf:capacity", str(disk.virtual_size)),
                ("ovf:capacityAllocationUnits", "byte"),
            ]
        else:
            self.losses.lost(f"disk {disk.vdev}", "no image and no size: left out of the OVF")
            return
        if disk.bootable:
            attrs.append(("xenovf:isBootable", "true"))
        disk_section.append(Node("Disk", attrs))
        self.item(vocab.RT_DISK, into=self.devices, HostResource=f"ovf:/disk/{disk_id}", **props)

    def _cdrom(
        self, disk: DiskRef, image: OvfFile | None, n: int, refs: Node, props: dict[str, str]
    ) -> None:
        if disk.bootable:
            self.losses.lost(f"disk {disk.vdev}", "a bootable CD drive: OVF has no boot flag")
        if image is not None:
            refs.append(_file_node(image, f"file{n}"))
            props["HostResource"] = f"ovf:/file/file{n}"
        elif disk.path:
            self.losses.lost(f"disk {disk.vdev}", f"CD media {disk.path} is not packaged")
        self.item(vocab.RT_CD, into=self.devices, AutomaticAllocation="true", **props)

    def networks(self) -> list[str]:
        names: list[str] = []
        for i, nic in enumerate(self.spec.nics):
            self._nic(i, nic)
            if nic.bridge and nic.bridge not in names:
                names.append(nic.bridge)
        return names

    def _nic(self, i: int, nic: NicRef) -> None:
        props = {"AutomaticAllocation": "true", "ElementName": f"eth{i}"}
        if nic.mac:
            props["Address"] = nic.mac
        if nic.bridge:
            props["Connection"] = nic.bridge
        if nic.model is not None:
            subtype = _NIC_SUBTYPES.get(nic.model.lower())
            if subtype is None:
                self.losses.approximated(
                    f"nic {i}.model", f"{nic.model!r} has no OVF adapter type; written as E1000"
                )
                subtype = "E1000"
            props["ResourceSubType"] = subtype
        props["Description"] = f"{props.get('ResourceSubType', 'Xen PV')} ethernet adapter"
        if nic.mtu is not None:
            self.losses.lost(f"nic {i}.mtu", "OVF 1.x/2.x items have no MTU")
        self.item(vocab.RT_ETHERNET, into=self.devices, **props)

    def section(self, xen_type: str, settings: list[tuple[str, str]]) -> Node:
        vhs = Node("VirtualHardwareSection")
        vhs.add("Info", "Virtual hardware requirements")
        system = vhs.add("System")
        if self.spec.description:
            system.add("vssd:Description", self.spec.description)
        system.add("vssd:ElementName", "Virtual Hardware Family")
        system.add("vssd:InstanceID", "0")
        system.add("vssd:VirtualSystemIdentifier", self.spec.uuid or self.spec.name)
        system.add("vssd:VirtualSystemType", f"{xen_type} vmx-07")
        vhs.children += self.items + self.devices
        if self.spec.guest_type == "hvm" and (self.spec.firmware or "").lower() in ("uefi", "ovmf"):
            vhs.add("vmw:Config", ovf_required="false", vmw_key="firmware", vmw_value="efi")
        for name, value in settings:
            data = vhs.add(
                "xenovf:VirtualSystemOtherConfigurationData", ovf_required="false", Name=name
            )
            data.add("xenovf:Info", INFO.get(name, "XenServer Specific Information"))
            data.add("xenovf:Value", value)
        return vhs


def _file_node(image: OvfFile, file_id: str) -> Node:
    return Node(
        "File", [("ovf:href", image.href), ("ovf:id", file_id), ("ovf:size", str(image.size))]
    )


def _virtual_system(spec: VmSpec, hardware: _Hardware, losses: Losses) -> Node:
    system = Node("VirtualSystem", [("ovf:id", spec.name)])
    system.add("Info", "A virtual machine")
    system.add("Name", spec.name)
    if spec.description:
        annotation = system.add("AnnotationSection")
        annotation.add("Info", "A human-readable annotation")
        annotation.add("Annotation", spec.description)
    os_id = vocab.OS_OTHER_64 if spec.guest_type == "hvm" else vocab.OS_LINUX_64
    os_name = "Other 64-Bit" if spec.guest_type == "hvm" else "Linux 64-Bit"
    losses.approximated(
        "OperatingSystemSection", f"VmSpec names no guest OS; written as {os_id} ({os_name})"
    )
    oss = system.add("OperatingSystemSection", ovf_id=str(os_id))
    oss.add("Info", "The kind of installed guest operating system")
    oss.add("Description", os_name)
    xen_type = "hvm-3.0-unknown" if spec.guest_type == "hvm" else "xen-3.0-unknown"
    system.append(hardware.section(xen_type, xen_settings(spec, losses)))
    return system
