"""The catalogue of every xl.cfg key of Xen 4.17.

One :class:`~xenkit.config.keyspec.KeySpec` per key documented in xl.cfg(5)
(``docs/man/xl.cfg.5.pod.in`` at ``RELEASE-4.17.0``), plus the few keys that
``tools/xl/xl_parse.c`` reads although the man page does not document them as
top-level keys (``device_model``, ``display``, ``xauthority``, ``period``,
``slice``, ``latency``, ``extratime``, ``firmware_override``, ``vif2``,
``vncviewer``).

For each key, ``kind`` is the getter ``parse_config_data`` really uses,
``section`` is the man page heading the key is first documented under, and
``types`` are the domain types the key has an effect on, judged from the man
page's placement together with the per-type branches of ``xl_parse.c`` (and,
where those disagree, what libxl does with the value). Arm guests are always
PVH in Xen 4.17, so Arm-only keys apply to PVH only.

``choices`` are given only where xl (or the libxl ``*_from_string`` it calls)
rejects any other string. The libxl enum parsers compare case-insensitively,
so for those keys the spellings listed are the documented lower-case ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from xenkit.config.keyspec import DomainType, KeySpec, Kind

__all__ = ["KEYS", "KNOWN_KEYS", "spec_for"]

_PV: frozenset[DomainType] = frozenset({DomainType.PV})
_PVH: frozenset[DomainType] = frozenset({DomainType.PVH})
_HVM: frozenset[DomainType] = frozenset({DomainType.HVM})
_PV_PVH: frozenset[DomainType] = frozenset({DomainType.PV, DomainType.PVH})
_PV_HVM: frozenset[DomainType] = frozenset({DomainType.PV, DomainType.HVM})
_HVM_PVH: frozenset[DomainType] = frozenset({DomainType.HVM, DomainType.PVH})

# Arm guests are PVH guests (libxl_arm.c refuses any other type).
_ARM = _PVH

_INT_MAX = 2**31 - 1

_SHUTDOWN_ACTIONS = (
    "destroy",
    "restart",
    "rename-restart",
    "preserve",
    "coredump-destroy",
    "coredump-restart",
    "soft-reset",
)

_TIMER_MODES = (
    "delay_for_missed_ticks",
    "no_delay_for_missed_ticks",
    "no_missed_ticks_pending",
    "one_missed_tick_pending",
)

# Section headings of xl.cfg(5), spelt as in the man page.
_MANDATORY = "Mandatory Configuration Items"
_GUEST_TYPE = "Selecting Guest Type"
_DEPRECATED_TYPE = "Deprecated guest type selection"
_CPU_ALLOC = "CPU Allocation"
_CPU_SCHED = "CPU Scheduling"
_MEMORY = "Memory Allocation"
_VNUMA = "Guest Virtual NUMA Configuration"
_EVENTS = "Event Actions"
_DIRECT_BOOT = "Direct Kernel Boot"
_NON_DIRECT_BOOT = "Non direct Kernel Boot"
_OTHER = "Other Options"
_DEVICES = "Devices"
_PV_SPECIFIC = "Paravirtualised (PV) Guest Specific Options"
_BOOT_DEVICE = "Boot Device"
_DISK_CONTROLLER = "Emulated disk controller type"
_PAGING = "Paging"
_PLATFORM = "Processor and Platform Features"
_TIME = "Guest Virtual Time Controls"
_MEMORY_LAYOUT = "Memory layout"
_PV_ON_HVM = "Support for Paravirtualisation of HVM Guests"
_VGA = "Emulated VGA Graphics Device"
_SPICE = "Spice Graphics Support"
_MISC_HW = "Miscellaneous Emulated Hardware"
_DEVICE_MODEL = "Device-Model Options"
_ARM_SECTION = "ARM"
_X86_SECTION = "x86"

_SPECS: tuple[KeySpec, ...] = (
    # --- Mandatory Configuration Items -------------------------------------
    KeySpec(
        name="name",
        kind=Kind.STRING,
        section=_MANDATORY,
        summary="Domain name; mandatory and unique on the host",
    ),
    # --- Selecting Guest Type ------------------------------------------------
    KeySpec(
        name="type",
        kind=Kind.STRING,
        section=_GUEST_TYPE,
        summary="Guest type: PV, PVH or fully virtualised HVM",
        choices=("pv", "pvh", "hvm"),
        default="pv on x86, pvh on Arm",
    ),
    KeySpec(
        name="builder",
        kind=Kind.STRING,
        section=_DEPRECATED_TYPE,
        summary="Old guest type selector: generic (PV) or hvm; must agree with type",
        choices=("generic", "hvm"),
        default="generic",
        deprecated=True,
        replaced_by="type",
    ),
    # --- CPU Allocation ------------------------------------------------------
    KeySpec(
        name="pool",
        kind=Kind.STRING,
        section=_CPU_ALLOC,
        summary="CPU pool to place the guest's vCPUs in",
    ),
    KeySpec(
        name="vcpus",
        kind=Kind.INTEGER,
        section=_CPU_ALLOC,
        summary="Number of vCPUs online at start",
    ),
    KeySpec(
        name="maxvcpus",
        kind=Kind.INTEGER,
        section=_CPU_ALLOC,
        summary="Maximum number of vCPUs the guest may bring up; not less than vcpus",
        default="value of vcpus",
    ),
    KeySpec(
        name="cpus",
        kind=Kind.STRING_OR_LIST,
        section=_CPU_ALLOC,
        summary="Hard affinity: host CPUs the vCPUs may run on (one CPULIST, or one per vCPU)",
        default="no pinning",
    ),
    KeySpec(
        name="cpus_soft",
        kind=Kind.STRING_OR_LIST,
        section=_CPU_ALLOC,
        summary="Soft affinity: host CPUs the vCPUs prefer, same syntax as cpus",
        default="no preference (NUMA placement decides)",
    ),
    # --- CPU Scheduling ------------------------------------------------------
    KeySpec(
        name="cpu_weight",
        kind=Kind.INTEGER,
        section=_CPU_SCHED,
        summary="Relative CPU share on a contended host (credit, credit2)",
        minimum=1,
        maximum=65535,
        default="256",
    ),
    KeySpec(
        name="cap",
        kind=Kind.INTEGER,
        section=_CPU_SCHED,
        summary="Upper limit on CPU use as a percentage of one physical CPU; 0 means no cap",
        unit="%",
        default="0",
    ),
    KeySpec(
        name="period",
        kind=Kind.INTEGER,
        section=_CPU_SCHED,
        summary="Undocumented: scheduling period of the RTDS scheduler",
        unit="us",
    ),
    KeySpec(
        name="extratime",
        kind=Kind.BOOL,
        section=_CPU_SCHED,
        summary="Undocumented: let the RTDS scheduler give the domain spare CPU time",
    ),
    KeySpec(
        name="slice",
        kind=Kind.INTEGER,
        section=_CPU_SCHED,
        summary="Undocumented SEDF parameter; no effect since SEDF was removed",
        deprecated=True,
    ),
    KeySpec(
        name="latency",
        kind=Kind.INTEGER,
        section=_CPU_SCHED,
        summary="Undocumented SEDF parameter; no effect since SEDF was removed",
        deprecated=True,
    ),
    # --- Memory Allocation ---------------------------------------------------
    KeySpec(
        name="memory",
        kind=Kind.INTEGER,
        section=_MEMORY,
        summary="RAM the guest starts with",
        unit="MiB",
    ),
    KeySpec(
        name="maxmem",
        kind=Kind.INTEGER,
        section=_MEMORY,
        summary="Most memory the guest can ever have; above memory means pre-ballooned",
        unit="MiB",
        default="value of memory",
    ),
    # --- Guest Virtual NUMA Configuration ------------------------------------
    KeySpec(
        name="vnuma",
        kind=Kind.LIST_OF_LISTS,
        section=_VNUMA,
        summary="Virtual NUMA nodes, each a list of pnode=, size=, vcpus=, vdistances= strings",
        types=_HVM_PVH,
    ),
    # --- Event Actions -------------------------------------------------------
    KeySpec(
        name="on_poweroff",
        kind=Kind.STRING,
        section=_EVENTS,
        summary="What to do when the guest shuts itself down",
        choices=_SHUTDOWN_ACTIONS,
        default="destroy",
    ),
    KeySpec(
        name="on_reboot",
        kind=Kind.STRING,
        section=_EVENTS,
        summary="What to do when the guest asks to reboot",
        choices=_SHUTDOWN_ACTIONS,
        default="restart",
    ),
    KeySpec(
        name="on_watchdog",
        kind=Kind.STRING,
        section=_EVENTS,
        summary="What to do when the guest's Xen watchdog times out",
        choices=_SHUTDOWN_ACTIONS,
        default="destroy",
    ),
    KeySpec(
        name="on_crash",
        kind=Kind.STRING,
        section=_EVENTS,
        summary="What to do when the guest crashes",
        choices=_SHUTDOWN_ACTIONS,
        default="destroy",
    ),
    KeySpec(
        name="on_soft_reset",
        kind=Kind.STRING,
        section=_EVENTS,
        summary="What to do when the guest performs a soft reset (e.g. kexec)",
        choices=_SHUTDOWN_ACTIONS,
        default="soft-reset",
    ),
    # --- Direct Kernel Boot --------------------------------------------------
    KeySpec(
        name="kernel",
        kind=Kind.STRING,
        section=_DIRECT_BOOT,
        summary="Host path of the kernel image to boot directly",
    ),
    KeySpec(
        name="ramdisk",
        kind=Kind.STRING,
        section=_DIRECT_BOOT,
        summary="Host path of the ramdisk to load with the kernel",
    ),
    KeySpec(
        name="cmdline",
        kind=Kind.STRING,
        section=_DIRECT_BOOT,
        summary="Kernel command line; when set, root and extra are ignored",
    ),
    KeySpec(
        name="root",
        kind=Kind.STRING,
        section=_DIRECT_BOOT,
        summary="Adds root=VALUE to the kernel command line (ignored if cmdline is set)",
    ),
    KeySpec(
        name="extra",
        kind=Kind.STRING,
        section=_DIRECT_BOOT,
        summary="Text appended to the kernel command line (ignored if cmdline is set)",
    ),
    # --- Non direct Kernel Boot ----------------------------------------------
    KeySpec(
        name="firmware",
        kind=Kind.STRING,
        section=_NON_DIRECT_BOOT,
        summary="Firmware: pvgrub32|pvgrub64 (PV, PVH); bios|uefi|seabios|rombios|ovmf|PATH (HVM)",
    ),
    KeySpec(
        name="pvshim",
        kind=Kind.BOOL,
        section=_NON_DIRECT_BOOT,
        summary="Run the PV guest inside a PVH container through the PV shim",
        types=_PVH,
        default="0",
    ),
    KeySpec(
        name="pvshim_path",
        kind=Kind.STRING,
        section=_NON_DIRECT_BOOT,
        summary="Path of a non-default PV shim binary",
        types=_PVH,
    ),
    KeySpec(
        name="pvshim_cmdline",
        kind=Kind.STRING,
        section=_NON_DIRECT_BOOT,
        summary="Command line of the PV shim",
        types=_PVH,
        default="pv-shim console=xen,pv",
    ),
    KeySpec(
        name="pvshim_extra",
        kind=Kind.STRING,
        section=_NON_DIRECT_BOOT,
        summary="Extra arguments appended to pvshim_cmdline",
        types=_PVH,
    ),
    # --- Other Options -------------------------------------------------------
    KeySpec(
        name="uuid",
        kind=Kind.STRING,
        section=_OTHER,
        summary="UUID of the domain",
        default="freshly generated",
    ),
    KeySpec(
        name="seclabel",
        kind=Kind.STRING,
        section=_OTHER,
        summary="XSM security label of the domain",
    ),
    KeySpec(
        name="init_seclabel",
        kind=Kind.STRING,
        section=_OTHER,
        summary="XSM label used while the domain is built, replaced by seclabel afterwards",
    ),
    KeySpec(
        name="max_grant_frames",
        kind=Kind.INTEGER,
        section=_OTHER,
        summary="Maximum number of grant table frames of the domain",
        minimum=0,
        maximum=_INT_MAX,
        default="from xl.conf",
    ),
    KeySpec(
        name="max_maptrack_frames",
        kind=Kind.INTEGER,
        section=_OTHER,
        summary="Maximum number of grant maptrack frames of the domain",
        minimum=0,
        maximum=_INT_MAX,
        default="from xl.conf",
    ),
    KeySpec(
        name="max_grant_version",
        kind=Kind.INTEGER,
        section=_OTHER,
        summary="Highest grant table version the domain may use",
        minimum=0,
        maximum=_INT_MAX,
        default="from xl.conf",
    ),
    KeySpec(
        name="nomigrate",
        kind=Kind.BOOL,
        section=_OTHER,
        summary="Forbid migration, enabling features incompatible with it (invariant TSC)",
    ),
    KeySpec(
        name="driver_domain",
        kind=Kind.BOOL,
        section=_OTHER,
        summary="Mark the domain as a driver domain",
    ),
    KeySpec(
        name="device_tree",
        kind=Kind.STRING,
        section=_OTHER,
        summary="Partial device tree whose /passthrough node is copied into the guest's",
        types=_ARM,
    ),
    KeySpec(
        name="passthrough",
        kind=Kind.STRING,
        section=_OTHER,
        summary="IOMMU mapping mode for passthrough devices",
        choices=("default", "disabled", "enabled", "sync_pt", "share_pt"),
        default="default",
    ),
    KeySpec(
        name="xend_suspend_evtchn_compat",
        kind=Kind.BOOL,
        section=_OTHER,
        summary="Use the old xend suspend event channel behaviour for old PV drivers",
        default="0",
    ),
    KeySpec(
        name="vmtrace_buf_kb",
        kind=Kind.INTEGER,
        section=_OTHER,
        summary="Per-vCPU vmtrace (e.g. Intel PT) buffer size; 0 disables it",
        types=_HVM_PVH,
        unit="KiB",
        default="0",
    ),
    KeySpec(
        name="vpmu",
        kind=Kind.BOOL,
        section=_OTHER,
        summary="Arm only: give the guest direct access to the PMU registers",
        types=_ARM,
        default="0",
    ),
    # --- Devices -------------------------------------------------------------
    KeySpec(
        name="disk",
        kind=Kind.DISK_LIST,
        section=_DEVICES,
        summary="Emulated and virtual block devices, each a DISK_SPEC_STRING",
    ),
    KeySpec(
        name="vif",
        kind=Kind.VIF_LIST,
        section=_DEVICES,
        summary="Emulated and virtual network interfaces, each a NET_SPEC_STRING",
    ),
    KeySpec(
        name="vif2",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Undocumented netchannel2 devices; xl ignores them with a warning",
        deprecated=True,
        replaced_by="vif",
    ),
    KeySpec(
        name="vtpm",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Virtual TPMs, each backend=DOMAIN[,uuid=UUID]",
    ),
    KeySpec(
        name="p9",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="9pfs shares, each tag=,security_model=none,path=[,backend=]",
    ),
    KeySpec(
        name="pvcalls",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="PV calls connections, each backend=DOMAIN",
    ),
    KeySpec(
        name="vfb",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Paravirtual framebuffers, each a comma-separated list of vnc/sdl settings",
    ),
    KeySpec(
        name="channel",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Virtual channels, each name=,connection=pty|socket[,path=][,backend=]",
    ),
    KeySpec(
        name="rdm",
        kind=Kind.STRING,
        section=_DEVICES,
        summary="Reserved device memory handling, as strategy=host,policy=strict|relaxed",
        types=_HVM,
    ),
    KeySpec(
        name="usbctrl",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="USB controllers, each type=,version=,ports=",
    ),
    KeySpec(
        name="usbdev",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Host USB devices to attach, each hostbus=,hostaddr=[,controller=,port=]",
    ),
    KeySpec(
        name="pci",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Host PCI devices to pass through, each a BDF with options (PCI_SPEC_STRING)",
    ),
    KeySpec(
        name="pci_permissive",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary="Default of the permissive option for every passed-through PCI device",
        default="0",
    ),
    KeySpec(
        name="pci_msitranslate",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary="Default of the msitranslate option for every passed-through PCI device",
        default="0",
    ),
    KeySpec(
        name="pci_seize",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary="Default of the seize option for every passed-through PCI device",
        default="0",
    ),
    KeySpec(
        name="pci_power_mgmt",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary="Default of the power_mgmt option for every passed-through PCI device",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="gfx_passthru",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary='Make a passed-through GPU primary; a boolean, or "default"/"igd" (device kind)',
        types=_HVM,
    ),
    KeySpec(
        name="rdm_mem_boundary",
        kind=Kind.INTEGER,
        section=_DEVICES,
        summary="Boundary used when resolving reserved device memory conflicts with RAM",
        types=_HVM,
        unit="MiB",
        default="2048",
    ),
    KeySpec(
        name="dtdev",
        kind=Kind.STRING_LIST,
        section=_DEVICES,
        summary="Host device tree node paths to pass through",
        types=_ARM,
    ),
    KeySpec(
        name="ioports",
        kind=Kind.STRING_LIST,
        section=_DEVICES,
        summary="Legacy I/O port ranges the guest may access, in hex (e.g. 2f8-2ff)",
    ),
    KeySpec(
        name="iomem",
        kind=Kind.STRING_LIST,
        section=_DEVICES,
        summary="Machine memory pages the guest may map, each START,NUM_PAGES[@GFN] in hex",
    ),
    KeySpec(
        name="irqs",
        kind=Kind.STRING_LIST,
        section=_DEVICES,
        summary="Physical IRQ numbers the guest may access",
    ),
    KeySpec(
        name="max_event_channels",
        kind=Kind.INTEGER,
        section=_DEVICES,
        summary="Most event channels the guest may use",
        maximum=131071,
        default="1023",
    ),
    KeySpec(
        name="vdispl",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Virtual displays, each connectors=...[,backend=][,be-alloc=]",
    ),
    KeySpec(
        name="dm_restrict",
        kind=Kind.BOOL,
        section=_DEVICES,
        summary="Restrict (deprivilege) the device model after startup; technology preview",
    ),
    KeySpec(
        name="device_model_user",
        kind=Kind.STRING,
        section=_DEVICES,
        summary="User to run the device model as (with dm_restrict); one per domain",
    ),
    KeySpec(
        name="vsnd",
        kind=Kind.LIST_OF_LISTS,
        section=_DEVICES,
        summary="Virtual sound cards, each a list of CARD/PCM/STREAM item strings",
    ),
    KeySpec(
        name="vkb",
        kind=Kind.DEVICE_LIST,
        section=_DEVICES,
        summary="Virtual keyboard/pointer devices, each backend-type=...[,feature settings]",
    ),
    KeySpec(
        name="tee",
        kind=Kind.STRING,
        section=_DEVICES,
        summary="Arm only: Trusted Execution Environment the guest may use",
        types=_ARM,
        choices=("none", "optee"),
        default="none",
    ),
    # --- Paravirtualised (PV) Guest Specific Options --------------------------
    KeySpec(
        name="bootloader",
        kind=Kind.STRING,
        section=_PV_SPECIFIC,
        summary="Program (e.g. pygrub) run to find the kernel and ramdisk",
        types=_PV_PVH,
    ),
    KeySpec(
        name="bootloader_args",
        kind=Kind.STRING_OR_LIST,
        section=_PV_SPECIFIC,
        summary="Arguments for the bootloader; a list (a string split at spaces is deprecated)",
        types=_PV_PVH,
    ),
    KeySpec(
        name="e820_host",
        kind=Kind.BOOL,
        section=_PV_SPECIFIC,
        summary="Lay out the guest's memory map like the host e820, with its PCI holes",
        types=_PV,
        default="1 if PCI devices are passed through, else 0",
    ),
    # --- Fully-virtualised (HVM) Guest Specific Options -----------------------
    KeySpec(
        name="boot",
        kind=Kind.STRING,
        section=_BOOT_DEVICE,
        summary="Emulated boot devices to try in order: c disk, d CD-ROM, n network",
        types=_HVM,
        default="cd",
    ),
    KeySpec(
        name="hdtype",
        kind=Kind.STRING,
        section=_DISK_CONTROLLER,
        summary="Emulated hard disk controller type",
        types=_HVM,
        choices=("ide", "ahci"),
        default="ide",
    ),
    KeySpec(
        name="hap",
        kind=Kind.BOOL,
        section=_PAGING,
        summary="Use hardware assisted paging (EPT/NPT) rather than shadow page tables",
        types=_HVM_PVH,
        default="1 when available",
    ),
    KeySpec(
        name="oos",
        kind=Kind.BOOL,
        section=_PAGING,
        summary="Allow out-of-sync page tables in shadow mode",
        types=_HVM_PVH,
        default="1",
    ),
    KeySpec(
        name="shadow_memory",
        kind=Kind.INTEGER,
        section=_PAGING,
        summary="Memory set aside for shadow page tables or HAP state (Arm: P2M pool)",
        types=_HVM_PVH,
        unit="MiB",
        default="1 MiB per vCPU plus 8 KiB per MiB of RAM",
    ),
    KeySpec(
        name="bios",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="Virtual firmware exposed to the guest",
        types=_HVM,
        choices=("rombios", "seabios", "ovmf"),
        default="chosen by the device model",
    ),
    KeySpec(
        name="bios_path_override",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="Path of the BIOS blob to use instead of the default for bios",
        types=_HVM,
    ),
    KeySpec(
        name="firmware_override",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="Undocumented: path of a firmware (hvmloader) to use instead of the default",
        types=_HVM,
    ),
    KeySpec(
        name="pae",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Expose Physical Address Extensions (needed by 64-bit guests)",
        types=_HVM,
    ),
    KeySpec(
        name="acpi",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Expose ACPI tables to the guest",
        types=_HVM_PVH,
        default="1 on x86, 0 on Arm",
    ),
    KeySpec(
        name="acpi_s3",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Include the S3 (suspend to RAM) state in the ACPI tables",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="acpi_s4",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Include the S4 (suspend to disk) state in the ACPI tables",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="acpi_laptop_slate",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Include the Windows laptop/slate mode switch device in the ACPI tables",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="apic",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="x86: include APIC information (MP and PIR tables) in the firmware tables",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="nx",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="x86: expose the No-eXecute capability (needs pae)",
        types=_HVM,
    ),
    KeySpec(
        name="hpet",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="x86: provide an emulated HPET",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="altp2m",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="x86: access mode to alternate-p2m (a number is also accepted)",
        types=_HVM_PVH,
        choices=("disabled", "mixed", "external", "limited"),
        default="disabled",
    ),
    KeySpec(
        name="altp2mhvm",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Enable HVM guest access to alternate-p2m",
        types=_HVM,
        default="0",
        deprecated=True,
        replaced_by="altp2m",
    ),
    KeySpec(
        name="nestedhvm",
        kind=Kind.BOOL,
        section=_PLATFORM,
        summary="Expose hardware virtualisation features so the guest can run a hypervisor",
        types=_HVM_PVH,
        default="0",
    ),
    KeySpec(
        name="cpuid",
        kind=Kind.STRING_OR_LIST,
        section=_PLATFORM,
        summary='CPUID policy: libxl string "host,flag=v,..." or xend list "leaf:reg=bits"',
    ),
    KeySpec(
        name="acpi_firmware",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="File of extra ACPI tables to add to the guest's",
        types=_HVM,
    ),
    KeySpec(
        name="smbios_firmware",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="File of SMBIOS structures to add to or override the guest's",
        types=_HVM,
    ),
    KeySpec(
        name="ms_vm_genid",
        kind=Kind.STRING,
        section=_PLATFORM,
        summary="Whether to give the guest a Microsoft VM generation ID",
        types=_HVM,
        choices=("generate", "none"),
        default="none",
    ),
    KeySpec(
        name="tsc_mode",
        kind=Kind.STRING,
        section=_TIME,
        summary="x86: how the TSC is provided (a number is accepted but deprecated)",
        choices=("default", "always_emulate", "native", "native_paravirt"),
        default="default",
    ),
    KeySpec(
        name="localtime",
        kind=Kind.BOOL,
        section=_TIME,
        summary="Set the real time clock to local time rather than UTC",
        default="0",
    ),
    KeySpec(
        name="rtc_timeoffset",
        kind=Kind.INTEGER,
        section=_TIME,
        summary="Offset of the real time clock",
        unit="s",
        default="0",
    ),
    KeySpec(
        name="vpt_align",
        kind=Kind.BOOL,
        section=_TIME,
        summary="Align periodic virtual platform timers to reduce guest interrupts",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="timer_mode",
        kind=Kind.STRING,
        section=_TIME,
        summary="Virtual timer mode for missed ticks (a number is accepted but deprecated)",
        types=_HVM_PVH,
        choices=_TIMER_MODES,
        default="no_delay_for_missed_ticks",
    ),
    KeySpec(
        name="mmio_hole",
        kind=Kind.INTEGER,
        section=_MEMORY_LAYOUT,
        summary="Size of the MMIO hole below 4 GiB (qemu-xen only)",
        types=_HVM,
        minimum=256,
        maximum=3840,
        unit="MiB",
    ),
    KeySpec(
        name="xen_platform_pci",
        kind=Kind.BOOL,
        section=_PV_ON_HVM,
        summary="Provide the Xen platform PCI device used by PV drivers",
        types=_HVM,
    ),
    KeySpec(
        name="viridian",
        kind=Kind.BOOL_OR_LIST,
        section=_PV_ON_HVM,
        summary="Hyper-V enlightenment groups to expose; a boolean means defaults or none",
        types=_HVM,
    ),
    KeySpec(
        name="videoram",
        kind=Kind.INTEGER,
        section=_VGA,
        summary="Video RAM of the emulated graphics card",
        types=_HVM,
        unit="MiB",
        default="depends on vga and device model",
    ),
    KeySpec(
        name="stdvga",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Emulate a standard VGA card with VBE rather than Cirrus",
        types=_HVM,
        default="0",
        deprecated=True,
        replaced_by="vga",
    ),
    KeySpec(
        name="vga",
        kind=Kind.STRING,
        section=_VGA,
        summary="Emulated video card",
        types=_HVM,
        choices=("none", "stdvga", "cirrus", "qxl"),
        default="cirrus",
    ),
    KeySpec(
        name="vnc",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Give access to the display over VNC (PV: builds a vfb when vfb is unset)",
        types=_PV_HVM,
        default="1",
    ),
    KeySpec(
        name="vnclisten",
        kind=Kind.STRING,
        section=_VGA,
        summary="Address, and optionally display number, the VNC server listens on",
        types=_PV_HVM,
    ),
    KeySpec(
        name="vncdisplay",
        kind=Kind.INTEGER,
        section=_VGA,
        summary="VNC display number (TCP port 5900 + N)",
        types=_PV_HVM,
    ),
    KeySpec(
        name="vncunused",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Let the VNC server find a free TCP port",
        types=_PV_HVM,
    ),
    KeySpec(
        name="vncpasswd",
        kind=Kind.STRING,
        section=_VGA,
        summary="Password of the VNC server; empty disables authentication",
        types=_PV_HVM,
    ),
    KeySpec(
        name="vncviewer",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Undocumented xm leftover; xl ignores it with a warning (use xl create -V)",
        deprecated=True,
    ),
    KeySpec(
        name="keymap",
        kind=Kind.STRING,
        section=_VGA,
        summary="Keyboard layout of the display, as named by the device model (e.g. en-us)",
        types=_PV_HVM,
        default="en-us",
    ),
    KeySpec(
        name="sdl",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Show the display in an SDL window on the host",
        types=_PV_HVM,
        default="0",
    ),
    KeySpec(
        name="opengl",
        kind=Kind.BOOL,
        section=_VGA,
        summary="OpenGL acceleration of the SDL display (qemu-xen-traditional only)",
        types=_PV_HVM,
        default="0",
    ),
    KeySpec(
        name="display",
        kind=Kind.STRING,
        section=_VGA,
        summary="X display for the SDL window (documented only as a vfb setting)",
        types=_PV_HVM,
    ),
    KeySpec(
        name="xauthority",
        kind=Kind.STRING,
        section=_VGA,
        summary="X authority file for the SDL window (documented only as a vfb setting)",
        types=_PV_HVM,
    ),
    KeySpec(
        name="nographic",
        kind=Kind.BOOL,
        section=_VGA,
        summary="Provide no emulated graphics device",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="spice",
        kind=Kind.BOOL,
        section=_SPICE,
        summary="Give access to the display over SPICE",
        types=_HVM,
    ),
    KeySpec(
        name="spicehost",
        kind=Kind.STRING,
        section=_SPICE,
        summary="Address the SPICE server listens on",
        types=_HVM,
        default="any interface",
    ),
    KeySpec(
        name="spiceport",
        kind=Kind.INTEGER,
        section=_SPICE,
        summary="TCP port of the SPICE server",
        types=_HVM,
    ),
    KeySpec(
        name="spicetls_port",
        kind=Kind.INTEGER,
        section=_SPICE,
        summary="TLS port of the SPICE server",
        types=_HVM,
    ),
    KeySpec(
        name="spicedisable_ticketing",
        kind=Kind.BOOL,
        section=_SPICE,
        summary="Let SPICE clients connect without a password",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="spicepasswd",
        kind=Kind.STRING,
        section=_SPICE,
        summary="Password SPICE clients must give",
        types=_HVM,
    ),
    KeySpec(
        name="spiceagent_mouse",
        kind=Kind.BOOL,
        section=_SPICE,
        summary="Use the SPICE agent for client mouse mode",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="spicevdagent",
        kind=Kind.BOOL,
        section=_SPICE,
        summary="Enable the SPICE vdagent channel",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="spice_clipboard_sharing",
        kind=Kind.BOOL,
        section=_SPICE,
        summary="Share the clipboard over SPICE (needs spicevdagent)",
        types=_HVM,
        default="0",
    ),
    KeySpec(
        name="spiceusbredirection",
        kind=Kind.INTEGER,
        section=_SPICE,
        summary="Number of SPICE USB redirection channels",
        types=_HVM,
        minimum=0,
        maximum=4,
        default="0",
    ),
    KeySpec(
        name="spice_image_compression",
        kind=Kind.STRING,
        section=_SPICE,
        summary="SPICE image compression, passed to QEMU (auto_glz, auto_lz, quic, glz, lz, off)",
        types=_HVM,
        default="QEMU's default",
    ),
    KeySpec(
        name="spice_streaming_video",
        kind=Kind.STRING,
        section=_SPICE,
        summary="SPICE streaming video setting, passed to QEMU (filter, all, off)",
        types=_HVM,
        default="QEMU's default",
    ),
    KeySpec(
        name="serial",
        kind=Kind.STRING_OR_LIST,
        section=_MISC_HW,
        summary="Where the emulated serial ports go, as QEMU -serial devices",
        types=_HVM,
        default="vc, or stdio with nographic",
    ),
    KeySpec(
        name="soundhw",
        kind=Kind.STRING,
        section=_MISC_HW,
        summary="Emulated sound card, as named by QEMU (e.g. hda, ac97)",
        types=_HVM,
        default="none",
    ),
    KeySpec(
        name="vkb_device",
        kind=Kind.BOOL,
        section=_MISC_HW,
        summary="Give the HVM guest a PV keyboard device",
        types=_HVM,
        default="1",
    ),
    KeySpec(
        name="usb",
        kind=Kind.BOOL,
        section=_MISC_HW,
        summary="Provide an emulated USB bus",
        types=_HVM,
    ),
    KeySpec(
        name="usbversion",
        kind=Kind.INTEGER,
        section=_MISC_HW,
        summary="Version of the emulated USB controller (1, 2 or 3; 0 none); not with usb",
        types=_HVM,
        minimum=0,
        maximum=3,
        default="0",
    ),
    KeySpec(
        name="usbdevice",
        kind=Kind.STRING_OR_LIST,
        section=_MISC_HW,
        summary="Devices on the emulated USB bus (e.g. tablet, host:XXXX:YYYY)",
        types=_HVM,
    ),
    KeySpec(
        name="vendor_device",
        kind=Kind.STRING,
        section=_MISC_HW,
        summary="Variant of the QEMU xen-pvdevice to provide (qemu-xen only)",
        types=_HVM,
        choices=("none", "xenserver"),
        default="none",
    ),
    # --- Device-Model Options ------------------------------------------------
    KeySpec(
        name="device_model_version",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Which device model (QEMU variant) to use",
        choices=("qemu-xen", "qemu-xen-traditional"),
        default="qemu-xen",
    ),
    KeySpec(
        name="device_model_override",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Path of the device model binary run in the toolstack domain",
    ),
    KeySpec(
        name="device_model",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Undocumented xm-era device model path; xl ignores it with a warning",
        deprecated=True,
        replaced_by="device_model_override",
    ),
    KeySpec(
        name="stubdomain_kernel",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Kernel image of the device-model stubdomain",
        types=_HVM,
    ),
    KeySpec(
        name="stubdomain_cmdline",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Kernel command line of the device-model stubdomain",
        types=_HVM,
    ),
    KeySpec(
        name="stubdomain_ramdisk",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="Ramdisk of the device-model stubdomain (Linux-based stubdomains)",
        types=_HVM,
    ),
    KeySpec(
        name="stubdomain_memory",
        kind=Kind.INTEGER,
        section=_DEVICE_MODEL,
        summary="RAM of the device-model stubdomain",
        types=_HVM,
        unit="MiB",
        default="128",
    ),
    KeySpec(
        name="device_model_stubdomain_override",
        kind=Kind.BOOL,
        section=_DEVICE_MODEL,
        summary="Run the device model in a stubdomain",
        types=_HVM,
        default="chosen from the other options",
    ),
    KeySpec(
        name="device_model_stubdomain_seclabel",
        kind=Kind.STRING,
        section=_DEVICE_MODEL,
        summary="XSM security label of the device-model stubdomain",
        types=_HVM,
    ),
    KeySpec(
        name="device_model_args",
        kind=Kind.STRING_LIST,
        section=_DEVICE_MODEL,
        summary="Extra arguments for the device model command line",
    ),
    KeySpec(
        name="device_model_args_pv",
        kind=Kind.STRING_LIST,
        section=_DEVICE_MODEL,
        summary="Extra device model arguments for the PV (xenpv) device model only",
        types=_PV_PVH,
    ),
    KeySpec(
        name="device_model_args_hvm",
        kind=Kind.STRING_LIST,
        section=_DEVICE_MODEL,
        summary="Extra device model arguments for the HVM device model only",
        types=_HVM,
    ),
    # --- Architecture Specific options: ARM ----------------------------------
    KeySpec(
        name="gic_version",
        kind=Kind.STRING,
        section=_ARM_SECTION,
        summary="Version of the interrupt controller (GIC) emulated for the guest",
        types=_ARM,
        choices=("default", "v2", "v3"),
        default="default",
    ),
    KeySpec(
        name="vuart",
        kind=Kind.STRING,
        section=_ARM_SECTION,
        summary="Emulated UART for the guest console",
        types=_ARM,
        choices=("sbsa_uart",),
    ),
    # --- Architecture Specific options: x86 ----------------------------------
    KeySpec(
        name="mca_caps",
        kind=Kind.STRING_LIST,
        section=_X86_SECTION,
        summary='MCA capabilities beyond the default ones; xl knows only "lmce"',
        types=_HVM,
    ),
    KeySpec(
        name="msr_relaxed",
        kind=Kind.BOOL,
        section=_X86_SECTION,
        summary="Interim: handle unknown MSRs the lax pre-4.15 way",
        default="0",
    ),
)


def _index(specs: tuple[KeySpec, ...]) -> dict[str, KeySpec]:
    index: dict[str, KeySpec] = {}
    for spec in specs:
        if spec.name in index:
            raise ValueError(f"duplicate xl.cfg key in catalogue: {spec.name}")
        index[spec.name] = spec
    return index


KEYS: Mapping[str, KeySpec] = _index(_SPECS)
"""Every known xl.cfg key of Xen 4.17, by name."""

KNOWN_KEYS: frozenset[str] = frozenset(KEYS)
"""The names in :data:`KEYS`."""


def spec_for(name: str) -> KeySpec | None:
    """The catalogue entry of key ``name``, or None for a key xl does not know."""
    return KEYS.get(name)
