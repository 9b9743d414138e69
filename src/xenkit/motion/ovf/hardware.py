"""A VirtualHardwareSection's items → vCPUs, memory, drives and NICs.

Drives are named the way the guest will find them on Xen:

* a ``rasd:Caption`` or ``rasd:ElementName`` that is itself a vdev (``xvda``,
  ``hdc``, ``sdb``: what xenkit's writer puts there) is kept;
* on an IDE controller the disk index is ``2 * Address + AddressOnParent``
  (primary master = 0 … secondary slave = 3; an old VirtualBox export's only
  IDE controller has the whole bus, AddressOnParent 0-3), named ``hdX`` for an HVM guest —
  the emulated IDE disk it had — and ``xvdX`` for PV/PVH;
* on SCSI, SAS, FC, iSCSI and SATA/AHCI controllers the disks are numbered in
  (controller Address, AddressOnParent) order, as Linux's ``sd`` driver finds
  them: ``sdX`` for HVM, the next free ``xvdX`` for PV/PVH;
* without a controller (XenCenter's ``ResourceType`` 19 items) the XenAPI
  ``userdevice`` from ``rasd:Connection`` ``device=N`` gives ``xvdX``, else the
  next free one.

A name taken twice moves to the next free index of its prefix, reported.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from xenkit.motion.model import GuestType, Losses, NicRef
from xenkit.motion.ovf import vocab
from xenkit.motion.ovf.xmlin import attr, kind, label, local, namespace, props, text
from xenkit.motion.vocab import normal_mac

MiB = 1 << 20
_ITEM_KINDS = ("Item", "StorageItem", "EthernetPortItem")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DEVICE = re.compile(r"(?:^|,)\s*device=(\d+)")
_SCSI_LIKE = frozenset({vocab.RT_SCSI, vocab.RT_FC, vocab.RT_ISCSI, vocab.RT_IB})

_NIC_MODELS = {
    "e1000": "e1000",
    "e1000e": "e1000e",
    "pcnet32": "pcnet",
    "pcnetfast": "pcnet",
    "pcnet": "pcnet",
    "am79c970a": "pcnet",
    "am79c973": "pcnet",
    "vmxnet3": "vmxnet3",
    "virtio": "virtio-net-pci",
    "virtio-net": "virtio-net-pci",
    "rtl8139": "rtl8139",
}


@dataclass
class Controller:
    instance: str
    rt: int
    address: int | None
    subtype: str
    nth: int
    """Its place among the controllers of its bus, for a missing Address."""


@dataclass
class Drive:
    instance: str
    rt: int
    props: dict[str, list[str]]
    parent: Controller | None
    order: int

    def one(self, name: str) -> str:
        values = self.props.get(name.lower(), [])
        return values[0] if values else ""

    @property
    def cdrom(self) -> bool:
        return self.rt in (vocab.RT_CD, vocab.RT_DVD)


@dataclass
class Hardware:
    system: dict[str, str] = field(default_factory=dict)
    vcpus: int | None = None
    cpu_limit: int | None = None
    memory_mib: int | None = None
    drives: list[Drive] = field(default_factory=list)
    nics: list[dict[str, list[str]]] = field(default_factory=list)
    vmw_firmware: str | None = None
    xen_pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def system_types(self) -> list[str]:
        return [t for t in re.split(r"[\s,]+", self.system.get("virtualsystemtype", "")) if t]


def read_hardware(vhs: ET.Element, losses: Losses, configuration: str | None) -> Hardware:
    hw = Hardware()
    vmw_lost: list[str] = []
    items: list[tuple[str, int, dict[str, list[str]], ET.Element]] = []
    for el in vhs:
        k = kind(el)
        if k == "Info" and _is_ovf_ns(el):
            continue
        if k == "System" and _is_ovf_ns(el):
            hw.system = {local(c.tag).lower(): text(c) for c in el}
        elif k in _ITEM_KINDS and _is_ovf_ns(el):
            if not _in_configuration(el, configuration) or _bound(el) in ("min", "max"):
                continue
            p = props(el)
            instance = (p.get("instanceid") or [""])[0]
            rt_text = (p.get("resourcetype") or [""])[0]
            try:
                rt = int(rt_text)
            except ValueError:
                losses.lost(
                    f"Item[InstanceID={instance}]", f"ResourceType {rt_text!r}: not a number"
                )
                continue
            items.append((instance, rt, p, el))
        elif namespace(el.tag) == vocab.VMW and local(el.tag) == "Config":
            _vmw_config(el, hw, vmw_lost)
        elif (
            namespace(el.tag) == vocab.XENOVF
            and local(el.tag) == "VirtualSystemOtherConfigurationData"
        ):
            name = el.get("Name") or attr(el, "Name") or ""
            value = "".join(text(c) for c in el if local(c.tag) == "Value")
            hw.xen_pairs.append((name, value))
        else:
            losses.lost(label(el), "an element of the VirtualHardwareSection xenkit does not read")
    if vmw_lost:
        losses.lost("vmw:Config", f"VMware settings with no Xen equivalent: {', '.join(vmw_lost)}")
    _interpret(items, hw, losses)
    return hw


def _is_ovf_ns(el: ET.Element) -> bool:
    return namespace(el.tag) in vocab.OVF_NAMESPACES


def _in_configuration(el: ET.Element, configuration: str | None) -> bool:
    wanted = attr(el, "configuration")
    return wanted is None or configuration is None or configuration in wanted.split()


def _bound(el: ET.Element) -> str:
    return (attr(el, "bound") or "normal").lower()


def _vmw_config(el: ET.Element, hw: Hardware, lost: list[str]) -> None:
    k = el.get(f"{{{vocab.VMW}}}key") or el.get("key") or ""
    v = el.get(f"{{{vocab.VMW}}}value") or el.get("value") or ""
    if k == "firmware" and v.lower() in ("efi", "bios"):
        hw.vmw_firmware = "uefi" if v.lower() == "efi" else "bios"
    else:
        lost.append(f"{k}={v}")


def _interpret(
    items: list[tuple[str, int, dict[str, list[str]], ET.Element]], hw: Hardware, losses: Losses
) -> None:
    counts: dict[str, int] = {}
    for instance, _, _, _ in items:
        counts[instance] = counts.get(instance, 0) + 1
    for instance, n in counts.items():
        if n > 1:
            losses.approximated(
                f"Item[InstanceID={instance}]",
                f"{n} items share this InstanceID (the OVF is invalid); none can be a Parent",
            )
    controllers: dict[str, Controller] = {}
    per_bus: dict[str, int] = {}
    for instance, rt, p, _ in items:
        if rt in vocab.CONTROLLER_TYPES and not p.get("hostresource") and counts[instance] == 1:
            bus = "ide" if rt == vocab.RT_IDE else "scsi"
            nth = per_bus.get(bus, 0)
            per_bus[bus] = nth + 1
            controllers[instance] = Controller(
                instance, rt, _int((p.get("address") or [""])[0]), _first(p, "resourcesubtype"), nth
            )
    cpu_items = 0
    for order, (instance, rt, p, _) in enumerate(items):
        where = f"Item[InstanceID={instance}]"
        if rt == vocab.RT_CPU:
            cpu_items += 1
            hw.vcpus = (hw.vcpus or 0) + (_int(_first(p, "virtualquantity")) or 1)
            hw.cpu_limit = _int(_first(p, "limit"))
        elif rt == vocab.RT_MEMORY:
            if hw.memory_mib is None:
                hw.memory_mib = _memory(p, where, losses)
            else:
                losses.lost(where, "a second memory item; the first is used")
        elif instance in controllers:
            continue
        elif rt in (vocab.RT_DISK, vocab.RT_STORAGE_EXTENT, vocab.RT_CD, vocab.RT_DVD):
            parent = controllers.get(_first(p, "parent"))
            hw.drives.append(Drive(instance, rt, p, parent, order))
        elif rt == vocab.RT_ETHERNET:
            hw.nics.append(p)
        else:
            _lost_item(where, rt, p, losses)
    if cpu_items > 1:
        losses.approximated("Item[ResourceType=3]", f"{cpu_items} CPU items; their counts added")


def _lost_item(where: str, rt: int, p: dict[str, list[str]], losses: Losses) -> None:
    name = _first(p, "elementname") or _first(p, "caption")
    subtype = _first(p, "resourcesubtype")
    what = vocab.RESOURCE_TYPE_NAMES.get(rt)
    described = f"ResourceType {rt} ({what})" if what else f"unknown ResourceType {rt}"
    extra = "".join(
        f", {k} {v!r}" for k, v in (("ElementName", name), ("ResourceSubType", subtype)) if v
    )
    losses.lost(f"{where} ResourceType {rt}", f"{described}{extra}: not carried")


def _first(p: dict[str, list[str]], name: str) -> str:
    values = p.get(name)
    return values[0] if values else ""


def _int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


def _memory(p: dict[str, list[str]], where: str, losses: Losses) -> int | None:
    quantity = _int(_first(p, "virtualquantity"))
    if quantity is None:
        losses.lost(where, "memory item without a VirtualQuantity")
        return None
    units = _first(p, "allocationunits")
    if not units:
        losses.approximated(where, "no AllocationUnits; MiB assumed")
        return quantity
    multiplier = vocab.unit_multiplier(units)
    if multiplier is None:
        losses.lost(where, f"AllocationUnits {units!r} is not a byte multiple")
        return None
    size = quantity * multiplier
    mib = -(-size // MiB)
    if mib * MiB != size:
        losses.approximated(where, f"{quantity} x {units!r} is not whole MiB; {mib} MiB")
    return mib


def name_drives(
    drives: list[Drive], guest_type: GuestType, losses: Losses, *, virtualbox: bool = False
) -> list[str]:
    """A vdev for each drive, by the rules in the module docstring.

    VirtualBox before 3.x wrote one IDE controller for the whole bus, its
    drives at AddressOnParent 0-3 (its import reads them back so); with
    ``virtualbox`` and a single IDE controller that is how they are read."""
    ide = {d.parent.instance for d in drives if d.parent and d.parent.rt == vocab.RT_IDE}
    whole_bus = virtualbox and len(ide) == 1
    names: list[str | None] = [None] * len(drives)
    used: dict[str, set[int]] = {"xvd": set(), "hd": set(), "sd": set()}

    def take(i: int, prefix: str, index: int) -> None:
        names[i] = vocab.vdev(prefix, index)
        used[prefix].add(index)

    def take_free(i: int, prefix: str) -> None:
        index = 0
        while index in used[prefix]:
            index += 1
        take(i, prefix, index)

    for i, d in enumerate(drives):
        for candidate in (d.one("caption"), d.one("elementname")):
            parsed = vocab.split_vdev(candidate)
            if parsed is not None and parsed[1] not in used[parsed[0]]:
                take(i, *parsed)
                break
    hvm = guest_type == "hvm"
    scsi = sorted(
        (
            i
            for i, d in enumerate(drives)
            if names[i] is None and d.parent and d.parent.rt != vocab.RT_IDE
        ),
        key=lambda i: _scsi_key(drives[i]),
    )
    for i, d in enumerate(drives):
        if names[i] is not None or d.parent is None or d.parent.rt != vocab.RT_IDE:
            continue
        channel = d.parent.address if d.parent.address is not None else d.parent.nth
        unit = _int(d.one("addressonparent")) or 0
        index = unit if whole_bus else 2 * channel + unit
        prefix = "hd" if hvm else "xvd"
        if 0 <= index < 4 and index not in used[prefix]:
            take(i, prefix, index)
        else:
            losses.approximated(f"Item[InstanceID={d.instance}]", "IDE slot taken or invalid")
            take_free(i, prefix)
    sata_noted = False
    for i in scsi:
        d = drives[i]
        assert d.parent is not None
        if d.parent.rt == vocab.RT_OTHER_STORAGE and hvm and not sata_noted:
            sata_noted = True
            losses.approximated(
                f"Item[InstanceID={d.parent.instance}]",
                f"{d.parent.subtype or 'SATA'} controller: its disks become SCSI sdX on Xen",
            )
        take_free(i, "sd" if hvm else "xvd")
    for i, d in enumerate(drives):
        if names[i] is not None:
            continue
        m = _DEVICE.search(",".join(d.props.get("connection", [])))
        if m is not None and int(m.group(1)) not in used["xvd"]:
            take(i, "xvd", int(m.group(1)))
        else:
            take_free(i, "xvd")
    return [n or "" for n in names]


def _scsi_key(d: Drive) -> tuple[int, int, int, int]:
    assert d.parent is not None
    address = d.parent.address if d.parent.address is not None else d.parent.nth
    return (address, d.parent.nth, _int(d.one("addressonparent")) or 0, d.order)


def read_nics(
    nics: list[dict[str, list[str]]], xen_dialect: bool, losses: Losses
) -> tuple[NicRef, ...]:
    """NicRefs. A Xen envelope's ``rasd:Connection`` is the bridge (XenCenter
    writes a network uuid there instead, which no bridge is named); any other
    envelope names a network of its own hypervisor, which is not a Xen bridge."""
    out = []
    for i, p in enumerate(nics):
        where = f"Item[InstanceID={_first(p, 'instanceid')}]"
        mac = _mac(_first(p, "address"), where, losses)
        connection = _first(p, "connection")
        bridge: str | None = None
        if connection and xen_dialect and not _UUID.fullmatch(connection) and "=" not in connection:
            bridge = connection
        elif connection:
            losses.approximated(
                f"{where}.Connection",
                f"NIC {i} is on network {connection!r}, not a Xen bridge: the default one is used",
            )
        out.append(NicRef(mac=mac, bridge=bridge, model=_model(p, where, xen_dialect, losses)))
    return tuple(out)


def _mac(value: str, where: str, losses: Losses) -> str | None:
    if not value:
        return None
    mac = normal_mac(value)
    if mac is None:
        losses.lost(f"{where}.Address", f"{value!r} is not a MAC address")
    return mac


def _model(p: dict[str, list[str]], where: str, xen_dialect: bool, losses: Losses) -> str | None:
    subtype = _first(p, "resourcesubtype")
    if not subtype:
        if xen_dialect:
            return None
        losses.approximated(f"{where}.ResourceSubType", "no adapter type; an emulated e1000")
        return "e1000"
    model = _NIC_MODELS.get(subtype.lower())
    if model is None:
        losses.approximated(
            f"{where}.ResourceSubType", f"adapter {subtype!r} has no Xen model; an emulated e1000"
        )
        return "e1000"
    return model
