"""``DomainConfig``: the typed meaning of an xl.cfg file.

One field per key that xl.cfg(5) documents for Xen 4.17, typed by the getter
xl uses for it (see ``keys.py``); ``None`` (or an empty tuple for device
lists) means the key is not set and xl's default applies. Keys xl does not
know are kept, untouched, in ``unknown``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from xenkit.config.device import DeviceSpec
from xenkit.config.disk import DiskSpec
from xenkit.config.keyspec import DomainType
from xenkit.config.vif import VifSpec

DEFAULT_MEMORY_MIB = 32
"""libxl's default when neither memory nor maxmem is set (libxl_create.c)."""

ARM_ONLY_KEYS = ("gic_version", "vuart", "dtdev", "device_tree", "tee")
"""Keys only xl on Arm reads; a config with one of them is taken to be for Arm."""


def resolve_type(type_: str | None, builder: str | None, *, arm: bool = False) -> DomainType | None:
    """The domain type as xl 4.17 decides it, or None if xl would refuse.

    xl compares with ``strncmp(value, name, strlen(value))``, so any prefix of a
    name is accepted and tried in the order hvm, pv, pvh: ``""`` and ``"h"`` are
    HVM, ``"p"`` and ``"pv"`` are PV. ``builder`` (deprecated) is ``hvm`` or
    ``generic`` (PV), by prefix too; with neither key, xl builds PV on x86
    and PVH on Arm.
    """
    resolved: DomainType | None = None
    if type_ is not None:
        resolved = _prefix_match(type_, (("hvm", DomainType.HVM), ("pv", DomainType.PV)))
        if resolved is None and "pvh".startswith(type_):
            resolved = DomainType.PVH
        if resolved is None:
            return None
    if builder is not None:
        from_builder = _prefix_match(builder, (("hvm", DomainType.HVM), ("generic", DomainType.PV)))
        if from_builder is None or (resolved is not None and resolved is not from_builder):
            return None
        resolved = from_builder
    return resolved or (DomainType.PVH if arm else DomainType.PV)


def _prefix_match(value: str, names: tuple[tuple[str, DomainType], ...]) -> DomainType | None:
    for name, kind in names:
        if name.startswith(value):
            return kind
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainConfig:
    # BEGIN GENERATED FIELDS (scripts/gen_model.py)
    # -- ARM --
    gic_version: str | None = None
    vuart: str | None = None
    # -- Boot Device --
    boot: str | None = None
    # -- CPU Allocation --
    cpus: str | tuple[str, ...] | None = None
    cpus_soft: str | tuple[str, ...] | None = None
    maxvcpus: int | None = None
    pool: str | None = None
    vcpus: int | None = None
    # -- CPU Scheduling --
    cap: int | None = None
    cpu_weight: int | None = None
    extratime: bool | None = None
    latency: int | None = None
    period: int | None = None
    slice: int | None = None
    # -- Deprecated guest type selection --
    builder: str | None = None
    # -- Device-Model Options --
    device_model: str | None = None
    device_model_args: tuple[str, ...] | None = None
    device_model_args_hvm: tuple[str, ...] | None = None
    device_model_args_pv: tuple[str, ...] | None = None
    device_model_override: str | None = None
    device_model_stubdomain_override: bool | None = None
    device_model_stubdomain_seclabel: str | None = None
    device_model_version: str | None = None
    stubdomain_cmdline: str | None = None
    stubdomain_kernel: str | None = None
    stubdomain_memory: int | None = None
    stubdomain_ramdisk: str | None = None
    # -- Devices --
    channel: tuple[DeviceSpec, ...] = ()
    device_model_user: str | None = None
    disk: tuple[DiskSpec, ...] = ()
    dm_restrict: bool | None = None
    dtdev: tuple[str, ...] | None = None
    gfx_passthru: bool | None = None
    iomem: tuple[str, ...] | None = None
    ioports: tuple[str, ...] | None = None
    irqs: tuple[str, ...] | None = None
    max_event_channels: int | None = None
    p9: tuple[DeviceSpec, ...] = ()
    pci: tuple[DeviceSpec, ...] = ()
    pci_msitranslate: bool | None = None
    pci_permissive: bool | None = None
    pci_power_mgmt: bool | None = None
    pci_seize: bool | None = None
    pvcalls: tuple[DeviceSpec, ...] = ()
    rdm: str | None = None
    rdm_mem_boundary: int | None = None
    tee: str | None = None
    usbctrl: tuple[DeviceSpec, ...] = ()
    usbdev: tuple[DeviceSpec, ...] = ()
    vdispl: tuple[DeviceSpec, ...] = ()
    vfb: tuple[DeviceSpec, ...] = ()
    vif: tuple[VifSpec, ...] = ()
    vif2: tuple[DeviceSpec, ...] = ()
    vkb: tuple[DeviceSpec, ...] = ()
    vsnd: tuple[tuple[str, ...], ...] | None = None
    vtpm: tuple[DeviceSpec, ...] = ()
    # -- Direct Kernel Boot --
    cmdline: str | None = None
    extra: str | None = None
    kernel: str | None = None
    ramdisk: str | None = None
    root: str | None = None
    # -- Emulated VGA Graphics Device --
    display: str | None = None
    keymap: str | None = None
    nographic: bool | None = None
    opengl: bool | None = None
    sdl: bool | None = None
    stdvga: bool | None = None
    vga: str | None = None
    videoram: int | None = None
    vnc: bool | None = None
    vncdisplay: int | None = None
    vnclisten: str | None = None
    vncpasswd: str | None = None
    vncunused: bool | None = None
    vncviewer: bool | None = None
    xauthority: str | None = None
    # -- Emulated disk controller type --
    hdtype: str | None = None
    # -- Event Actions --
    on_crash: str | None = None
    on_poweroff: str | None = None
    on_reboot: str | None = None
    on_soft_reset: str | None = None
    on_watchdog: str | None = None
    # -- Guest Virtual NUMA Configuration --
    vnuma: tuple[tuple[str, ...], ...] | None = None
    # -- Guest Virtual Time Controls --
    localtime: bool | None = None
    rtc_timeoffset: int | None = None
    timer_mode: str | None = None
    tsc_mode: str | None = None
    vpt_align: bool | None = None
    # -- Mandatory Configuration Items --
    name: str | None = None
    # -- Memory Allocation --
    maxmem: int | None = None
    memory: int | None = None
    # -- Memory layout --
    mmio_hole: int | None = None
    # -- Miscellaneous Emulated Hardware --
    serial: str | tuple[str, ...] | None = None
    soundhw: str | None = None
    usb: bool | None = None
    usbdevice: str | tuple[str, ...] | None = None
    usbversion: int | None = None
    vendor_device: str | None = None
    vkb_device: bool | None = None
    # -- Non direct Kernel Boot --
    firmware: str | None = None
    pvshim: bool | None = None
    pvshim_cmdline: str | None = None
    pvshim_extra: str | None = None
    pvshim_path: str | None = None
    # -- Other Options --
    device_tree: str | None = None
    driver_domain: bool | None = None
    init_seclabel: str | None = None
    max_grant_frames: int | None = None
    max_grant_version: int | None = None
    max_maptrack_frames: int | None = None
    nomigrate: bool | None = None
    passthrough: str | None = None
    seclabel: str | None = None
    uuid: str | None = None
    vmtrace_buf_kb: int | None = None
    vpmu: bool | None = None
    xend_suspend_evtchn_compat: bool | None = None
    # -- Paging --
    hap: bool | None = None
    oos: bool | None = None
    shadow_memory: int | None = None
    # -- Paravirtualised (PV) Guest Specific Options --
    bootloader: str | None = None
    bootloader_args: str | tuple[str, ...] | None = None
    e820_host: bool | None = None
    # -- Processor and Platform Features --
    acpi: bool | None = None
    acpi_firmware: str | None = None
    acpi_laptop_slate: bool | None = None
    acpi_s3: bool | None = None
    acpi_s4: bool | None = None
    altp2m: str | None = None
    altp2mhvm: bool | None = None
    apic: bool | None = None
    bios: str | None = None
    bios_path_override: str | None = None
    cpuid: str | tuple[str, ...] | None = None
    firmware_override: str | None = None
    hpet: bool | None = None
    ms_vm_genid: str | None = None
    nestedhvm: bool | None = None
    nx: bool | None = None
    pae: bool | None = None
    smbios_firmware: str | None = None
    # -- Selecting Guest Type --
    type: str | None = None
    # -- Spice Graphics Support --
    spice: bool | None = None
    spice_clipboard_sharing: bool | None = None
    spice_image_compression: str | None = None
    spice_streaming_video: str | None = None
    spiceagent_mouse: bool | None = None
    spicedisable_ticketing: bool | None = None
    spicehost: str | None = None
    spicepasswd: str | None = None
    spiceport: int | None = None
    spicetls_port: int | None = None
    spiceusbredirection: int | None = None
    spicevdagent: bool | None = None
    # -- Support for Paravirtualisation of HVM Guests --
    viridian: bool | tuple[str, ...] | None = None
    xen_platform_pci: bool | None = None
    # -- x86 --
    mca_caps: tuple[str, ...] | None = None
    msr_relaxed: bool | None = None
    # END GENERATED FIELDS
    unknown: dict[str, object] = field(default_factory=dict)

    @property
    def is_arm(self) -> bool:
        return any(getattr(self, key) not in (None, ()) for key in ARM_ONLY_KEYS)

    @property
    def domain_type(self) -> DomainType:
        resolved = resolve_type(self.type, self.builder, arm=self.is_arm)
        return resolved if resolved is not None else DomainType.PV

    @property
    def memory_mib(self) -> int:
        """Start-of-day memory: ``memory``, else ``maxmem`` (libxl's target = max), else 32."""
        if self.memory is not None:
            return self.memory
        return self.maxmem if self.maxmem is not None else DEFAULT_MEMORY_MIB

    @property
    def maxmem_mib(self) -> int:
        return self.maxmem if self.maxmem is not None else self.memory_mib

    @property
    def vcpu_count(self) -> int:
        return self.vcpus if self.vcpus is not None else 1

    def set_keys(self) -> list[str]:
        """The keys this config sets: identity and sizing first, then by name."""
        out = []
        for f in dataclasses.fields(self):
            if f.name == "unknown":
                continue
            value = getattr(self, f.name)
            if value is not None and value != ():
                out.append(f.name)
        return sorted(out, key=lambda k: (_FIRST.get(k, len(_FIRST)), k))

    def to_json(self) -> dict[str, Any]:
        """Only the keys that are set, plus the resolved domain type."""
        out: dict[str, Any] = {"domain_type": self.domain_type.value}
        for name in self.set_keys():
            out[name] = _jsonable(getattr(self, name))
        if self.unknown:
            out["unknown"] = dict(self.unknown)
        return out


_FIRST = {
    k: i
    for i, k in enumerate(
        ["name", "type", "builder", "uuid", "memory", "maxmem", "vcpus", "maxvcpus"]
    )
}


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, DiskSpec | VifSpec):
        return {"spec": value.to_spec(), "libxl": value.to_libxl()}
    if isinstance(value, DeviceSpec):
        return value.to_json()
    return value
