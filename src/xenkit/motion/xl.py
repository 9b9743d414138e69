"""xl.cfg to and from the neutral :class:`VmSpec`.

Reading keeps every key ``VmSpec`` has no field for in ``VmSpec.extra``, as xl.cfg
text, so that a format able to carry it verbatim (an XVA's ``other_config``, an OVF's
XenServer section) brings it back to xl unchanged, and a format that cannot reports
it by name. Writing gives an xl.cfg that xl 4.17 (and ``xenkit config check``) reads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from xenkit.config import DomainConfig
from xenkit.config.device import DeviceSpec
from xenkit.config.disk import DiskFormat as XlDiskFormat
from xenkit.config.disk import DiskSpec
from xenkit.config.model import DEFAULT_MEMORY_MIB, resolve_type
from xenkit.config.strings import quote
from xenkit.config.syntax import parse_document
from xenkit.config.vif import NicType, VifSpec
from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskFormat, DiskRef, GuestType, Losses, NicRef, VmSpec
from xenkit.motion.vocab import (
    XL_PLATFORM_FLAGS,
    XL_TIMER_MODES,
    XL_TSC_MODES,
    XL_VGA,
    flag_text,
    parse_flag,
)

#: The keys ``VmSpec`` holds in its own fields (everything else goes to ``extra``).
CARRIED = frozenset(
    {
        "name", "type", "builder", "uuid", "memory", "maxmem", "vcpus", "maxvcpus",
        "kernel", "ramdisk", "cmdline", "root", "extra", "bootloader", "bootloader_args",
        "firmware", "bios", "boot", "acpi", "apic", "pae", "nx", "viridian", "hpet",
        "videoram", "stdvga", "vga", "rtc_timeoffset", "on_poweroff", "on_reboot",
        "on_crash", "cpu_weight", "cap", "disk", "vif", "unknown",
    }
)  # fmt: skip
PLATFORM_FLAGS = ("acpi", "apic", "pae", "nx", "hpet")
FORMATS: dict[XlDiskFormat, DiskFormat] = {
    XlDiskFormat.RAW: "raw",
    XlDiskFormat.QCOW2: "qcow2",
    XlDiskFormat.VHD: "vhd",
}
_IDENT = re.compile(r"[a-z][._0-9a-z]*")
_SILENT_PLATFORM = frozenset({"device-model"})
"""Platform keys xl needs no word for: xl always runs upstream qemu."""


def spec_from_xl(config: DomainConfig, *, base: Path, losses: Losses) -> VmSpec:
    """The VM an xl.cfg describes. Relative disk targets are taken from ``base``
    (the config's directory); disk sizes are left 0 for the caller, who opens them."""
    if not config.name:
        raise UsageError("the xl config has no name", hint='add: name = "..."')
    kind = resolve_type(config.type, config.builder)
    if kind is None:
        raise UsageError(f"xl would refuse type={config.type!r} builder={config.builder!r}")
    guest: GuestType = kind.value
    memory = config.memory or config.maxmem or DEFAULT_MEMORY_MIB
    platform: dict[str, str] = {}
    for flag in PLATFORM_FLAGS:
        value = getattr(config, flag)
        if value is not None:
            platform[flag] = flag_text(value)
    if isinstance(config.viridian, bool):
        platform["viridian"] = flag_text(config.viridian)
    elif config.viridian:
        platform["viridian"] = "true"
        losses.approximated("viridian", f"groups {list(config.viridian)} become viridian=true")
    if config.videoram is not None:
        platform["videoram"] = str(config.videoram)
    if config.stdvga or config.vga == "stdvga":
        platform["vga"] = "std"
    elif config.vga == "cirrus":
        platform["vga"] = "cirrus"
    if config.rtc_timeoffset is not None:
        platform["timeoffset"] = str(config.rtc_timeoffset)
    extra = {
        f.name: xl_value(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in CARRIED and _is_set(getattr(config, f.name))
    }
    extra.update({key: xl_value(_plain(value)) for key, value in config.unknown.items()})
    if config.vga not in (None, "stdvga", "cirrus"):
        extra["vga"] = xl_value(config.vga)
    disks = tuple(_disk(d, n, base, losses) for n, d in enumerate(config.disk))
    first = next((i for i, d in enumerate(disks) if not d.cdrom), None)
    if first is not None:
        disks = tuple(dataclasses.replace(d, bootable=i == first) for i, d in enumerate(disks))
    return VmSpec(
        name=config.name,
        guest_type=guest,
        uuid=config.uuid,
        memory_mib=memory,
        maxmem_mib=config.maxmem,
        vcpus=config.vcpus or 1,
        maxvcpus=config.maxvcpus,
        kernel=config.kernel,
        ramdisk=config.ramdisk,
        cmdline=_cmdline(config),
        bootloader=config.bootloader,
        bootloader_args=_joined(config.bootloader_args),
        firmware=_firmware(config, guest, losses, extra),
        boot_order=config.boot,
        platform=platform,
        on_poweroff=config.on_poweroff or "destroy",
        on_reboot=config.on_reboot or "restart",
        on_crash=config.on_crash or "destroy",
        cpu_weight=config.cpu_weight,
        cap=config.cap,
        disks=disks,
        nics=tuple(_nic(v, n, losses) for n, v in enumerate(config.vif)),
        extra=extra,
    )


def xl_text(spec: VmSpec, *, comment: str = "", losses: Losses | None = None) -> str:
    """The xl.cfg for ``spec``; disk targets are the DiskRefs' paths.

    ``comment`` and the spec's description open the file as comments. Platform
    flags travel in the spec under their XenAPI names; here they become the xl
    keys xl.cfg(5) gives them (``nested-virt`` is ``nestedhvm``, ``timeoffset``
    is ``rtc_timeoffset``...). What xl cannot say goes to ``losses`` (if given),
    named by the spec's key (``platform:secureboot``...), so the file never
    claims a setting it does not make.
    """
    sink = losses if losses is not None else Losses()
    out: list[tuple[str, str]] = [("name", quote(spec.name)), ("type", quote(spec.guest_type))]
    if spec.uuid:
        out.append(("uuid", quote(spec.uuid)))
    out.append(("memory", str(spec.memory_mib)))
    if spec.maxmem_mib:
        out.append(("maxmem", str(spec.maxmem_mib)))
    out.append(("vcpus", str(spec.vcpus)))
    if spec.maxvcpus:
        out.append(("maxvcpus", str(spec.maxvcpus)))
    for key in ("kernel", "ramdisk", "cmdline", "bootloader"):
        value = getattr(spec, key)
        if value:
            out.append((key, quote(value)))
    if spec.bootloader_args:
        out.append(("bootloader_args", _list([quote(a) for a in spec.bootloader_args.split()])))
    if spec.firmware:
        out.append(("firmware", quote(spec.firmware)))
    if spec.boot_order:
        out.append(("boot", quote(spec.boot_order)))
    if spec.guest_type == "hvm":
        out.extend(_platform(spec.platform, sink))
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        out.append((key, quote(getattr(spec, key))))
    if spec.cpu_weight is not None:
        out.append(("cpu_weight", str(spec.cpu_weight)))
    if spec.cap is not None:
        out.append(("cap", str(spec.cap)))
    disks = [d for d in (disk_spec_text(disk, sink) for disk in spec.disks) if d is not None]
    if disks:
        out.append(("disk", _list([quote(d) for d in disks])))
    if spec.nics:
        vifs = [vif_spec_text(nic, sink, index=i) for i, nic in enumerate(spec.nics)]
        out.append(("vif", _list([quote(v) for v in vifs])))
    written = {key for key, _ in out}
    for key, value in sorted(spec.extra.items()):
        if not _IDENT.fullmatch(key):
            sink.lost(key, "not an xl key")
        elif key in written:
            sink.lost(key, f"{value}: the VM's own {key} was written instead")
        else:
            out.append((key, _source(value)))
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"# {line}".rstrip() for line in spec.description.splitlines()]
    lines += [f"{key} = {value}" for key, value in out]
    return "\n".join(lines) + "\n"


def disk_spec_text(disk: DiskRef, losses: Losses | None = None) -> str | None:
    """The disk's xl disk spec; None (reported) when a target= cannot say its path."""
    if disk.cdrom and not disk.path:
        return f"format=empty, vdev={disk.vdev}, access=ro, devtype=cdrom"
    if "\n" in disk.path:
        if losses is not None:
            losses.lost(f"disk {disk.vdev}", "its path has a newline, which target= cannot carry")
        return None
    parts = [
        f"format={disk.format}",
        f"vdev={disk.vdev}",
        f"access={'ro' if disk.readonly or disk.cdrom else 'rw'}",
    ]
    if disk.cdrom:
        parts.append("devtype=cdrom")
    # target= takes the rest of the spec, but xl strips one trailing comma: give it one.
    parts.append(f"target={disk.path}" + ("," if disk.path.endswith(",") else ""))
    return ", ".join(parts)


def vif_spec_text(nic: NicRef, losses: Losses | None = None, *, index: int = 0) -> str:
    """The interface's xl vif spec; a value with a comma cannot be said (reported)."""
    parts: list[str] = []
    for key, value in (("mac", nic.mac), ("bridge", nic.bridge), ("model", nic.model)):
        if value is None:
            continue
        if "," in value:
            if losses is not None:
                losses.lost(f"vif {index} {key}", f"{value}: a vif entry cannot carry a comma")
            continue
        parts.append(f"{key}={value}")
        if key == "model":
            parts.append("type=ioemu")
    if nic.mtu:
        parts.append(f"mtu={nic.mtu}")
    return ",".join(parts)


def xl_value(value: object) -> str:
    """A typed DomainConfig value as xl.cfg text (how ``extra`` keeps it)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, DeviceSpec):
        return quote(value.text)
    if isinstance(value, VifSpec):
        return quote(value.to_spec())
    if isinstance(value, tuple):
        return "[ " + ", ".join(xl_value(v) for v in value) + " ]"
    return quote(str(value))


def _source(value: str) -> str:
    """``extra`` values are xl source text; anything that does not parse as a
    value is taken as a plain string."""
    if value.strip() and "\n" not in value:
        doc = parse_document(f"k = {value}\n", "<extra>")
        if not doc.errors and len(doc.assignments) == 1:
            return value.strip()
    return quote(value)


def _platform(platform: dict[str, str], losses: Losses) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in sorted(platform.items()):
        name = f"platform:{key}"
        number = value.strip()
        if key in XL_PLATFORM_FLAGS:
            flag = parse_flag(value)
            if flag is None:
                losses.lost(name, f"{value!r} is not a boolean")
            else:
                out.append((XL_PLATFORM_FLAGS[key], "1" if flag else "0"))
        elif key == "videoram" and number.isdigit():
            out.append(("videoram", number))
        elif key == "vga" and value in XL_VGA:
            out.append(("vga", quote(XL_VGA[value])))
        elif key == "timeoffset" and re.fullmatch(r"-?[0-9]+", number):
            # xl's lexer has no minus sign, but libxlu keeps every atom as a string
            # and its number getter (strtol) reads "-3600" as -3600.
            out.append(("rtc_timeoffset", quote(number) if number.startswith("-") else number))
        elif key == "tsc_mode" and number.isdigit() and int(number) < len(XL_TSC_MODES):
            out.append(("tsc_mode", quote(XL_TSC_MODES[int(number)])))
        elif key == "timer_mode" and number.isdigit() and int(number) < len(XL_TIMER_MODES):
            out.append(("timer_mode", quote(XL_TIMER_MODES[int(number)])))
        elif key == "usb_tablet":
            if parse_flag(value):
                out.append(("usbdevice", quote("tablet")))
        elif key == "hvm_serial" and value:
            out.append(("serial", quote(value)))
        elif key == "secureboot" and not parse_flag(value):
            continue
        elif key not in _SILENT_PLATFORM:
            losses.lost(name, f"{value}: xl has no such setting")
    return out


def _disk(d: DiskSpec, n: int, base: Path, losses: Losses) -> DiskRef:
    where = f"disk[{n}]"
    if not d.vdev:
        raise UsageError(f"{where} has no vdev", hint="give each disk a vdev= (xvda, hda...)")
    if d.format not in FORMATS and d.format is not XlDiskFormat.EMPTY:
        raise UsageError(
            f"{where} ({d.vdev}): format {d.format.value} cannot be moved",
            hint="convert it first: qemu-img convert -O qcow2 ...",
        )
    if d.script:
        losses.lost(
            f"{where}.script", f"{d.script} is xl's hotplug script; the target's own applies"
        )
    path = d.pdev_path or ""
    if path and not Path(path).is_absolute():
        path = str(base / path)
    return DiskRef(
        vdev=d.vdev,
        path=path,
        format=FORMATS.get(d.format, "raw"),
        readonly=not d.readwrite,
        cdrom=d.is_cdrom,
    )


def _nic(v: VifSpec, n: int, losses: Losses) -> NicRef:
    mac = ":".join(f"{b:02x}" for b in v.mac) if any(v.mac) else None
    for key in ("ip", "script", "rate_bytes_per_interval", "ifname", "gatewaydev"):
        if getattr(v, key):
            losses.lost(f"vif[{n}].{key}", "has no counterpart on the target")
    model = v.model if v.nictype is NicType.VIF_IOEMU or v.model else None
    return NicRef(mac=mac, bridge=v.bridge, model=model, mtu=v.mtu or None)


def _firmware(
    config: DomainConfig, guest: str, losses: Losses, extra: dict[str, str]
) -> str | None:
    if guest != "hvm":
        if config.firmware:
            extra["firmware"] = xl_value(config.firmware)
        return None
    chosen = config.firmware or config.bios
    if chosen is None:
        return "bios"
    if chosen in ("uefi", "ovmf"):
        return "uefi"
    if chosen not in ("bios", "seabios"):
        losses.approximated("firmware" if config.firmware else "bios", f"{chosen} becomes BIOS")
    return "bios"


def _cmdline(config: DomainConfig) -> str | None:
    if config.cmdline:
        return config.cmdline
    parts = [f"root={config.root}"] if config.root else []
    if config.extra:
        parts.append(config.extra)
    return " ".join(parts) or None


def _joined(value: str | tuple[str, ...] | None) -> str | None:
    return " ".join(value) if isinstance(value, tuple) else value


def _is_set(value: object) -> bool:
    return value is not None and value != () and value != {}


def _plain(value: object) -> object:
    """An unknown key's value (a string or nested lists of strings) as a tuple tree."""
    return tuple(_plain(v) for v in value) if isinstance(value, list) else value


def _list(items: list[str]) -> str:
    return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
