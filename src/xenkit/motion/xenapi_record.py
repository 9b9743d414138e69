"""VmSpec to and from XenAPI's VM, VBD, VDI and VIF records: the one field mapping
that to-xapi's ``VM.create`` records and an XVA's ``ova.xml`` both use.

Writing gives the fields both need with typed values (an int is an ``int``):
:mod:`xenkit.motion.xapi.records` puts them in wire form for the constructor
calls, :mod:`xenkit.motion.xva.to_records` adds every other datamodel field and
the ``Ref:N`` ids. Reading takes the records through :class:`RecordView`, which
reads a field leniently (an integer may be text, a missing field takes its
datamodel default) and fails in the caller's terms.

Where a XenAPI field only approximates an xl value, or XenAPI has no field for
it, the exact xl value goes into ``other_config`` under ``xenkit-xl-<key>``
when the record alone would not give it back (a VBD's vdev and a VIF's model
always); a setting XenAPI only approximates is reported as approximated. The
readers restore a kept value as long as the field it stands for still says
what it said when it was written, so a VM changed in the pool since is read
as it is now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from xenkit.config.strings import quote
from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, GuestType, Losses, NicRef, VmSpec
from xenkit.motion.vocab import (
    DEFAULT_BOOT_ORDER,
    DEFAULT_MTU,
    HVM_FIRMWARE,
    NULL_REF,
    ON_CRASH,
    ON_NORMAL_EXIT,
    ON_SOFT_RESET,
    PV_KERNEL_DIR,
    XL_ACTION,
    XL_PREFIX,
    MiB,
    disk_index,
    normal_mac,
    unquote,
    vdev_for,
)

HVM_BOOT_POLICY: Final = "BIOS order"
DEFAULT_NIC_MODEL: Final = "rtl8139"
"""The NIC xapi emulates for an HVM guest without ``platform:nic_type``."""

Record = dict[str, Any]
"""Record fields with typed values: ints as ``int``, maps as ``dict[str, str]``."""

VDEV_KEY: Final = XL_PREFIX + "vdev"
MODEL_KEY: Final = XL_PREFIX + "model"

_NIC_TYPES: Final = frozenset({"e1000", DEFAULT_NIC_MODEL})
_SPEC_KEYS: Final = frozenset(
    {
        "firmware",
        "bootloader",
        "bootloader_args",
        "kernel",
        "ramdisk",
        "cmdline",
        "on_poweroff",
        "on_reboot",
        "on_crash",
    }
)
"""``xenkit-xl-`` keys that restore a VmSpec field rather than land in ``extra``."""

_BOOKKEEPING: Final = frozenset(
    {
        "mac_seed",
        "install-methods",
        "install-repository",
        "install-distro",
        "base_template_name",
        "import_task",
        "linux_template",
        "default_template",
        "instant",
        "disks",
        "vgpu_pci",
        "xo:resource:namespace",
    }
)
"""VM.other_config keys that are xapi's or a tool's bookkeeping, not settings."""


@dataclass(frozen=True)
class Target:
    """Where written records go, as far as the mapping cares: ``name`` is said in
    losses (``the XVA``); ``keeps_uuid`` is False for ``VM.create``, which always
    gives the VM a new uuid."""

    name: str
    keeps_uuid: bool


# -- the words both ways share ------------------------------------------------------


def pv_file(path: str, bootloader: str) -> str:
    """Where XenAPI's ``PV_kernel``/``PV_ramdisk`` points for xl's ``path``. With a
    bootloader the path is one in the guest (xl and xapi alike hand it to pygrub);
    without, xapi boots only files in :data:`PV_KERNEL_DIR`."""
    if not path or bootloader or path.startswith(PV_KERNEL_DIR):
        return path
    return PV_KERNEL_DIR + PurePosixPath(path).name


def hvm_firmware(firmware: str | None) -> str | None:
    """XenAPI's ``HVM_boot_params:firmware`` for xl's ``firmware=``/``bios=``
    (None given is bios); None for a firmware XenAPI has no word for."""
    return HVM_FIRMWARE.get((firmware or "bios").lower())


def nic_model_of(nic_type: str | None, guest_type: GuestType) -> str | None:
    """The NIC model ``platform:nic_type`` gives every interface of the VM, as xl
    says it (None: xl's default, which is also xapi's)."""
    if guest_type != "hvm" or nic_type in (None, "", DEFAULT_NIC_MODEL):
        return None
    return nic_type


def _pvshim_on(text: str) -> bool:
    return unquote(text).lower() not in ("0", "false", "")


# -- device numbers ---------------------------------------------------------------


def userdevices(disks: Sequence[DiskRef], losses: Losses) -> list[int]:
    """The VBD ``userdevice`` of each disk: the disk's index in its vdev, so xvdb
    and hdb are both 1. A clash (xvda and hda) moves the later disk to the first
    free number; a partition (xvda1) becomes a whole disk. Both are reported; the
    vdev itself is kept in the VBD for the way back."""
    taken: set[int] = set()
    out: list[int] = []
    for disk in disks:
        index = disk_index(disk.vdev)
        if index is None:
            raise UsageError(
                f"disk vdev {disk.vdev!r} is not a xvdX, hdX, sdX or dNpM name",
                hint="XenAPI numbers a VM's disks; rename the vdev in the xl config",
            )
        number, partition = index
        if partition:
            losses.approximated(
                f"disk {disk.vdev}",
                f"a VBD is a whole disk: the guest sees the image as disk {number} "
                f"(e.g. xvda), not partition {partition}; fix its fstab/root=",
            )
        if number in taken:
            number = next(n for n in range(len(disks) + len(taken) + 1) if n not in taken)
            losses.approximated(
                f"disk {disk.vdev}", f"its device number is taken; userdevice {number} instead"
            )
        taken.add(number)
        out.append(number)
    return out


def boot_disk_index(disks: Sequence[DiskRef]) -> int | None:
    """The disk marked bootable, else the first hard disk: xl (and pygrub) boot that."""
    for i, disk in enumerate(disks):
        if disk.bootable and not disk.cdrom:
            return i
    return next((i for i, d in enumerate(disks) if not d.cdrom), None)


# -- VmSpec -> records --------------------------------------------------------------


def vm_fields(spec: VmSpec, losses: Losses, target: Target) -> Record:
    """The VM's settings as XenAPI fields; losses named by xl key. ``uuid`` and the
    fields that only one kind of record has are the caller's."""
    return _VmWriter(spec, losses, target).fields()


def vbd_fields(
    disk: DiskRef, vm: str, vdi: str | None, *, userdevice: int, bootable: bool
) -> Record:
    """A VBD; ``vdi`` None is an empty drive (a CD-ROM whose ISO stays behind)."""
    return {
        "VM": vm,
        "VDI": vdi or NULL_REF,
        "userdevice": str(userdevice),
        "bootable": bootable,
        "mode": "RO" if disk.readonly or disk.cdrom else "RW",
        "type": "CD" if disk.cdrom else "Disk",
        "empty": vdi is None,
        "other_config": {VDEV_KEY: disk.vdev},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    }


def vdi_fields(disk: DiskRef, sr: str, *, name: str, virtual_size: int) -> Record:
    """A user VDI for ``disk``. Never ``read_only``: an import writes it; the VBD's
    mode keeps a read-only disk read-only for the guest."""
    return {
        "name_label": disk.label or name,
        "name_description": f"imported by xenkit from {disk.path}",
        "SR": sr,
        "virtual_size": virtual_size,
        "type": "user",
        "sharable": False,
        "read_only": False,
        "other_config": {},
    }


def vif_fields(nic: NicRef, vm: str, network: str, *, device: int, mtu: int) -> Record:
    """A VIF; an empty MAC lets xapi choose one. The interface's xl model is kept:
    XenAPI has one emulated model per VM (``platform:nic_type``)."""
    mac = (normal_mac(nic.mac) or nic.mac.lower()) if nic.mac else ""
    return {
        "device": str(device),
        "network": network,
        "VM": vm,
        "MAC": mac,
        "MTU": nic.mtu or mtu,
        "other_config": {MODEL_KEY: nic.model} if nic.model else {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    }


class _VmWriter:
    def __init__(self, spec: VmSpec, losses: Losses, target: Target) -> None:
        self.spec = spec
        self.losses = losses
        self.target = target
        self.extra = dict(spec.extra)
        self.platform = dict(spec.platform)
        self.other_config: dict[str, str] = {}

    def keep(self, key: str, value: str, message: str | None = None) -> None:
        """Keep xl's exact ``value``; with a ``message``, report the approximation."""
        self.other_config[XL_PREFIX + key] = value
        if message is not None:
            self.losses.approximated(key, message)

    def keep_unless(self, key: str, value: str | None, back: str | None) -> None:
        """Keep ``value`` when reading the record would give ``back`` instead."""
        if value is not None and value != back:
            self.keep(key, value)

    def fields(self) -> Record:
        spec = self.spec
        memory = spec.memory_mib * MiB
        record: Record = {
            "name_label": spec.name,
            "name_description": spec.description,
            "user_version": 1,
            "is_a_template": False,
            "memory_static_max": spec.static_max_mib * MiB,
            "memory_dynamic_max": memory,
            "memory_dynamic_min": memory,
            "memory_static_min": memory,
            "VCPUs_params": _vcpus_params(spec),
            "VCPUs_max": max(spec.vcpus, spec.maxvcpus or 0),
            "VCPUs_at_startup": spec.vcpus,
            "actions_after_shutdown": self.action("on_poweroff", spec.on_poweroff, ON_NORMAL_EXIT),
            "actions_after_reboot": self.action("on_reboot", spec.on_reboot, ON_NORMAL_EXIT),
            "actions_after_crash": self.action("on_crash", spec.on_crash, ON_CRASH),
            "domain_type": spec.guest_type,
            "has_vendor_device": self.vendor_device(),
            "platform": self.platform,
            "other_config": self.other_config,
        }
        if self.pvshim():
            record["domain_type"] = "pv_in_pvh"
        softreboot = self.soft_reset()
        if softreboot is not None:
            record["actions_after_softreboot"] = softreboot
        if spec.uuid and not self.target.keeps_uuid:
            self.losses.lost("uuid", "VM.create gives the VM a new uuid")
        record.update(self.hvm_boot() if spec.guest_type == "hvm" else self.pv_boot())
        self.nic_type()
        for key, value in sorted(self.extra.items()):
            self.keep(
                key,
                value,
                f"XenAPI has no field for it: kept in VM.other_config:{XL_PREFIX}{key}"
                " for the way back",
            )
        return record

    def action(self, key: str, value: str, table: Mapping[str, str]) -> str:
        mapped = table.get(value)
        if mapped is None:
            raise UsageError(
                f"{key}={value!r} is not an xl action",
                hint="use destroy, restart, rename-restart, preserve, coredump-destroy,"
                " coredump-restart or soft-reset",
            )
        if XL_ACTION[mapped] != value:
            self.keep(key, value, f"XenAPI has no {value!r} here: the host will {mapped}")
        return mapped

    def vendor_device(self) -> bool:
        text = self.extra.pop("vendor_device", None)
        present = text is not None and unquote(text) == "xenserver"
        self.keep_unless("vendor_device", text, quote("xenserver") if present else None)
        return present

    def pvshim(self) -> bool:
        text = self.extra.pop("pvshim", None)
        if text is None:
            return False
        if not _pvshim_on(text):
            self.keep_unless("pvshim", text, None)
            return False
        if self.spec.guest_type != "pv":
            self.keep("pvshim", text, "only a PV guest can run in XenAPI's PVH shim (pv_in_pvh)")
            return False
        self.keep_unless("pvshim", text, "1")
        return True

    def soft_reset(self) -> str | None:
        text = self.extra.pop("on_soft_reset", None)
        if text is None:
            return None
        value = unquote(text)
        mapped = ON_SOFT_RESET.get(value)
        if mapped is None and value != "soft-reset":
            self.keep("on_soft_reset", text, f"{value}: XenAPI soft-reboots instead")
            return None
        self.keep_unless("on_soft_reset", text, quote(value) if mapped else None)
        return mapped

    def hvm_boot(self) -> Record:
        spec = self.spec
        firmware = hvm_firmware(spec.firmware)
        if firmware is None:
            firmware = "bios"
            self.keep(
                "firmware", str(spec.firmware), "XenAPI has only bios and uefi firmware: bios"
            )
        elif spec.firmware == "rombios":
            self.keep("firmware", spec.firmware, "rombios: XenAPI's HVM guests boot SeaBIOS")
        elif spec.firmware is not None and spec.firmware != firmware:
            self.keep("firmware", spec.firmware, f"XenAPI calls it {firmware}")
        self.platform.setdefault(
            "device-model", "qemu-upstream-uefi" if firmware == "uefi" else "qemu-upstream-compat"
        )
        for key, why in (
            ("kernel", "XenAPI cannot boot an HVM guest from a kernel file"),
            ("ramdisk", "XenAPI cannot boot an HVM guest from a kernel file"),
            ("cmdline", "XenAPI cannot boot an HVM guest from a kernel file"),
            ("bootloader", "an HVM guest boots from its own disks, not a dom0 bootloader"),
            ("bootloader_args", "an HVM guest boots from its own disks, not a dom0 bootloader"),
        ):
            value = getattr(spec, key)
            if value:
                self.keep(key, value, why)
        return {
            "HVM_boot_policy": HVM_BOOT_POLICY,
            "HVM_boot_params": {
                "order": spec.boot_order or DEFAULT_BOOT_ORDER,
                "firmware": firmware,
            },
            **_pv_fields(),
        }

    def pv_boot(self) -> Record:
        spec = self.spec
        bootloader = "pygrub" if spec.bootloader else ""
        if spec.bootloader and PurePosixPath(spec.bootloader).name != "pygrub":
            self.keep(
                "bootloader", spec.bootloader, f"{spec.bootloader}: XenAPI runs pygrub instead"
            )
        else:
            self.keep_unless("bootloader", spec.bootloader, bootloader or None)
        # xl's reader keeps a PV guest's firmware= (pvgrub) as an extra key.
        text = spec.firmware if spec.firmware is not None else self.extra.get("firmware")
        firmware = unquote(text) if text is not None else ""
        if firmware.startswith("pvgrub") and not bootloader:
            bootloader = "pygrub"
            self.extra.pop("firmware", None)
            self.keep(
                "firmware",
                str(text),
                f"{firmware}: XenAPI reads the guest's grub.cfg with pygrub instead",
            )
        elif spec.firmware:
            self.keep(
                "firmware", spec.firmware, f"{spec.firmware}: XenAPI PV guests have no firmware"
            )
        files = {"kernel": spec.kernel or "", "ramdisk": spec.ramdisk or ""}
        for key, path in list(files.items()):
            files[key] = pv_file(path, bootloader)
            if not path or bootloader:
                continue
            if files[key] == path:
                self.losses.approximated(
                    key, f"the file is not in {self.target.name}: put it at {path} on the host"
                )
            else:
                self.keep(
                    key,
                    path,
                    f"XCP-ng loads PV kernels only from {PV_KERNEL_DIR}: copy {path} to"
                    f" {files[key]} on the host",
                )
        if spec.boot_order:
            self.losses.lost("boot", "only HVM guests have a boot order")
        return {
            "HVM_boot_policy": "",
            "HVM_boot_params": {},
            **_pv_fields(
                PV_bootloader=bootloader,
                PV_kernel=files["kernel"],
                PV_ramdisk=files["ramdisk"],
                PV_args=spec.cmdline or "",
                PV_bootloader_args=spec.bootloader_args or "",
            ),
        }

    def nic_type(self) -> None:
        """XenAPI emulates one NIC model for all of an HVM guest's interfaces."""
        if self.spec.guest_type != "hvm" or "nic_type" in self.platform:
            return
        models = {nic.model for nic in self.spec.nics if nic.model}
        if not models:
            return
        chosen = "e1000" if "e1000" in models else DEFAULT_NIC_MODEL
        if chosen != DEFAULT_NIC_MODEL:
            self.platform["nic_type"] = chosen
        if len(models) > 1 or not models <= _NIC_TYPES:
            self.losses.approximated(
                "vif model",
                f"{', '.join(sorted(models))}: XenAPI emulates one NIC model for all of a VM's "
                f"interfaces (platform:nic_type); {chosen}",
            )


def _vcpus_params(spec: VmSpec) -> dict[str, str]:
    params: dict[str, str] = {}
    if spec.cpu_weight is not None:
        params["weight"] = str(spec.cpu_weight)
    if spec.cap is not None:
        params["cap"] = str(spec.cap)
    return params


def _pv_fields(**values: str) -> Record:
    names = ("PV_bootloader", "PV_kernel", "PV_ramdisk", "PV_args", "PV_bootloader_args")
    return {**dict.fromkeys(names, ""), **values, "PV_legacy_args": ""}


# -- records -> VmSpec --------------------------------------------------------------


class RecordView:
    """One XenAPI record, read leniently: an integer may be text, a missing field
    takes its default. A field of the wrong type is ``error``'s exception, the
    record named by ``where``."""

    def __init__(
        self, record: Mapping[str, object], where: str, error: Callable[[str], Exception]
    ) -> None:
        self.record = record
        self.where = where
        self.error = error

    def bad(self, name: str, what: str) -> Exception:
        return self.error(f"{self.where}: {name} is {self.record.get(name)!r}, {what}")

    def text(self, name: str, default: str = "") -> str:
        v = self.record.get(name, default)
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise self.bad(name, "not a string")
        return str(v)

    def integer(self, name: str, default: int = 0) -> int:
        v = self.record.get(name, default)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        try:
            if isinstance(v, str):
                return int(v)
        except ValueError:
            pass
        raise self.bad(name, "not an integer")

    def flag(self, name: str, default: bool = False) -> bool:
        v = self.record.get(name, default)
        if isinstance(v, bool):
            return v
        if v in ("true", "1", 1):
            return True
        if v in ("false", "0", 0):
            return False
        raise self.bad(name, "not a boolean")

    def struct(self, name: str) -> dict[str, str]:
        v = self.record.get(name, {})
        if not isinstance(v, Mapping):
            raise self.bad(name, "not a struct")
        return {str(k): x if isinstance(x, str) else str(x) for k, x in v.items()}

    def refs(self, name: str) -> list[str]:
        v = self.record.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.bad(name, "not an array of references")
        return [x for x in v if isinstance(x, str)]

    def real(self, name: str, default: float) -> float:
        v = self.record.get(name, default)
        try:
            if isinstance(v, int | float | str) and not isinstance(v, bool):
                return float(v)
        except ValueError:
            pass
        raise self.bad(name, "not a number")


@dataclass(frozen=True)
class Drive:
    """A VBD of the VM with its VDI: ``vdi`` None for an empty drive, or a VDI the
    caller could not find (and reported); ``iso`` for a VDI on an ISO SR."""

    vbd: RecordView
    vdi: RecordView | None
    vdi_ref: str
    iso: bool = False


@dataclass(frozen=True)
class Interface:
    """A VIF of the VM with its network (None: not known)."""

    vif: RecordView
    network: RecordView | None


def spec_from_records(
    vm: RecordView,
    drives: Sequence[Drive],
    interfaces: Sequence[Interface],
    losses: Losses,
    *,
    prefix: str = "",
    fallback_name: str = "",
    carrier: str = "the export",
) -> tuple[VmSpec, list[str | None]]:
    """The VmSpec of a VM record, and for each of its disks the VDI reference it
    was read from (None for a CD drive). A disk's ``path`` is that reference, for
    the caller to replace. Losses name the XenAPI field, the VM's after ``prefix``
    (``VM.`` where several classes are read together); ``carrier`` is what
    brought the records (``the XVA``). A VM without a ``name_label`` is named
    ``fallback_name``."""
    spec, refs = _VmReader(vm, losses, prefix, carrier).read(drives, interfaces)
    if not spec.name:
        spec = dataclasses.replace(spec, name=fallback_name)
    return spec, refs


class _VmReader:
    def __init__(self, vm: RecordView, losses: Losses, prefix: str, carrier: str) -> None:
        self.vm = vm
        self.losses = losses
        self.prefix = prefix
        self.carrier = carrier

    def key(self, name: str) -> str:
        return self.prefix + name

    def read(
        self, drives: Sequence[Drive], interfaces: Sequence[Interface]
    ) -> tuple[VmSpec, list[str | None]]:
        vm = self.vm
        guest_type = self.guest_type()
        kept = self.kept()
        extra = {k: v for k, v in kept.items() if k not in _SPEC_KEYS}
        memory_mib, maxmem_mib = self.memory()
        vcpus = vm.integer("VCPUs_at_startup", 1)
        vcpus_max = vm.integer("VCPUs_max", vcpus)
        weight, cap = self.scheduler(extra)
        platform, nic_type, device_model = self.platform(extra)
        firmware, boot_order = self.hvm_boot(guest_type, kept, device_model)
        boot = self.pv_boot(guest_type, kept, extra)
        self.vm_extras(guest_type, kept, extra)
        self.unsupported()
        disks, refs = self.disks(drives, guest_type)
        spec = VmSpec(
            name=vm.text("name_label"),
            guest_type=guest_type,
            uuid=vm.text("uuid") or None,
            description=vm.text("name_description"),
            memory_mib=memory_mib,
            maxmem_mib=maxmem_mib,
            vcpus=vcpus,
            maxvcpus=vcpus_max if vcpus_max > vcpus else None,
            firmware=firmware,
            boot_order=boot_order,
            platform=platform,
            on_poweroff=self.action("actions_after_shutdown", kept.get("on_poweroff")),
            on_reboot=self.action("actions_after_reboot", kept.get("on_reboot")),
            on_crash=self.action("actions_after_crash", kept.get("on_crash")),
            cpu_weight=weight,
            cap=cap,
            disks=disks,
            nics=self.nics(interfaces, guest_type, nic_type),
            extra=extra,
            **boot,
        )
        return spec, refs

    def guest_type(self) -> GuestType:
        domain_type = self.vm.text("domain_type", "unspecified")
        if domain_type in ("hvm", "pv", "pvh"):
            return domain_type  # type: ignore[return-value]
        if domain_type == "pv_in_pvh":
            self.losses.approximated(
                self.key("domain_type"), "pv_in_pvh: a PV guest in xl's PVH shim (pvshim=1)"
            )
            return "pv"
        return "pv" if self.vm.text("HVM_boot_policy") == "" else "hvm"

    def kept(self) -> dict[str, str]:
        """The ``xenkit-xl-`` values; other settings in other_config are reported."""
        other = self.vm.struct("other_config")
        for key in sorted(other):
            internal = key in _BOOKKEEPING or key.startswith(("last_shutdown_", "import_", "xo:"))
            if not key.startswith(XL_PREFIX) and not internal:
                self.losses.lost(
                    self.key(f"other_config:{key}"), f"{other[key]!r}: xl has no such setting"
                )
        return {k[len(XL_PREFIX) :]: v for k, v in other.items() if k.startswith(XL_PREFIX)}

    def memory(self) -> tuple[int, int | None]:
        vm = self.vm
        smax = vm.integer("memory_static_max")
        dmax = vm.integer("memory_dynamic_max", smax)
        dmin = vm.integer("memory_dynamic_min", dmax)
        if dmax <= 0:
            raise vm.error(f"{vm.where} has no memory_dynamic_max")
        if dmin < dmax:
            self.losses.approximated(
                self.key("memory_dynamic_min"),
                f"{dmin >> 20} MiB: xl has no dynamic minimum (no DMC): the guest starts with"
                " memory_dynamic_max",
            )
        target = self.mib("memory_dynamic_max", dmax)
        top = self.mib("memory_static_max", smax) if smax > dmax else target
        return target, top if top > target else None

    def mib(self, name: str, value: int) -> int:
        mib = -(-value // MiB)
        if mib * MiB != value:
            self.losses.approximated(self.key(name), f"{value} bytes is not whole MiB; {mib} MiB")
        return mib

    def scheduler(self, extra: dict[str, str]) -> tuple[int | None, int | None]:
        """The credit scheduler's weight and cap; a pinning mask is xl's ``cpus``."""
        params = self.vm.struct("VCPUs_params")
        weight, cap = params.pop("weight", None), params.pop("cap", None)
        mask = params.pop("mask", None)
        if mask is not None:
            if "cpus" in extra:
                self.losses.lost(
                    self.key("VCPUs_params:mask"), f"{mask!r}: xl's cpus= is the one kept"
                )
            else:
                extra["cpus"] = quote(mask)
        for key, value in params.items():
            self.losses.lost(
                self.key(f"VCPUs_params:{key}"), f"{value!r}: xl's scheduler keys are not derived"
            )
        return self.number(weight, "VCPUs_params:weight"), self.number(cap, "VCPUs_params:cap")

    def number(self, value: str | None, name: str) -> int | None:
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            self.losses.lost(self.key(name), f"{value!r} is not a number")
            return None

    def platform(self, extra: dict[str, str]) -> tuple[dict[str, str], str | None, str]:
        """Platform flags without the two XenAPI keys xl says elsewhere: the NIC
        model (each vif's ``model=``) and xapi's qemu profile (upstream qemu is
        xl's default, ``-uefi`` means OVMF); those two are returned as well."""
        platform = self.vm.struct("platform")
        nic_type = platform.pop("nic_type", None)
        device_model = platform.pop("device-model", "")
        if device_model == "qemu-trad":
            extra.setdefault("device_model_version", quote("qemu-xen-traditional"))
        elif device_model and not device_model.startswith("qemu-upstream"):
            self.losses.approximated(
                self.key("platform:device-model"), f"{device_model}: xl runs qemu-xen"
            )
        return platform, nic_type, device_model

    def hvm_boot(
        self, guest_type: GuestType, kept: Mapping[str, str], device_model: str
    ) -> tuple[str | None, str | None]:
        """Firmware and boot order of an HVM guest."""
        if guest_type != "hvm":
            return None, None
        params = self.vm.struct("HVM_boot_params")
        order, firmware = params.pop("order", None), params.pop("firmware", None)
        for key, value in params.items():
            self.losses.lost(
                self.key(f"HVM_boot_params:{key}"), f"{value!r}: xl has no such setting"
            )
        if firmware is None:
            firmware = "uefi" if device_model == "qemu-upstream-uefi" else "bios"
        elif firmware not in ("bios", "uefi"):
            self.losses.approximated(
                self.key("HVM_boot_params:firmware"), f"{firmware!r}: xl boots it with bios"
            )
            firmware = "bios"
        chosen = kept.get("firmware")
        if chosen is not None and hvm_firmware(chosen) in (firmware, None):
            firmware = chosen
        return firmware, order or None

    def pv_boot(
        self, guest_type: GuestType, kept: Mapping[str, str], extra: dict[str, str]
    ) -> dict[str, str | None]:
        """kernel, ramdisk, cmdline, bootloader and bootloader_args. An HVM guest's
        are the xl values kept (XenAPI has none); a PV guest's kernel is a file
        on the exporting host, unless a bootloader finds it in the guest."""
        names = ("kernel", "ramdisk", "cmdline", "bootloader", "bootloader_args")
        if guest_type == "hvm":
            return {name: kept.get(name) or None for name in names}
        vm = self.vm
        bootloader = vm.text("PV_bootloader")
        out: dict[str, str | None] = {
            "cmdline": vm.text("PV_args") or None,
            "bootloader_args": vm.text("PV_bootloader_args") or None,
        }
        firmware = kept.get("firmware")
        if firmware is not None:
            extra["firmware"] = firmware
        chosen = kept.get("bootloader")
        if chosen is not None and bootloader == "pygrub":
            out["bootloader"] = chosen
        elif firmware is not None and unquote(firmware).startswith("pvgrub"):
            out["bootloader"] = None  # pygrub stands in for xl's pvgrub
        else:
            out["bootloader"] = bootloader or None
        for name, key in (("PV_kernel", "kernel"), ("PV_ramdisk", "ramdisk")):
            path = vm.text(name)
            chosen = kept.get(key)
            out[key] = chosen if chosen and pv_file(chosen, bootloader) == path else path or None
            if path and not bootloader:
                self.losses.approximated(
                    self.key(name),
                    f"{path} is a file on the exporting host, not in {self.carrier}:"
                    f" copy it to {out[key]} here",
                )
        if bootloader == "eliloader":
            self.losses.approximated(
                self.key("PV_bootloader"), "eliloader is XCP's installer, which xl hosts lack"
            )
        return out

    def action(self, name: str, chosen: str | None) -> str:
        value = self.vm.text(name, "restart" if name == "actions_after_reboot" else "destroy")
        xl = XL_ACTION.get(value)
        if xl is None:
            raise self.vm.bad(name, "not a XenAPI action")
        table = ON_CRASH if name == "actions_after_crash" else ON_NORMAL_EXIT
        return chosen if chosen is not None and table.get(chosen) == value else xl

    def vm_extras(
        self, guest_type: GuestType, kept: Mapping[str, str], extra: dict[str, str]
    ) -> None:
        """The xl keys XenAPI has a field for: pvshim, vendor_device, on_soft_reset."""
        vm = self.vm
        shim = vm.text("domain_type") == "pv_in_pvh"
        chosen = kept.get("pvshim")
        if guest_type == "pv" and (chosen is None or _pvshim_on(chosen) != shim):
            extra.pop("pvshim", None)
            if shim:
                extra["pvshim"] = "1"
        vendor = vm.flag("has_vendor_device")
        chosen = kept.get("vendor_device")
        if chosen is None or (unquote(chosen) == "xenserver") != vendor:
            extra.pop("vendor_device", None)
            if vendor:
                extra["vendor_device"] = quote("xenserver")
        softreboot = vm.text("actions_after_softreboot", "soft_reboot")
        chosen = kept.get("on_soft_reset")
        if chosen is None or ON_SOFT_RESET.get(unquote(chosen), "soft_reboot") != softreboot:
            extra.pop("on_soft_reset", None)
            xl = next((k for k, v in ON_SOFT_RESET.items() if v == softreboot), None)
            if xl is not None:
                extra["on_soft_reset"] = quote(xl)

    def unsupported(self) -> None:
        """What a XenAPI VM can have and an xl domain cannot."""
        vm, lost, key = self.vm, self.losses.lost, self.key
        if vm.flag("is_a_template"):
            self.losses.approximated(key("is_a_template"), "a template: converted as a VM")
        if vm.text("power_state", "Halted").lower() == "suspended" or (
            vm.text("suspend_VDI", NULL_REF) != NULL_REF
        ):
            lost(key("suspend_VDI"), "the suspended memory image is dropped: the VM boots cold")
        for name, what in (
            ("NVRAM", "UEFI variables (boot entries, Secure Boot keys) stay behind"),
            ("xenstore_data", "xenstore keys for the guest: xl cannot seed them"),
            ("bios_strings", "SMBIOS strings"),
            ("blocked_operations", "blocked operations"),
        ):
            values = {k: v for k, v in vm.struct(name).items() if v}
            if values:
                lost(key(name), f"{what} {sorted(values)}: xl has no such setting")
        for name in ("VTPMs", "VGPUs", "VUSBs", "attached_PCIs", "tags"):
            if vm.refs(name):
                lost(key(name), f"{len(vm.refs(name))} of them: not converted")
        if vm.text("affinity", NULL_REF) not in (NULL_REF, ""):
            lost(key("affinity"), "the host affinity means nothing to xl")
        if vm.text("PV_legacy_args"):
            lost(key("PV_legacy_args"), f"{vm.text('PV_legacy_args')!r}: not passed to the guest")
        if vm.real("HVM_shadow_multiplier", 1.0) != 1.0:
            lost(key("HVM_shadow_multiplier"), "xl sizes shadow memory in MiB (shadow_memory=)")
        if vm.flag("ha_always_run") or vm.text("ha_restart_priority"):
            lost(key("ha_restart_priority"), "xl has no HA restart")

    def disks(
        self, drives: Sequence[Drive], guest_type: GuestType
    ) -> tuple[tuple[DiskRef, ...], list[str | None]]:
        found: list[tuple[int, DiskRef, str | None]] = []
        for drive in drives:
            vbd, vdi = drive.vbd, drive.vdi
            slot = _slot(vbd)
            vdev = vbd.struct("other_config").get(VDEV_KEY, "")
            if disk_index(vdev) is None:
                vdev = vdev_for(slot, guest_type)
            kind = vbd.text("type", "Disk")
            if kind == "CD" or (vdi is not None and drive.iso):
                if vdi is not None:
                    self.losses.lost(
                        f"VBD {vdev}",
                        f"the ISO {vdi.text('name_label') or drive.vdi_ref!r} is not exported:"
                        " an empty drive",
                    )
                disk = DiskRef(vdev=vdev, path="", readonly=True, cdrom=True)
                found.append((slot, disk, None))
                continue
            if kind != "Disk":
                self.losses.lost(f"VBD {vdev}", f"a {kind} drive: xl has none")
                continue
            if vdi is None:
                self.losses.lost(f"VBD {vdev}", "a disk without a VDI is dropped")
                continue
            if vbd.text("qos_algorithm_type"):
                self.losses.lost(f"VBD {vdev} qos_algorithm_type", "xl has no disk QoS")
            if vdi.flag("sharable"):
                self.losses.lost(f"VDI {vdev} sharable", "xl does not share disks between VMs")
            disk = DiskRef(
                vdev=vdev,
                path=drive.vdi_ref,
                virtual_size=vdi.integer("virtual_size"),
                readonly=vbd.text("mode", "RW") == "RO" or vdi.flag("read_only"),
                bootable=vbd.flag("bootable"),
                label=vdi.text("name_label"),
            )
            found.append((slot, disk, drive.vdi_ref))
        found.sort(key=lambda x: x[0])
        return tuple(d for _, d, _ in found), [ref for _, _, ref in found]

    def nics(
        self, interfaces: Sequence[Interface], guest_type: GuestType, nic_type: str | None
    ) -> tuple[NicRef, ...]:
        shared = nic_model_of(nic_type, guest_type)
        found: list[tuple[int, NicRef]] = []
        for interface in interfaces:
            vif = interface.vif
            device = vif.text("device")
            bridge = interface.network.text("bridge") if interface.network is not None else ""
            if not bridge:
                self.losses.approximated(f"VIF {device}", "its network has no bridge: xl's default")
            qos = vif.text("qos_algorithm_type")
            if qos:
                self.losses.lost(
                    f"VIF {device} qos_algorithm_type",
                    f"{qos} {vif.struct('qos_algorithm_params')}: not carried (xl's rate= is"
                    " not set)",
                )
            if vif.text("locking_mode", "network_default") not in ("network_default", "unlocked"):
                self.losses.lost(f"VIF {device} locking_mode", "xl has no IP/MAC locking")
            text = vif.text("MAC")
            mac = normal_mac(text) if text else None
            if text and mac is None:
                self.losses.lost(f"VIF {device} MAC", f"{text!r} is not a MAC address")
            mtu = vif.integer("MTU", DEFAULT_MTU)
            nic = NicRef(
                mac=mac,
                bridge=bridge or None,
                model=vif.struct("other_config").get(MODEL_KEY) or shared,
                mtu=None if mtu == DEFAULT_MTU else mtu,
            )
            found.append((int(device) if device.isdigit() else len(found), nic))
        return tuple(n for _, n in sorted(found, key=lambda x: x[0]))


def _slot(vbd: RecordView) -> int:
    userdevice = vbd.text("userdevice")
    if userdevice.isdigit():
        return int(userdevice)
    index = disk_index(vbd.text("device"))
    if index is None:
        raise vbd.bad("userdevice", "not a number")
    return index[0]
