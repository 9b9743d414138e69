"""The xl.cfg key catalogue against the Xen 4.17 man page and xl_parse.c."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenkit.config.keys import KEYS, KNOWN_KEYS, spec_for
from xenkit.config.keyspec import ALL_TYPES, DomainType, KeySpec, Kind

POD_KEYS_FILE = Path(__file__).parent / "data" / "xl_cfg_pod_keys.txt"

PV = DomainType.PV
PVH = DomainType.PVH
HVM = DomainType.HVM

# Keys parse_config_data reads that xl.cfg(5) does not document as top-level keys.
UNDOCUMENTED_READ_BY_XL = frozenset(
    {
        "device_model",
        "display",
        "extratime",
        "firmware_override",
        "latency",
        "period",
        "slice",
        "vif2",
        "vncviewer",
        "xauthority",
    }
)


def _pod_keys() -> list[str]:
    return [line for line in POD_KEYS_FILE.read_text().splitlines() if line.strip()]


# --- (1) coverage of the man page ---------------------------------------------


def test_pod_key_list_is_sorted_and_unique() -> None:
    names = _pod_keys()
    assert names, "the extracted key list is empty"
    assert names == sorted(set(names))


def test_every_documented_key_is_catalogued() -> None:
    missing = sorted(set(_pod_keys()) - set(KEYS))
    assert missing == []


def test_only_known_undocumented_keys_are_extra() -> None:
    extra = set(KEYS) - set(_pod_keys())
    assert extra == UNDOCUMENTED_READ_BY_XL


def test_known_keys_and_lookup() -> None:
    assert frozenset(KEYS) == KNOWN_KEYS
    assert spec_for("memory") is KEYS["memory"]
    assert spec_for("no_such_key") is None


# --- (2) internal consistency -------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEYS))
def test_spec_is_consistent(name: str) -> None:
    spec = KEYS[name]
    assert isinstance(spec, KeySpec)
    assert spec.name == name
    assert spec.summary.strip(), "empty summary"
    assert len(spec.summary) <= 100
    assert "\n" not in spec.summary
    assert spec.section.strip(), "empty section"
    assert spec.types, "applies to no domain type"
    assert spec.types <= ALL_TYPES
    if spec.choices:
        assert spec.kind in (Kind.STRING, Kind.STRING_OR_LIST)
        assert len(set(spec.choices)) == len(spec.choices)
        assert all(choice for choice in spec.choices)
    if spec.minimum is not None or spec.maximum is not None:
        assert spec.kind is Kind.INTEGER
    if spec.minimum is not None and spec.maximum is not None:
        assert spec.minimum <= spec.maximum
    if spec.unit:
        assert spec.kind is Kind.INTEGER
    if spec.replaced_by:
        assert spec.deprecated
        assert spec.replaced_by in KEYS
        assert spec.replaced_by != name
        assert not KEYS[spec.replaced_by].deprecated


# --- (3) spot checks against xl_parse.c and the man page ----------------------


def test_memory() -> None:
    spec = KEYS["memory"]
    assert spec.kind is Kind.INTEGER
    assert spec.unit == "MiB"
    assert spec.types == ALL_TYPES
    assert spec.section == "Memory Allocation"
    assert KEYS["maxmem"].unit == "MiB"


def test_cap_and_weight() -> None:
    cap = KEYS["cap"]
    assert cap.kind is Kind.INTEGER
    assert cap.unit == "%"
    assert cap.default == "0"
    weight = KEYS["cpu_weight"]
    assert weight.kind is Kind.INTEGER
    assert (weight.minimum, weight.maximum, weight.default) == (1, 65535, "256")
    assert not weight.deprecated
    # Xen 4.17's xl reads "cpu_weight"; a bare "weight" is not an xl.cfg key.
    assert spec_for("weight") is None


def test_viridian() -> None:
    spec = KEYS["viridian"]
    assert spec.kind is Kind.BOOL_OR_LIST
    assert spec.types == frozenset({HVM})


def test_bootloader() -> None:
    # Documented under both the PV and the PVH sections; xl needs kernel or
    # bootloader for PV and PVH, and libxl runs no bootloader for HVM.
    for name in ("bootloader", "bootloader_args"):
        spec = KEYS[name]
        assert PV in spec.types
        assert HVM not in spec.types
        assert spec.types == frozenset({PV, PVH})
    assert KEYS["bootloader"].kind is Kind.STRING
    assert KEYS["bootloader_args"].kind is Kind.STRING_OR_LIST
    assert KEYS["e820_host"].types == frozenset({PV})


def test_type_and_builder() -> None:
    assert KEYS["type"].kind is Kind.STRING
    assert set(KEYS["type"].choices) == {"pv", "pvh", "hvm"}
    builder = KEYS["builder"]
    assert builder.deprecated
    assert builder.replaced_by == "type"
    assert set(builder.choices) == {"generic", "hvm"}


def test_event_actions() -> None:
    actions = {
        "destroy",
        "restart",
        "rename-restart",
        "preserve",
        "coredump-destroy",
        "coredump-restart",
        "soft-reset",
    }
    for name in ("on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset"):
        assert set(KEYS[name].choices) == actions
    assert KEYS["on_reboot"].default == "restart"
    assert KEYS["on_soft_reset"].default == "soft-reset"


def test_string_or_list_keys() -> None:
    for name in ("cpus", "cpus_soft", "cpuid", "serial", "usbdevice"):
        assert KEYS[name].kind is Kind.STRING_OR_LIST, name


def test_device_keys() -> None:
    assert KEYS["disk"].kind is Kind.DISK_LIST
    assert KEYS["vif"].kind is Kind.VIF_LIST
    for name in (
        "vfb",
        "vkb",
        "channel",
        "usbctrl",
        "usbdev",
        "p9",
        "pvcalls",
        "vtpm",
        "vdispl",
        "pci",
    ):
        assert KEYS[name].kind is Kind.DEVICE_LIST, name
    # vsnd is a list of cards, each itself a list of item strings.
    assert KEYS["vsnd"].kind is Kind.LIST_OF_LISTS
    assert KEYS["vnuma"].kind is Kind.LIST_OF_LISTS
    for name in ("dtdev", "ioports", "iomem", "irqs", "device_model_args", "mca_caps"):
        assert KEYS[name].kind is Kind.STRING_LIST, name
    # rdm is one "strategy=...,policy=..." string, not a list.
    assert KEYS["rdm"].kind is Kind.STRING


def test_bounded_longs() -> None:
    for name in ("max_grant_frames", "max_maptrack_frames", "max_grant_version"):
        spec = KEYS[name]
        assert (spec.minimum, spec.maximum) == (0, 2**31 - 1), name
    mmio_hole = KEYS["mmio_hole"]
    assert (mmio_hole.minimum, mmio_hole.maximum, mmio_hole.unit) == (256, 3840, "MiB")


def test_hvm_only_keys() -> None:
    for name in (
        "bios",
        "pae",
        "apic",
        "hpet",
        "vga",
        "stdvga",
        "hdtype",
        "boot",
        "serial",
        "usbdevice",
        "spice",
        "gfx_passthru",
        "vendor_device",
        "mca_caps",
        "xen_platform_pci",
    ):
        assert KEYS[name].types == frozenset({HVM}), name


def test_pvh_and_arm_keys() -> None:
    for name in ("pvshim", "pvshim_path", "pvshim_cmdline", "pvshim_extra"):
        assert KEYS[name].types == frozenset({PVH}), name
    # Arm guests are always PVH in Xen 4.17.
    for name in ("gic_version", "vuart", "tee", "dtdev", "device_tree", "vpmu"):
        assert KEYS[name].types == frozenset({PVH}), name
    assert set(KEYS["gic_version"].choices) == {"default", "v2", "v3"}
    assert KEYS["vuart"].choices == ("sbsa_uart",)
    for name in ("hap", "oos", "shadow_memory", "nestedhvm", "timer_mode", "vnuma"):
        assert KEYS[name].types == frozenset({HVM, PVH}), name


def test_named_choices() -> None:
    assert set(KEYS["tsc_mode"].choices) >= {"default", "always_emulate", "native"}
    assert set(KEYS["timer_mode"].choices) == {
        "delay_for_missed_ticks",
        "no_delay_for_missed_ticks",
        "no_missed_ticks_pending",
        "one_missed_tick_pending",
    }
    assert set(KEYS["vga"].choices) == {"none", "stdvga", "cirrus", "qxl"}
    assert set(KEYS["hdtype"].choices) == {"ide", "ahci"}
    assert set(KEYS["vendor_device"].choices) == {"none", "xenserver"}
    assert set(KEYS["device_model_version"].choices) == {"qemu-xen", "qemu-xen-traditional"}
    assert set(KEYS["bios"].choices) == {"rombios", "seabios", "ovmf"}
    # firmware also takes a path, so xl restricts nothing.
    assert KEYS["firmware"].choices == ()


def test_deprecated_keys() -> None:
    replaced = {name: spec.replaced_by for name, spec in KEYS.items() if spec.deprecated}
    assert replaced["builder"] == "type"
    assert replaced["altp2mhvm"] == "altp2m"
    assert replaced["stdvga"] == "vga"
    assert replaced["device_model"] == "device_model_override"
    assert "cpu_weight" not in replaced


def test_flags_read_as_longs_are_bool() -> None:
    # xl reads these with xlu_cfg_get_long and uses them only as flags.
    for name in ("pci_permissive", "pci_msitranslate", "pci_seize", "pci_power_mgmt", "stdvga"):
        assert KEYS[name].kind is Kind.BOOL, name
    for name in ("memory", "vcpus", "maxvcpus", "videoram", "shadow_memory", "vncdisplay"):
        assert KEYS[name].kind is Kind.INTEGER, name
