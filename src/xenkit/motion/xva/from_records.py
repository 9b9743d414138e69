"""The VM of an ``ova.xml`` as a VmSpec, and which VDIs the tar streams, in order.

Records come from any xapi since XenServer 5.5 or from other writers (Xen
Orchestra, xva-img, hand-made templates), so every field is read leniently
(:class:`~xenkit.motion.xenapi_record.RecordView`): an integer may be text, a
missing field takes its datamodel default. The field mapping is
:mod:`xenkit.motion.xenapi_record`'s, shared with from-xapi; here the objects
are found by their ids and the VDIs the tar streams are listed. What xl cannot
express is reported, naming the XenAPI field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xenkit.motion.model import Losses, VmSpec
from xenkit.motion.vocab import NULL_REF
from xenkit.motion.xenapi_record import Drive, Interface, RecordView, spec_from_records
from xenkit.motion.xva.errors import BadXva
from xenkit.motion.xva.ovaxml import OvaXml, XvaObject


@dataclass(frozen=True)
class StreamedVdi:
    """A VDI whose chunks the tar holds; ``disk`` indexes the spec's disks, None
    for one read and checked but not kept (a suspend image, another VM's)."""

    id: str
    virtual_size: int
    disk: int | None


@dataclass(frozen=True)
class Import:
    spec: VmSpec
    vdis: tuple[StreamedVdi, ...]


def view(obj: XvaObject) -> RecordView:
    """One object's record, failing with the object named."""
    return RecordView(obj.snapshot, f"ova.xml: {obj.cls} {obj.id}", BadXva)


def import_spec(ova: OvaXml, losses: Losses) -> Import:
    return _Reader(ova, losses).read()


class _Reader:
    def __init__(self, ova: OvaXml, losses: Losses) -> None:
        self.ova = ova
        self.losses = losses
        self.by_id = ova.by_id()

    def get(self, ref: str, cls: str, who: str) -> RecordView | None:
        obj = self.by_id.get(ref)
        if obj is None or obj.cls != cls:
            if ref != NULL_REF and ref:
                self.losses.lost(f"{who}", f"{ref} is not in the export")
            return None
        return view(obj)

    def read(self) -> Import:
        vms = [o for o in self.ova.of_class("VM") if not view(o).flag("is_control_domain")]
        if not vms:
            raise BadXva("ova.xml holds no VM")
        live = [o for o in vms if not view(o).flag("is_a_snapshot")] or vms
        vm = live[0]
        for other in vms:
            if other is not vm:
                snapshot = view(other).flag("is_a_snapshot")
                self.losses.lost(
                    "VM.snapshots" if snapshot else "VM",
                    f"{view(other).text('name_label')!r} ({other.id}) is not read:"
                    " one VM per conversion",
                )
        spec, refs = spec_from_records(
            view(vm),
            self.drives(vm.id),
            self.interfaces(vm.id),
            self.losses,
            prefix="VM.",
            fallback_name=vm.id,
            carrier="the XVA",
        )
        disks = tuple(
            d if ref is None else dataclasses.replace(d, path=f"{d.vdev}.raw")
            for d, ref in zip(spec.disks, refs, strict=True)
        )
        kept: dict[str, int] = {}
        for i, ref in enumerate(refs):
            if ref is not None and ref not in kept:
                kept[ref] = i
        return Import(dataclasses.replace(spec, disks=disks), self.streamed(kept))

    def of_vm(self, cls: str, vm_id: str) -> list[RecordView]:
        """The VM's VBDs or VIFs."""
        views = [view(obj) for obj in self.ova.of_class(cls)]
        return [v for v in views if v.text("VM") == vm_id]

    def drives(self, vm_id: str) -> list[Drive]:
        out: list[Drive] = []
        for vbd in self.of_vm("VBD", vm_id):
            ref = vbd.text("VDI")
            where = f"VBD {vbd.text('userdevice')}"
            vdi = None if vbd.flag("empty") else self.get(ref, "VDI", where)
            out.append(Drive(vbd, vdi, ref, iso=vdi is not None and self.iso(vdi)))
        return out

    def interfaces(self, vm_id: str) -> list[Interface]:
        return [
            Interface(vif, self.get(vif.text("network"), "network", f"VIF {vif.text('device')}"))
            for vif in self.of_vm("VIF", vm_id)
        ]

    def iso(self, vdi: RecordView) -> bool:
        sr = self.by_id.get(vdi.text("SR"))
        return sr is not None and view(sr).text("content_type") == "iso"

    def streamed(self, kept: dict[str, int]) -> tuple[StreamedVdi, ...]:
        """The VDIs xapi's exporter streams (``Import.non_cdrom_vdis``): those of
        every non-CD VBD in the export, except on ISO SRs, and suspend images."""
        on_disks: set[str] = set()
        for obj in self.ova.of_class("VBD"):
            vbd = view(obj)
            if vbd.text("type", "Disk") != "CD" and not vbd.flag("empty"):
                on_disks.add(vbd.text("VDI"))
        out: list[StreamedVdi] = []
        for obj in self.ova.of_class("VDI"):
            vdi = view(obj)
            if (obj.id in on_disks and not self.iso(vdi)) or vdi.text("type") == "suspend":
                if obj.id not in kept:
                    self.losses.lost(
                        "VDI", f"{obj.id} {vdi.text('name_label')!r} is not a disk of the VM"
                    )
                out.append(StreamedVdi(obj.id, vdi.integer("virtual_size"), kept.get(obj.id)))
        return tuple(sorted(out, key=lambda v: v.id))
