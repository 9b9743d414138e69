"""VmSpec to and from XenAPI records (VM, VDI, VBD, VIF) as a pool takes and gives them.

The field mapping itself is :mod:`xenkit.motion.xenapi_record`, which an XVA's
``ova.xml`` shares; here the records are put in XenAPI's wire form (int fields
as decimal strings, refs as ``OpaqueRef:...``) and hold only constructor
fields, so they go to ``VM.create``/``VDI.create``/... as they are. Settings
only xl knows travel in ``other_config`` under ``xenkit-xl-<key>`` so a VM that
came from xl can go back to xl with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, Losses, NicRef, VmSpec
from xenkit.motion.vocab import NULL_REF, MiB, Vdev, vdev_for
from xenkit.motion.xapi.session import XapiRecord, is_null
from xenkit.motion.xenapi_record import (
    Drive,
    Interface,
    RecordView,
    Target,
    boot_disk_index,
    spec_from_records,
    userdevices,
    vbd_fields,
    vdi_fields,
    vif_fields,
    vm_fields,
)

__all__ = [
    "MiB",
    "Vdev",
    "boot_disk_index",
    "spec_from_vm_record",
    "userdevices",
    "vbd_record",
    "vdev_for",
    "vdi_record",
    "vif_record",
    "vm_record_from_spec",
]

POOL: Final = Target("the pool", keeps_uuid=False)


def wire(record: Mapping[str, object]) -> XapiRecord:
    """``record`` as XML-RPC carries it to xapi: int fields as decimal strings
    (XML-RPC's ints are 32-bit)."""
    return {
        k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        for k, v in record.items()
    }


# -- VmSpec -> XenAPI ---------------------------------------------------------


def vm_record_from_spec(spec: VmSpec, losses: Losses) -> XapiRecord:
    """The constructor record ``VM.create`` takes for ``spec``; losses named by xl key."""
    return wire(
        {
            **vm_fields(spec, losses, POOL),
            "affinity": NULL_REF,
            "PCI_bus": "",
            "recommendations": "",
        }
    )


def vdi_record(disk: DiskRef, sr: str, *, name: str, virtual_size: int) -> XapiRecord:
    """A user VDI for ``disk`` on the SR ``sr``."""
    return wire(vdi_fields(disk, sr, name=name, virtual_size=virtual_size))


def vbd_record(
    disk: DiskRef, vm: str, vdi: str | None, *, userdevice: int, bootable: bool
) -> XapiRecord:
    """A VBD; ``vdi`` None is an empty drive (a CD-ROM whose ISO stays behind)."""
    return wire(vbd_fields(disk, vm, vdi, userdevice=userdevice, bootable=bootable))


def vif_record(nic: NicRef, vm: str, network: str, *, device: int, mtu: int) -> XapiRecord:
    """A VIF; an empty MAC lets xapi choose one from the VM's ``mac_seed``."""
    return wire(vif_fields(nic, vm, network, device=device, mtu=mtu))


# -- XenAPI -> VmSpec ---------------------------------------------------------


def spec_from_vm_record(
    record: Mapping[str, object],
    vbds: Sequence[Mapping[str, object]],
    vdis: Mapping[str, Mapping[str, object]],
    vifs: Sequence[Mapping[str, object]],
    networks: Mapping[str, Mapping[str, object]],
    losses: Losses,
) -> VmSpec:
    """The VmSpec of a VM record; losses named by XenAPI field.

    Each disk's ``path`` is the VBD's VDI reference (a key of ``vdis``): the
    caller replaces it with the file it writes the VDI to.
    """
    name = str(record.get("name_label") or record.get("uuid") or "")
    drives: list[Drive] = []
    for vbd in vbds:
        ref = str(vbd.get("VDI") or NULL_REF)
        view = _view(vbd, f"VM {name!r}: VBD {vbd.get('userdevice', '?')}")
        if vbd.get("empty") is True or is_null(ref):
            drives.append(Drive(view, None, ref))
            continue
        vdi = vdis.get(ref)
        if vdi is None:
            raise UsageError(f"VM {name!r}: a VBD names VDI {ref}, which the pool did not list")
        drives.append(Drive(view, _view(vdi, f"VM {name!r}: VDI {ref}"), ref))
    interfaces: list[Interface] = []
    for vif in vifs:
        network = networks.get(str(vif.get("network")))
        interfaces.append(
            Interface(
                _view(vif, f"VM {name!r}: VIF {vif.get('device', '?')}"),
                None if network is None else _view(network, "network"),
            )
        )
    spec, _ = spec_from_records(
        _view(record, f"VM {name!r}"), drives, interfaces, losses, fallback_name=name
    )
    return spec


def _view(record: Mapping[str, object], where: str) -> RecordView:
    return RecordView(record, where, UsageError)
