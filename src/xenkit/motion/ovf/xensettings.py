"""XenServer settings as XenCenter carries them in an OVF.

XenCenter (xenadmin ``XenOvfApi/OVF.cs``, ``OvfActions/Export.cs``) writes what
DMTF has no element for as ``xenovf:VirtualSystemOtherConfigurationData``
children of the VirtualHardwareSection, one per XenAPI VM field: ``Name`` is
the field (``HVM_boot_policy``, ``HVM_boot_params``, ``platform``, ``PV_*``...)
and ``Value`` its value, maps flattened as ``k=v;k=v``. Its import
(``OvfActions/Import.cs``) parses the maps it knows and hands every other name
to ``VM.UpdateFrom``, which sets any XenAPI field of that name. So the writer
uses XenAPI field names for what XenCenter itself never exports but ``VM``
has (``domain_type`` for PVH, ``VCPUs_max``, ``memory_static_max``,
``actions_after_*``): a XenCenter import applies them. What only xenkit reads
is named ``xenkit:...``, which ``UpdateFrom`` ignores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from xenkit.motion.model import GuestType, Losses, VmSpec
from xenkit.motion.vocab import HVM_FIRMWARE, ON_CRASH, ON_NORMAL_EXIT, XL_ACTION, MiB

XENKIT_PREFIX = "xenkit:"
EXTRA_PREFIX = "xenkit:extra:"

_PLATFORM_INFO = "XenServer Platform Information"
_SPECIFIC_INFO = "XenServer Specific Information"
INFO: dict[str, str] = {
    "HVM_boot_policy": "Boot Order: CD/DVD - Network - Disk",
    "HVM_boot_params": "HVM Boot Parameters",
    "platform": _PLATFORM_INFO,
}


# Names XenCenter exports that VmSpec has no place for.
_KNOWN_LOST = {
    "pv_legacy_args": "PV_legacy_args",
    "nvram": "NVRAM",
    "vm_has_vendor_device": "VM_has_vendor_device",
    "vgpu": "vgpu",
    "pvssite": "pvssite",
    "hardware_platform_version": "hardware_platform_version",
    "recommendations": "recommendations",
    "reference_label": "reference_label",
    "hvm_shadow_multiplier": "HVM_shadow_multiplier",
}


def key(name: str) -> str:
    """Where a setting is filed here, matching the case-blind, ``-``-for-``_``
    lookup XenCenter's import does."""
    return name.replace("-", "_").lower()


def _element(name: str) -> str:
    return f"VirtualSystemOtherConfigurationData[Name={name}]"


def join_map(items: Iterable[tuple[str, str]], what: str, losses: Losses) -> str:
    out = []
    for k, v in items:
        if not k or any(c in k for c in ";=") or ";" in v:
            losses.lost(f"{what}.{k}", "a key or value holding ';' or '=' cannot be carried")
            continue
        out.append(f"{k}={v}")
    return ";".join(out)


def split_map(text: str) -> dict[str, str]:
    """``nx=true;acpi=true;`` (XenCenter leaves the trailing ``;``) → a dict."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        k, sep, v = part.partition("=")
        if sep and k.strip():
            out[k.strip()] = v.strip()
    return out


def xen_settings(spec: VmSpec, losses: Losses) -> list[tuple[str, str]]:
    """The Name/Value pairs that carry what DMTF elements cannot."""
    pairs: list[tuple[str, str]] = [("domain_type", spec.guest_type)]
    if spec.guest_type == "hvm":
        pairs += _hvm_boot(spec, losses)
    else:
        if spec.boot_order:
            losses.lost("boot_order", "a boot order applies to HVM guests only")
        if spec.firmware:
            losses.lost("firmware", f"{spec.firmware!r}: no XenServer field for PV/PVH firmware")
    if spec.platform:
        pairs.append(("platform", join_map(spec.platform.items(), "platform", losses)))
    pairs += _pv_boot(spec, losses)
    if spec.maxvcpus is not None:
        pairs.append(("VCPUs_max", str(spec.maxvcpus)))
    if spec.maxmem_mib is not None:
        pairs.append(("memory_static_max", str(spec.static_max_mib * MiB)))
    pairs += _actions(spec, losses)
    if spec.cpu_weight is not None:
        pairs.append((XENKIT_PREFIX + "cpu_weight", str(spec.cpu_weight)))
    if spec.cap is not None:
        pairs.append((XENKIT_PREFIX + "cap", str(spec.cap)))
    pairs += [(EXTRA_PREFIX + k, v) for k, v in spec.extra.items()]
    return _unique(pairs, losses)


def _hvm_boot(spec: VmSpec, losses: Losses) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if spec.boot_order:
        params.append(("order", spec.boot_order))
    if spec.firmware:
        firmware = HVM_FIRMWARE.get(spec.firmware.lower())
        if firmware is None:
            losses.lost("firmware", f"{spec.firmware!r} is not bios or uefi")
        else:
            params.append(("firmware", firmware))
    pairs = [("HVM_boot_policy", "BIOS order")]
    if params:
        pairs.append(("HVM_boot_params", join_map(params, "HVM_boot_params", losses)))
    for name in ("kernel", "ramdisk", "cmdline", "bootloader", "bootloader_args"):
        if getattr(spec, name):
            losses.lost(name, "an HVM guest's direct boot has no XenServer field")
    return pairs


def _pv_boot(spec: VmSpec, losses: Losses) -> list[tuple[str, str]]:
    if spec.guest_type == "hvm":
        return []
    pairs: list[tuple[str, str]] = []
    for field_name, xapi in (("kernel", "PV_kernel"), ("ramdisk", "PV_ramdisk")):
        path = getattr(spec, field_name)
        if path:
            pairs.append((xapi, path))
            losses.approximated(
                field_name, f"{path} is a file in dom0, named in the OVF but not packaged"
            )
    for field_name, xapi in (
        ("cmdline", "PV_args"),
        ("bootloader", "PV_bootloader"),
        ("bootloader_args", "PV_bootloader_args"),
    ):
        value = getattr(spec, field_name)
        if value:
            pairs.append((xapi, value))
    return pairs


def _actions(spec: VmSpec, losses: Losses) -> list[tuple[str, str]]:
    pairs = []
    for field_name, xapi, table in (
        ("on_poweroff", "actions_after_shutdown", ON_NORMAL_EXIT),
        ("on_reboot", "actions_after_reboot", ON_NORMAL_EXIT),
        ("on_crash", "actions_after_crash", ON_CRASH),
    ):
        value = getattr(spec, field_name)
        mapped = table.get(value)
        if mapped is None:
            losses.lost(field_name, f"{value!r} has no {xapi} value")
            continue
        if XL_ACTION[mapped] != value:
            losses.approximated(field_name, f"{value!r} has no {xapi} value: {mapped}")
        pairs.append((xapi, mapped))
    return pairs


def _unique(pairs: list[tuple[str, str]], losses: Losses) -> list[tuple[str, str]]:
    """XenCenter files each name in a Hashtable by :func:`key`: a second name
    with the same key would stop its import."""
    seen: set[str] = set()
    out = []
    for name, value in pairs:
        if key(name) in seen:
            losses.lost(name, "another setting has the same name once '-' is read as '_'")
            continue
        seen.add(key(name))
        out.append((name, value))
    return out


def apply_xen_settings(
    spec: VmSpec, pairs: list[tuple[str, str]], losses: Losses
) -> tuple[VmSpec, GuestType | None]:
    """``spec`` with the settings applied, and the guest type they imply (None
    when they do not say): ``domain_type`` first, then ``HVM_boot_policy``,
    which is how XenAPI itself decides."""
    changes: dict[str, object] = {}
    policy_type: GuestType | None = None
    domain_type: GuestType | None = None
    extra = dict(spec.extra)
    for name, value in pairs:
        k = key(name)
        where = _element(name)
        if k == "hvm_boot_policy":
            policy_type = "hvm" if value.strip() else "pv"
        elif k == "hvm_boot_params":
            changes.update(_boot_params(value, where, losses))
        elif k == "platform":
            changes["platform"] = split_map(value)
        elif k in _PV_FIELDS:
            if value:
                changes[_PV_FIELDS[k]] = value
        elif k == "domain_type":
            domain_type = _domain_type(value, where, losses)
        elif k in ("vcpus_max", "vcpus_at_startup", "memory_static_max"):
            _number(k, value, where, changes, losses)
        elif k in _ACTIONS:
            _action(k, value, where, changes, losses)
        elif k in ("xenkit:cpu_weight", "xenkit:cap"):
            _number(k, value, where, changes, losses)
        elif name.startswith(EXTRA_PREFIX):
            extra[name[len(EXTRA_PREFIX) :]] = value
        elif k in _KNOWN_LOST:
            if value:
                losses.lost(where, f"{_short(value)}: VmSpec has no field for it")
        else:
            losses.lost(where, f"{_short(value)}: not a setting xenkit knows")
    if extra != spec.extra:
        changes["extra"] = extra
    return replace(spec, **changes), domain_type or policy_type  # type: ignore[arg-type]


_PV_FIELDS = {
    "pv_kernel": "kernel",
    "pv_ramdisk": "ramdisk",
    "pv_args": "cmdline",
    "pv_bootloader": "bootloader",
    "pv_bootloader_args": "bootloader_args",
}
_ACTIONS = {
    "actions_after_shutdown": "on_poweroff",
    "actions_after_reboot": "on_reboot",
    "actions_after_crash": "on_crash",
}


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _boot_params(value: str, where: str, losses: Losses) -> dict[str, object]:
    # Old XenCenter exports wrote the order alone ("dc"), later ones a map.
    params = split_map(value) if "=" in value else {"order": value.strip()}
    out: dict[str, object] = {}
    for k, v in params.items():
        if k == "order" and v:
            out["boot_order"] = v
        elif k == "firmware" and v:
            out["firmware"] = "uefi" if HVM_FIRMWARE.get(v.lower()) == "uefi" else v.lower()
        else:
            losses.lost(f"{where}.{k}", f"{_short(v)}: VmSpec has no field for it")
    return out


def _domain_type(value: str, where: str, losses: Losses) -> GuestType | None:
    v = value.strip().lower()
    if v in ("pv", "pvh", "hvm"):
        return v  # type: ignore[return-value]
    if v == "pv_in_pvh":
        losses.approximated(where, "pv_in_pvh (a PV guest in a PVH shim) becomes pv")
        return "pv"
    if v:
        losses.lost(where, f"{_short(value)} is not pv, pvh or hvm")
    return None


def _number(k: str, value: str, where: str, changes: dict[str, object], losses: Losses) -> None:
    try:
        n = int(value.strip())
    except ValueError:
        losses.lost(where, f"{_short(value)} is not a number")
        return
    if k == "vcpus_max":
        changes["maxvcpus"] = n
    elif k == "vcpus_at_startup":
        changes["vcpus"] = n
    elif k == "memory_static_max":
        mib = -(-n // MiB)
        if mib * MiB != n:
            losses.approximated(where, f"{n} bytes is not whole MiB; {mib} MiB")
        changes["maxmem_mib"] = mib
    elif k == "xenkit:cpu_weight":
        changes["cpu_weight"] = n
    else:
        changes["cap"] = n


def _action(k: str, value: str, where: str, changes: dict[str, object], losses: Losses) -> None:
    v = value.strip().lower()
    xl = XL_ACTION.get(v)
    if xl is None:
        losses.lost(where, f"{_short(value)} has no xl equivalent")
        return
    changes[_ACTIONS[k]] = xl
