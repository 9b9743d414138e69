"""OVF envelope → VmSpec, for the dialects found in the wild.

DMTF 1.x and 2.x, as VMware (ovftool, vCenter, vCloud), VirtualBox, XenCenter,
virt-v2v, OpenXT and hand-written test files write them. The rules:

* One VirtualSystem is read. In a VirtualSystemCollection the first one (or
  the one named by ``system``) is taken and the others are reported lost.
* Of several VirtualHardwareSections the first whose VirtualSystemType starts
  with ``xen`` or ``hvm`` is used (as XenCenter picks), else the first.
* The guest type comes from ``domain_type``, then ``HVM_boot_policy`` (the
  XenCenter settings, :mod:`.xensettings`), then the first entry of
  VirtualSystemType: ``xen*`` is PV, ``hvm*`` and any other hypervisor's
  family is HVM: another hypervisor's guest expects emulated hardware.
* A section the reader does not know is reported lost — unless it is in the
  OVF namespace and required (``ovf:required`` defaults to true), which
  DSP0243 says a reader must refuse.
* ``vbox:Machine`` duplicates the DMTF sections in VirtualBox's own terms; it
  is ignored, reported.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskFormat, DiskRef, GuestType, Losses, VmSpec
from xenkit.motion.ovf import vocab
from xenkit.motion.ovf.hardware import Drive, Hardware, name_drives, read_hardware, read_nics
from xenkit.motion.ovf.xensettings import apply_xen_settings
from xenkit.motion.ovf.xmlin import (
    any_attr,
    attr,
    child,
    children,
    is_ovf,
    kind,
    label,
    local,
    namespace,
    parse_xml,
    required,
    text,
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_HOST_RESOURCE = re.compile(r"(?:ovf:)?/(disk|file)/(.+)")

# Sections DSP0243 defines whose content VmSpec cannot hold: lost, never refused.
_NOT_CARRIED = {
    "ProductSection": "product information and properties",
    "EulaSection": "the licence agreement",
    "StartupSection": "start/stop order and delays",
    "InstallSection": "the install-time boot",
    "ResourceAllocationSection": "resource reservations",
    "DeploymentOptionSection": "deployment options",
    "OperatingSystemSection": "the guest OS type",
    "ScaleOutSection": "scale-out counts",
    "PlacementGroupSection": "placement policy",
    "PlacementSection": "placement policy",
    "EncryptionSection": "encryption",
    "EnvironmentFilesSection": "environment files",
    "BootDeviceSection": "boot devices",
    "SharedDiskSection": "shared disks",
    "CompatibilitySection": "compatibility",
    "PropertySection": "properties",
    "AnnotationSection": "an annotation of the collection",
}


@dataclass(frozen=True, kw_only=True)
class OvfFileRef:
    """A file of the package that holds a disk or a CD image of the VM.

    ``href`` is the tar member name or the path relative to the ``.ovf``;
    ``size`` as declared (``ovf:size``, None if absent), ``compression`` is
    None or ``"gzip"`` (what is stored, and digested, is compressed);
    ``format`` is the image format inside; ``capacity`` is the virtual size in
    bytes (0: unknown, take it from the image). ``vdevs`` are the VmSpec drives
    this file is the image of (usually one).
    """

    href: str
    file_id: str
    size: int | None
    compression: str | None
    format: DiskFormat
    format_uri: str
    capacity: int
    vdevs: tuple[str, ...]


@dataclass
class _File:
    href: str
    size: int | None
    compression: str | None


@dataclass
class _Disk:
    disk_id: str
    file_id: str | None
    capacity: int
    format_uri: str
    bootable: bool


def parse_envelope(
    xml: bytes, *, losses: Losses, system: str | None = None, source: str = "OVF"
) -> tuple[VmSpec, list[OvfFileRef]]:
    """The VM an envelope describes and the files holding its drives.

    The VmSpec's disks have ``path`` set to the file's ``href`` (``""`` for a
    blank disk to create or an empty CD drive). ``system`` picks a
    VirtualSystem of a collection by ``ovf:id``."""
    root = parse_xml(xml, source)
    if local(root.tag) != "Envelope" or not is_ovf(root):
        raise UsageError(
            f"{source}: not an OVF envelope (the root element is {root.tag})",
            hint="an OVF's root is Envelope in http://schemas.dmtf.org/ovf/envelope/1 or /2",
        )
    files: dict[str, _File] = {}
    disks: dict[str, _Disk] = {}
    configuration: str | None = None
    content: ET.Element | None = None
    appliance: ET.Element | None = None
    for el in root:
        k = kind(el)
        if (
            not is_ovf(el)
            and local(el.tag) == "ApplianceSection"
            and namespace(el.tag) == vocab.XCI
        ):
            appliance = el
        elif not is_ovf(el):
            _foreign(el, losses)
        elif k == "References":
            files = _references(el, source)
        elif k == "DiskSection":
            disks.update(_disk_section(el, losses))
        elif k == "DeploymentOptionSection":
            configuration = _deployment(el, losses)
        elif k in ("VirtualSystem", "VirtualSystemCollection"):
            content = el
        elif k in ("NetworkSection", "Info", "Strings"):
            continue
        else:
            _section(el, source, losses)
    if content is None:
        raise UsageError(
            f"{source}: the envelope has no VirtualSystem", hint="nothing to import: not a VM"
        )
    vs = _choose_system(content, system, source, losses)
    spec, used = _read_system(vs, files, disks, configuration, appliance, source, losses)
    return spec, used


def _references(el: ET.Element, source: str) -> dict[str, _File]:
    files: dict[str, _File] = {}
    for f in children(el, "File"):
        file_id = attr(f, "id") or ""
        href = attr(f, "href") or ""
        if attr(f, "chunkSize"):
            raise UsageError(
                f"{source}: File {href!r} is split into chunks (ovf:chunkSize)",
                hint="join the chunks and drop ovf:chunkSize, or export the VM unchunked",
            )
        compression = attr(f, "compression")
        if compression in (None, "", "identity"):
            compression = None
        elif compression != "gzip":
            raise UsageError(
                f"{source}: File {href!r} has compression {compression!r}",
                hint="only gzip is defined by DSP0243; decompress the file first",
            )
        size_text = attr(f, "size")
        size = int(size_text) if size_text and size_text.isdigit() else None
        files[file_id] = _File(href, size, compression)
    return files


def _disk_section(el: ET.Element, losses: Losses) -> dict[str, _Disk]:
    out: dict[str, _Disk] = {}
    for d in children(el, "Disk"):
        disk_id = attr(d, "diskId") or ""
        where = f"Disk[diskId={disk_id}]"
        capacity = _capacity(d, where, losses)
        bootable = (d.get(f"{{{vocab.XENOVF}}}isBootable") or "").lower() == "true"
        out[disk_id] = _Disk(
            disk_id, attr(d, "fileRef"), capacity, attr(d, "format") or "", bootable
        )
        if attr(d, "parentRef"):
            losses.lost(where, "a differencing disk (ovf:parentRef): its chain is not followed")
    return out


def _capacity(d: ET.Element, where: str, losses: Losses) -> int:
    value = (attr(d, "capacity") or "").strip()
    units = attr(d, "capacityAllocationUnits") or "byte"
    multiplier = vocab.unit_multiplier(units)
    if not value.isdigit() or multiplier is None:
        losses.approximated(
            where, f"capacity {value!r} {units!r} is not a size; the image's own size is used"
        )
        return 0
    return int(value) * multiplier


def _deployment(el: ET.Element, losses: Losses) -> str | None:
    configs = children(el, "Configuration")
    if not configs:
        return None
    chosen = next((c for c in configs if (attr(c, "default") or "").lower() == "true"), configs[0])
    chosen_id = attr(chosen, "id")
    others = [attr(c, "id") or "" for c in configs if c is not chosen]
    if others:
        losses.lost(
            "DeploymentOptionSection",
            f"configuration {chosen_id!r} is used; {', '.join(map(repr, others))} are not",
        )
    return chosen_id


def _foreign(el: ET.Element, losses: Losses) -> None:
    if namespace(el.tag) == vocab.VBOX and local(el.tag) == "Machine":
        losses.lost(
            "vbox:Machine", "VirtualBox's own copy of the settings is ignored; DMTF items are read"
        )
        return
    note = " (marked required)" if required(el) and attr(el, "required") else ""
    losses.lost(label(el), f"an extension section xenkit does not read{note}")


def _section(el: ET.Element, source: str, losses: Losses) -> None:
    k = kind(el)
    if k in _NOT_CARRIED:
        losses.lost(k, f"{_NOT_CARRIED[k]}: VmSpec has no place for it")
        return
    if required(el):
        raise UsageError(
            f"{source}: required section {k} is not understood",
            hint="DSP0243 makes an importer refuse it; remove the section or set "
            'ovf:required="false" if the VM works without it',
        )
    losses.lost(k, "an optional section xenkit does not read")


def _choose_system(
    content: ET.Element, wanted: str | None, source: str, losses: Losses
) -> ET.Element:
    systems = [el for el in content.iter() if is_ovf(el) and kind(el) == "VirtualSystem"]
    if kind(content) == "VirtualSystem":
        systems = [content]
    ids = [attr(s, "id") or "" for s in systems]
    if wanted is not None:
        if wanted not in ids:
            raise UsageError(
                f"{source}: no VirtualSystem {wanted!r}",
                hint=f"the envelope has: {', '.join(ids) or 'none'}",
            )
        chosen = systems[ids.index(wanted)]
    elif systems:
        chosen = systems[0]
    else:
        raise UsageError(
            f"{source}: the VirtualSystemCollection holds no VirtualSystem",
            hint="nothing to import: not a VM",
        )
    if kind(content) == "VirtualSystemCollection":
        others = [i for i in ids if i != (attr(chosen, "id") or "")]
        losses.lost(
            f"VirtualSystemCollection[id={attr(content, 'id') or ''}]",
            f"a collection of {len(systems)} system{'s' * (len(systems) != 1)}; "
            f"only {attr(chosen, 'id')!r} is read"
            + (f", not {', '.join(map(repr, others))}" if others else ""),
        )
        for el in content:
            if not is_ovf(el):
                _foreign(el, losses)
            elif kind(el) not in ("VirtualSystem", "VirtualSystemCollection", "Info", "Name"):
                _section(el, source, losses)
    return chosen


def _read_system(
    vs: ET.Element,
    files: dict[str, _File],
    disks: dict[str, _Disk],
    configuration: str | None,
    appliance: ET.Element | None,
    source: str,
    losses: Losses,
) -> tuple[VmSpec, list[OvfFileRef]]:
    vs_id = attr(vs, "id") or ""
    name = ""
    description = ""
    sections: list[ET.Element] = []
    for el in vs:
        k = kind(el)
        if not is_ovf(el):
            _foreign(el, losses)
        elif k == "Info":
            continue
        elif k == "Name":
            name = text(el)
        elif k == "AnnotationSection":
            description = text(child(el, "Annotation"))
        elif k == "VirtualHardwareSection":
            sections.append(el)
        elif k == "OperatingSystemSection":
            os_text = text(child(el, "Description")) or f"id {attr(el, 'id')}"
            losses.lost(k, f"guest OS {os_text!r}: VmSpec has no field for it")
        else:
            _section(el, source, losses)
    vhs = _choose_hardware(sections, source, losses)
    hw = read_hardware(vhs, losses, configuration)
    types = [t.lower() for t in hw.system_types]
    first = types[0] if types else ""
    xen_dialect = first.startswith(("xen", "hvm")) or bool(hw.xen_pairs)
    guest_type: GuestType = "pv" if first.startswith("xen") else "hvm"
    if xen_dialect and not description:
        description = hw.system.get("description", "")
    identifier = hw.system.get("virtualsystemidentifier", "")
    element_name = hw.system.get("elementname", "")
    if element_name == "Virtual Hardware Family":
        element_name = ""
    spec = VmSpec(
        name=name or vs_id or element_name or "vm",
        guest_type=guest_type,
        uuid=identifier.lower() if _UUID.fullmatch(identifier) else None,
        description=description,
        memory_mib=hw.memory_mib if hw.memory_mib is not None else 128,
        vcpus=hw.vcpus or 1,
    )
    if hw.memory_mib is None:
        losses.approximated("Item[ResourceType=4]", "no memory item; 128 MiB")
    if hw.vcpus is None:
        losses.approximated("Item[ResourceType=3]", "no CPU item; 1 vCPU")
    if xen_dialect and hw.cpu_limit is not None and spec.vcpus < hw.cpu_limit < 100_000:
        # XenCenter's SetCPUs: VirtualQuantity = VCPUs_at_startup, Limit = VCPUs_max.
        spec = replace(spec, maxvcpus=hw.cpu_limit)
    spec, settings_type = apply_xen_settings(spec, hw.xen_pairs, losses)
    if settings_type is not None:
        guest_type = settings_type
    if appliance is not None:
        spec, guest_type = _openxt(appliance, vs_id, spec, guest_type, losses)
    if hw.vmw_firmware and not spec.firmware and guest_type == "hvm":
        spec = replace(spec, firmware=hw.vmw_firmware)
    if guest_type != "hvm" and not (spec.kernel or spec.bootloader):
        losses.approximated("PV_bootloader", "a PV guest with no kernel or bootloader; pygrub")
        spec = replace(spec, bootloader="pygrub")
    drives, used = _drives(hw, guest_type, files, disks, source, losses)
    nics = read_nics(hw.nics, xen_dialect, losses)
    _unused_files(files, used, losses)
    return replace(spec, guest_type=guest_type, disks=drives, nics=nics), used


def _choose_hardware(sections: list[ET.Element], source: str, losses: Losses) -> ET.Element:
    if not sections:
        raise UsageError(
            f"{source}: the VirtualSystem has no VirtualHardwareSection",
            hint="nothing says what hardware the VM has: not importable as a VM",
        )

    def system_type(vhs: ET.Element) -> str:
        sys_el = child(vhs, "System")
        if sys_el is None:
            return ""
        return next((text(c) for c in sys_el if local(c.tag) == "VirtualSystemType"), "")

    chosen = next(
        (s for s in sections if system_type(s).lower().startswith(("xen", "hvm"))), sections[0]
    )
    for s in sections:
        if s is not chosen:
            losses.lost(
                f"VirtualHardwareSection[{system_type(s)}]",
                f"another hardware description; {system_type(chosen)!r} is read",
            )
    return chosen


def _drives(
    hw: Hardware,
    guest_type: GuestType,
    files: dict[str, _File],
    disks: dict[str, _Disk],
    source: str,
    losses: Losses,
) -> tuple[tuple[DiskRef, ...], list[OvfFileRef]]:
    virtualbox = any(t.lower().startswith("virtualbox") for t in hw.system_types[:1])
    names = name_drives(hw.drives, guest_type, losses, virtualbox=virtualbox)
    refs: dict[str, tuple[_File, str, DiskFormat, str, int, list[str]]] = {}
    out: list[DiskRef] = []
    for drive, vdev in zip(hw.drives, names, strict=True):
        disk = _drive(drive, vdev, files, disks, refs, source, losses)
        if disk is not None:
            out.append(disk)
    used = [
        OvfFileRef(
            href=f.href,
            file_id=file_id,
            size=f.size,
            compression=f.compression,
            format=fmt,
            format_uri=uri,
            capacity=capacity,
            vdevs=tuple(vdevs),
        )
        for file_id, (f, uri, fmt, _, capacity, vdevs) in refs.items()
    ]
    return tuple(out), used


def _drive(
    drive: Drive,
    vdev: str,
    files: dict[str, _File],
    disks: dict[str, _Disk],
    refs: dict[str, tuple[_File, str, DiskFormat, str, int, list[str]]],
    source: str,
    losses: Losses,
) -> DiskRef | None:
    where = f"Item[InstanceID={drive.instance}]"
    host = next((h for h in drive.props.get("hostresource", []) if h), "")
    element_name = drive.one("elementname")
    label = "" if vocab.split_vdev(element_name) else element_name
    connection = ",".join(drive.props.get("connection", []))
    bootable = "bootable=true" in connection.lower()
    base = DiskRef(vdev=vdev, path="", cdrom=drive.cdrom, label=label, bootable=bootable)
    if not host:
        if not drive.cdrom:
            losses.lost(where, "a disk item without HostResource: no image, no size")
            return None
        return base
    m = _HOST_RESOURCE.fullmatch(host)
    if m is None:
        losses.lost(where, f"HostResource {host!r} names no disk or file of the package")
        return None
    what, ident = m.groups()
    if what == "disk":
        disk = disks.get(ident)
        if disk is None:
            losses.lost(where, f"HostResource {host!r}: DiskSection has no disk {ident!r}")
            return None
        file_id, capacity, uri = disk.file_id, disk.capacity, disk.format_uri
        base = replace(base, bootable=base.bootable or disk.bootable)
    else:
        file_id, capacity, uri = ident, 0, vocab.ISO_URI if drive.cdrom else ""
    if file_id is None:
        fmt = vocab.format_from_uri(uri, "")
        return replace(base, virtual_size=capacity, format=fmt.format if fmt else "raw")
    f = files.get(file_id)
    if f is None:
        raise UsageError(
            f"{source}: {where} uses file {file_id!r}, which References does not list",
            hint="the envelope is inconsistent; it was edited or truncated",
        )
    guess = vocab.format_from_uri(uri, f.href)
    if guess is None:
        raise UsageError(
            f"{source}: {f.href!r} has format {uri!r}, which xenkit cannot read",
            hint="convert it to VMDK, VHD, qcow2 or raw and fix ovf:format",
        )
    if not guess.exact:
        losses.approximated(
            f"Disk[fileRef={file_id}].format", f"{uri!r} unknown; {guess.format} by the file name"
        )
    entry = refs.setdefault(file_id, (f, uri, guess.format, vdev, capacity, []))
    if entry[5]:
        losses.approximated(where, f"{f.href!r} is also the image of {entry[5][0]}")
    entry[5].append(vdev)
    return replace(base, path=f.href, format=guess.format, virtual_size=capacity)


def _unused_files(files: dict[str, _File], used: list[OvfFileRef], losses: Losses) -> None:
    taken = {r.file_id for r in used}
    for file_id, f in files.items():
        if file_id not in taken:
            losses.lost(f"File[id={file_id}]", f"{f.href!r} is not a drive of the VM; not read")


def _openxt(
    appliance: ET.Element, vs_id: str, spec: VmSpec, guest_type: GuestType, losses: Losses
) -> tuple[VmSpec, GuestType]:
    """OpenXT's ``xci:ApplianceSection``: a VirtualMachine's PropertyOverride
    says ``hvm`` and how it boots; firewall rules and the rest are lost."""
    lost: list[str] = []
    for vm in appliance:
        if local(vm.tag) == "Disk":
            losses.lost(f"xci:Disk[ovfId={any_attr(vm, 'ovfId')}]", "OpenXT disk settings")
        if local(vm.tag) != "VirtualMachine" or any_attr(vm, "ovfId") != vs_id:
            continue
        for part in vm:
            if local(part.tag) != "PropertyOverride":
                losses.lost(f"xci:{local(part.tag)}", "an OpenXT setting with no Xen equivalent")
                continue
            for prop in part:
                name, value = any_attr(prop, "name") or "", any_attr(prop, "value") or ""
                if name == "hvm":
                    guest_type = "hvm" if value.lower() == "true" else "pv"
                elif name == "cmd-line":
                    spec = replace(spec, cmdline=value)
                elif name == "kernel-extract":
                    losses.approximated(
                        f"xci:Property[name={name}]", f"the kernel {value} is in the disk; pygrub"
                    )
                    spec = replace(spec, bootloader="pygrub")
                else:
                    lost.append(f"{name}={value}")
    if lost:
        losses.lost(
            "xci:PropertyOverride", f"OpenXT settings with no Xen equivalent: {', '.join(lost)}"
        )
    return spec, guest_type
