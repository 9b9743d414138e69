"""The VmSpec <-> XenAPI mapping, the xl.cfg writer and the upload bodies, without a pool.

Records are checked against xapi's published data model (the fake pool's
checker, with no server), VHD bodies against qemu-img.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_xapi import MemReader, disk_image, load_model, qemu_img, vhd_to_raw
from xenkit.config import parse_config
from xenkit.motion.model import DiskRef, Losses, NicRef, StrictLoss, VmSpec
from xenkit.motion.xapi.records import (
    MiB,
    Vdev,
    spec_from_vm_record,
    userdevices,
    vbd_record,
    vdev_for,
    vdi_record,
    vif_record,
    vm_record_from_spec,
)
from xenkit.motion.xapi.streams import RawBody, VhdBody, vhd_possible
from xenkit.motion.xl import xl_text

REF = "OpaqueRef:11111111-2222-3333-4444-555555555555"


def hvm_spec(**changes: Any) -> VmSpec:
    fields: dict[str, Any] = {
        "name": "web-01",
        "guest_type": "hvm",
        "description": "front end",
        "memory_mib": 1024,
        "maxmem_mib": 2048,
        "vcpus": 2,
        "maxvcpus": 4,
        "firmware": "uefi",
        "boot_order": "dc",
        "platform": {"acpi": "1", "apic": "true", "viridian": "false", "videoram": "8"},
        "on_poweroff": "destroy",
        "on_reboot": "restart",
        "on_crash": "coredump-restart",
        "cpu_weight": 512,
        "cap": 50,
        "disks": (
            DiskRef(vdev="xvda", path="/srv/web-01.img", virtual_size=8 * MiB),
            DiskRef(vdev="xvdb", path="/srv/data.img", virtual_size=4 * MiB, readonly=True),
            DiskRef(vdev="hdc", path="/srv/install.iso", cdrom=True, readonly=True),
        ),
        "nics": (
            NicRef(mac="00:16:3E:01:02:03", bridge="xenbr0", model="e1000"),
            NicRef(bridge="xenbr1", mtu=9000),
        ),
    }
    fields.update(changes)
    return VmSpec(**fields)


def keys(losses: Losses) -> list[str]:
    return [loss.key for loss in losses]


def test_hvm_record_follows_the_data_model_and_the_spec() -> None:
    losses = Losses()
    record = vm_record_from_spec(hvm_spec(), losses)
    load_model().check_ctor("VM", record, "VM.create")
    assert record["name_label"] == "web-01"
    assert record["name_description"] == "front end"
    assert record["memory_static_max"] == str(2048 * MiB)
    assert record["memory_dynamic_max"] == record["memory_dynamic_min"] == str(1024 * MiB)
    assert record["memory_static_min"] == str(1024 * MiB)
    assert (record["VCPUs_at_startup"], record["VCPUs_max"]) == ("2", "4")
    assert record["VCPUs_params"] == {"weight": "512", "cap": "50"}
    assert record["domain_type"] == "hvm"
    assert record["HVM_boot_policy"] == "BIOS order"
    assert record["HVM_boot_params"] == {"order": "dc", "firmware": "uefi"}
    assert record["platform"] == {
        "acpi": "1",
        "apic": "true",
        "viridian": "false",
        "videoram": "8",
        "device-model": "qemu-upstream-uefi",
        "nic_type": "e1000",
    }
    assert record["actions_after_crash"] == "coredump_and_restart"
    assert record["PV_bootloader"] == record["PV_kernel"] == ""
    assert losses.items == []


def test_pv_record_carries_pygrub_and_reports_a_dom0_kernel() -> None:
    losses = Losses()
    spec = VmSpec(
        name="old",
        guest_type="pv",
        kernel="/boot/vmlinuz-6.1",
        ramdisk="/boot/initrd.img-6.1",
        cmdline="root=/dev/xvda1 ro",
        on_poweroff="preserve",
        on_reboot="rename-restart",
        uuid="8d5c8a4e-0000-4000-8000-000000000001",
        extra={"cpus": '"0-3"', "vendor_device": '"xenserver"'},
    )
    record = vm_record_from_spec(spec, losses)
    load_model().check_ctor("VM", record, "VM.create")
    assert record["HVM_boot_policy"] == ""
    assert record["domain_type"] == "pv"
    # xapi boots PV kernels only from /var/lib/xcp/guest/; the xl path is kept.
    assert record["PV_kernel"] == "/var/lib/xcp/guest/vmlinuz-6.1"
    assert record["PV_args"] == "root=/dev/xvda1 ro"
    assert record["has_vendor_device"] is True
    assert record["actions_after_shutdown"] == "destroy"
    assert record["actions_after_reboot"] == "restart"
    assert record["other_config"] == {
        "xenkit-xl-cpus": '"0-3"',
        "xenkit-xl-on_poweroff": "preserve",
        "xenkit-xl-on_reboot": "rename-restart",
        "xenkit-xl-kernel": "/boot/vmlinuz-6.1",
        "xenkit-xl-ramdisk": "/boot/initrd.img-6.1",
    }
    assert keys(losses) == ["on_poweroff", "on_reboot", "uuid", "kernel", "ramdisk", "cpus"]
    assert {loss.kind for loss in losses} == {"lost", "approximated"}
    assert "/var/lib/xcp/guest/" in str(losses.items[3])

    losses = Losses()
    bootloader = vm_record_from_spec(
        VmSpec(
            name="g",
            bootloader="/usr/lib/xen/bin/pygrub",
            bootloader_args="-q",
            kernel="/boot/vmlinuz",
            extra={"pvshim": "1"},
        ),
        losses,
    )
    assert (bootloader["PV_bootloader"], bootloader["PV_bootloader_args"]) == ("pygrub", "-q")
    assert bootloader["PV_kernel"] == "/boot/vmlinuz"  # a path in the guest, for pygrub
    assert bootloader["domain_type"] == "pv_in_pvh"
    assert losses.items == []
    hvm = vm_record_from_spec(VmSpec(name="h", guest_type="hvm", extra={"pvshim": "1"}), losses)
    assert hvm["domain_type"] == "hvm" and keys(losses) == ["pvshim"]
    losses = Losses()
    pvgrub = vm_record_from_spec(VmSpec(name="g", extra={"firmware": '"pvgrub64"'}), losses)
    assert pvgrub["PV_bootloader"] == "pygrub"
    assert pvgrub["other_config"] == {"xenkit-xl-firmware": '"pvgrub64"'}
    assert [str(x) for x in losses] == [
        "firmware: pvgrub64: XenAPI reads the guest's grub.cfg with pygrub instead (approximated)"
    ]


def test_strict_stops_at_the_first_loss() -> None:
    with pytest.raises(StrictLoss, match="uuid"):
        vm_record_from_spec(VmSpec(name="x", uuid="u"), Losses(strict=True))


def test_device_records_follow_the_data_model() -> None:
    model = load_model()
    disk = DiskRef(vdev="xvdb", path="/a.img", readonly=True, label="data")
    vdi = vdi_record(disk, REF, name="web xvdb", virtual_size=5 * MiB)
    model.check_ctor("VDI", vdi, "VDI.create")
    assert vdi["name_label"] == "data" and vdi["read_only"] is False
    vbd = vbd_record(disk, REF, REF, userdevice=1, bootable=False)
    model.check_ctor("VBD", vbd, "VBD.create")
    assert (vbd["mode"], vbd["type"], vbd["empty"]) == ("RO", "Disk", False)
    cd = vbd_record(
        DiskRef(vdev="hdc", path="", cdrom=True), REF, None, userdevice=2, bootable=False
    )
    model.check_ctor("VBD", cd, "VBD.create")
    assert (cd["type"], cd["VDI"], cd["empty"]) == ("CD", "OpaqueRef:NULL", True)
    vif = vif_record(NicRef(mac="00:16:3E:AA:BB:CC"), REF, REF, device=0, mtu=1500)
    model.check_ctor("VIF", vif, "VIF.create")
    assert (vif["MAC"], vif["MTU"]) == ("00:16:3e:aa:bb:cc", "1500")


def test_userdevices_number_disks_by_their_vdev() -> None:
    disks = [DiskRef(vdev=v, path="x") for v in ("xvda", "hdb", "sdc", "xvdaa")]
    assert userdevices(disks, Losses()) == [0, 1, 2, 26]
    losses = Losses()
    clash = [DiskRef(vdev=v, path="x") for v in ("xvda", "hda", "xvda2")]
    assert userdevices(clash, losses) == [0, 1, 2]
    assert [str(x).split(":")[0] for x in losses] == ["disk hda", "disk xvda2", "disk xvda2"]
    assert Vdev.parse("d0p1") is None
    assert [vdev_for(n, "hvm") for n in (0, 3, 4)] == ["hda", "hdd", "xvde"]
    assert vdev_for(27, "pv") == "xvdab"


def test_xl_values_xenapi_lacks_come_back_unless_the_pool_changed_them() -> None:
    spec = VmSpec(
        name="old",
        kernel="/boot/vmlinuz-6.1",
        on_poweroff="preserve",
        bootloader_args="-q",
        extra={"cpus": '"0-3"', "vendor_device": "xenserver", "pvshim": "1"},
    )
    record = vm_record_from_spec(spec, Losses())
    back = spec_from_vm_record(record, [], {}, [], {}, Losses())
    assert (back.kernel, back.on_poweroff, back.bootloader_args) == (
        "/boot/vmlinuz-6.1",
        "preserve",
        "-q",
    )
    assert back.extra == spec.extra
    changed = {
        **record,
        "actions_after_shutdown": "restart",
        "PV_kernel": "/var/lib/xcp/guest/other",
        "has_vendor_device": False,
        "domain_type": "pv",
    }
    back = spec_from_vm_record(changed, [], {}, [], {}, Losses())
    assert (back.kernel, back.on_poweroff) == ("/var/lib/xcp/guest/other", "restart")
    assert back.extra == {"cpus": '"0-3"'}


def test_userdevices_take_xls_generic_disk_names() -> None:
    disks = [DiskRef(vdev=v, path="x") for v in ("d0", "d3p1")]
    losses = Losses()
    assert userdevices(disks, losses) == [0, 3]
    assert [x.key for x in losses] == ["disk d3p1"]


def xcp_vm_record(**changes: Any) -> dict[str, Any]:
    """A VM record as XCP-ng 8.2 answers VM.get_record (abridged to what the
    mapping reads, plus fields it must report)."""
    record: dict[str, Any] = {
        "uuid": "a3b5c7d9-0000-4000-8000-00000000abcd",
        "name_label": "debian-12",
        "name_description": "made by the Debian 12 template",
        "power_state": "Halted",
        "memory_static_max": str(4096 * MiB),
        "memory_dynamic_max": str(2048 * MiB),
        "memory_dynamic_min": str(1024 * MiB),
        "memory_static_min": str(512 * MiB),
        "VCPUs_max": "4",
        "VCPUs_at_startup": "2",
        "VCPUs_params": {"weight": "256", "mask": "0,1"},
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "rename_restart",
        "actions_after_softreboot": "soft_reboot",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn", "firmware": "uefi"},
        "HVM_shadow_multiplier": 1.0,
        "platform": {
            "timeoffset": "0",
            "device-model": "qemu-upstream-uefi",
            "videoram": "8",
            "apic": "true",
            "viridian": "false",
            "nx": "true",
            "acpi": "1",
            "cores-per-socket": "2",
            "secureboot": "false",
            "nic_type": "e1000",
        },
        "other_config": {
            "mac_seed": "5d1b2a3c-0000-4000-8000-000000000000",
            "base_template_name": "Debian Bookworm 12",
            "xenkit-xl-cpus": '"0-3"',
        },
        "domain_type": "hvm",
        "has_vendor_device": False,
        "NVRAM": {"EFI-variables": "AAAA"},
        "affinity": "OpaqueRef:NULL",
        "tags": [],
        "xenstore_data": {},
        "VGPUs": [],
        "VUSBs": [],
        "VTPMs": [],
        "attached_PCIs": [],
    }
    record.update(changes)
    return record


VBDS = [
    {
        "userdevice": "3",
        "type": "CD",
        "empty": True,
        "VDI": "OpaqueRef:NULL",
        "mode": "RO",
        "bootable": False,
        "other_config": {},
        "qos_algorithm_type": "",
    },
    {
        "userdevice": "0",
        "type": "Disk",
        "empty": False,
        "VDI": "OpaqueRef:vdi0",
        "mode": "RW",
        "bootable": True,
        "other_config": {},
        "qos_algorithm_type": "",
    },
    {
        "userdevice": "4",
        "type": "Disk",
        "empty": False,
        "VDI": "OpaqueRef:vdi1",
        "mode": "RO",
        "bootable": False,
        "other_config": {"xenkit-xl-vdev": "sdb"},
        "qos_algorithm_type": "",
    },
]
VDIS = {
    "OpaqueRef:vdi0": {"name_label": "debian-12 0", "virtual_size": str(20 << 30)},
    "OpaqueRef:vdi1": {"name_label": "data", "virtual_size": str(3 * MiB)},
}
VIFS = [
    {
        "device": "1",
        "network": "OpaqueRef:net1",
        "MAC": "02:AB:00:00:00:02",
        "MTU": "9000",
        "qos_algorithm_type": "ratelimit",
        "locking_mode": "network_default",
    },
    {
        "device": "0",
        "network": "OpaqueRef:net0",
        "MAC": "02:ab:00:00:00:01",
        "MTU": "1500",
        "qos_algorithm_type": "",
        "locking_mode": "locked",
    },
]
NETWORKS = {"OpaqueRef:net0": {"bridge": "xenbr0"}, "OpaqueRef:net1": {"bridge": "xapi1"}}


def test_spec_from_an_xcp_record() -> None:
    losses = Losses()
    spec = spec_from_vm_record(xcp_vm_record(), VBDS, VDIS, VIFS, NETWORKS, losses)
    assert spec.name == "debian-12" and spec.guest_type == "hvm"
    assert spec.uuid == "a3b5c7d9-0000-4000-8000-00000000abcd"
    assert (spec.memory_mib, spec.maxmem_mib) == (2048, 4096)
    assert (spec.vcpus, spec.maxvcpus, spec.cpu_weight, spec.cap) == (2, 4, 256, None)
    assert (spec.firmware, spec.boot_order) == ("uefi", "cdn")
    assert spec.on_crash == "rename-restart"
    assert "device-model" not in spec.platform and "nic_type" not in spec.platform
    assert spec.platform["cores-per-socket"] == "2"
    assert [(d.vdev, d.path, d.readonly, d.cdrom, d.bootable) for d in spec.disks] == [
        ("hda", "OpaqueRef:vdi0", False, False, True),
        ("hdd", "", True, True, False),
        ("sdb", "OpaqueRef:vdi1", True, False, False),
    ]
    assert spec.disks[0].virtual_size == 20 << 30 and spec.disks[0].label == "debian-12 0"
    assert spec.nics == (
        NicRef(mac="02:ab:00:00:00:01", bridge="xenbr0", model="e1000"),
        NicRef(mac="02:ab:00:00:00:02", bridge="xapi1", model="e1000", mtu=9000),
    )
    assert spec.extra == {"cpus": '"0-3"'}
    assert keys(losses) == [
        "memory_dynamic_min",
        "VCPUs_params:mask",
        "NVRAM",
        "VIF 1 qos_algorithm_type",
        "VIF 0 locking_mode",
    ]


def test_domain_types_and_boot_policy() -> None:
    pv = spec_from_vm_record(
        xcp_vm_record(
            domain_type="pv",
            HVM_boot_policy="",
            PV_bootloader="pygrub",
            PV_args="console=hvc0",
            NVRAM={},
        ),
        [],
        {},
        [],
        {},
        Losses(),
    )
    assert (pv.guest_type, pv.bootloader, pv.cmdline, pv.firmware) == (
        "pv",
        "pygrub",
        "console=hvc0",
        None,
    )
    old = spec_from_vm_record(
        xcp_vm_record(domain_type="unspecified", HVM_boot_policy=""), [], {}, [], {}, Losses()
    )
    assert old.guest_type == "pv"
    losses = Losses()
    shim = spec_from_vm_record(
        xcp_vm_record(
            domain_type="pv_in_pvh",
            HVM_boot_policy="",
            NVRAM={},
            has_vendor_device=True,
            actions_after_softreboot="destroy",
        ),
        [],
        {},
        [],
        {},
        losses,
    )
    assert shim.guest_type == "pv"
    assert shim.extra == {
        "cpus": '"0-3"',
        "pvshim": "1",
        "vendor_device": '"xenserver"',
        "on_soft_reset": '"destroy"',
    }
    assert "domain_type" in keys(losses)


def test_spec_round_trips_through_the_records() -> None:
    spec = hvm_spec(uuid=None, description="")
    record = vm_record_from_spec(spec, Losses())
    disks = list(spec.disks)
    vbds = []
    vdis = {}
    for i, (disk, number) in enumerate(zip(disks, userdevices(disks, Losses()), strict=True)):
        ref = None if disk.cdrom else f"OpaqueRef:vdi{i}"
        vbds.append(vbd_record(disk, REF, ref, userdevice=number, bootable=i == 0))
        if ref:
            vdis[ref] = vdi_record(disk, "OpaqueRef:sr", name="x", virtual_size=disk.virtual_size)
    nets = {"OpaqueRef:n0": {"bridge": "xenbr0"}, "OpaqueRef:n1": {"bridge": "xenbr1"}}
    vifs = [
        vif_record(nic, REF, f"OpaqueRef:n{i}", device=i, mtu=1500)
        for i, nic in enumerate(spec.nics)
    ]
    back = spec_from_vm_record(record, vbds, vdis, vifs, nets, Losses())
    assert back.memory_mib == spec.memory_mib and back.maxmem_mib == spec.maxmem_mib
    assert (back.vcpus, back.maxvcpus) == (spec.vcpus, spec.maxvcpus)
    assert (back.cpu_weight, back.cap) == (spec.cpu_weight, spec.cap)
    assert (back.firmware, back.boot_order) == (spec.firmware, spec.boot_order)
    assert back.platform == spec.platform
    assert (back.on_poweroff, back.on_reboot, back.on_crash) == (
        "destroy",
        "restart",
        "coredump-restart",
    )
    assert [d.vdev for d in back.disks] == ["xvda", "xvdb", "hdc"]
    assert [d.readonly for d in back.disks] == [False, True, True]
    assert back.disks[2].path == ""  # the ISO stays behind: an empty drive
    assert [n.mac for n in back.nics] == ["00:16:3e:01:02:03", None]
    assert [(n.bridge, n.mtu) for n in back.nics] == [("xenbr0", None), ("xenbr1", 9000)]


def test_xl_text_is_read_back_by_xenkits_parser() -> None:
    spec = spec_from_vm_record(xcp_vm_record(), VBDS, VDIS, VIFS, NETWORKS, Losses())
    disks = [
        DiskRef(
            vdev=d.vdev,
            path=f"/srv/vm, one/{d.vdev}.img" if d.path else "",
            cdrom=d.cdrom,
            readonly=d.readonly,
            format="qcow2" if d.vdev == "sdb" else "raw",
        )
        for d in spec.disks
    ]
    spec = VmSpec(**{**spec.__dict__, "disks": tuple(disks), "description": "two\nlines"})
    losses = Losses()
    text = xl_text(spec, losses=losses)
    assert text.startswith("# two\n# lines\n")
    cfg = parse_config(text)
    assert cfg.name == "debian-12" and cfg.type == "hvm" and cfg.uuid == spec.uuid
    assert (cfg.memory, cfg.maxmem, cfg.vcpus, cfg.maxvcpus) == (2048, 4096, 2, 4)
    assert (cfg.cpu_weight, cfg.cap, cfg.firmware, cfg.boot) == (256, None, "uefi", "cdn")
    assert (cfg.acpi, cfg.apic, cfg.nx, cfg.viridian, cfg.videoram) == (True, True, True, False, 8)
    assert cfg.rtc_timeoffset == 0
    west = VmSpec(name="w", guest_type="hvm", platform={"timeoffset": "-3600", "tsc_mode": "2"})
    cfg_west = parse_config(xl_text(west))
    assert (cfg_west.rtc_timeoffset, cfg_west.tsc_mode) == (-3600, "native")
    assert cfg.on_crash == "rename-restart"
    assert cfg.unknown == {}
    assert [(d.vdev, d.target, d.format.value, d.access, d.is_cdrom) for d in cfg.disk] == [
        ("hda", "/srv/vm, one/hda.img", "raw", "rw", False),
        ("hdd", None, "empty", "ro", True),
        ("sdb", "/srv/vm, one/sdb.img", "qcow2", "ro", False),
    ]
    assert [(v.mac_address, v.bridge, v.model, v.mtu) for v in cfg.vif] == [
        ("02:ab:00:00:00:01", "xenbr0", "e1000", 0),
        ("02:ab:00:00:00:02", "xapi1", "e1000", 9000),
    ]
    assert "cpus" in text and cfg.cpus == "0-3"
    assert keys(losses) == ["platform:cores-per-socket"]


def test_xl_text_for_pv_and_odd_extras() -> None:
    spec = VmSpec(
        name='it\'s "pv"',
        bootloader="pygrub",
        bootloader_args="-q --entry=0",
        cmdline="console=hvc0",
        extra={"cpus": "0-3", "Bad": "1", "memory": "5", "vnc": "1", "pvshim": "1"},
        platform={"acpi": "1"},
    )
    losses = Losses()
    cfg = parse_config(xl_text(spec, losses=losses))
    assert cfg.name == 'it\'s "pv"' and cfg.type == "pv"
    assert (cfg.bootloader, cfg.bootloader_args, cfg.cmdline) == (
        "pygrub",
        ("-q", "--entry=0"),
        "console=hvc0",
    )
    assert (cfg.cpus, cfg.vnc, cfg.pvshim, cfg.memory) == ("0-3", True, True, 128)
    assert keys(losses) == ["Bad", "memory"]


# -- upload bodies ------------------------------------------------------------------


def body_bytes(body: RawBody | VhdBody) -> bytes:
    seen: list[tuple[int, int]] = []
    data = b"".join(bytes(c) for c in body.chunks(lambda d, t: seen.append((d, t))))
    assert seen[-1][0] == seen[-1][1] == body.reader.virtual_size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    return data


@pytest.mark.parametrize("size", [6 * MiB + 512, 4 * MiB, 1536])
def test_vhd_body_is_a_vhd_qemu_reads(tmp_path: Path, size: int) -> None:
    raw = disk_image(size, seed=size)
    body = VhdBody(MemReader(raw))
    vhd = body_bytes(body)
    assert len(vhd) == body.length
    assert vhd_to_raw(vhd) == raw
    (tmp_path / "d.vhd").write_bytes(vhd)
    subprocess.run(
        [
            qemu_img(),
            "convert",
            "-f",
            "vpc",
            "-O",
            "raw",
            str(tmp_path / "d.vhd"),
            str(tmp_path / "d.raw"),
        ],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "d.raw").read_bytes() == raw
    info = subprocess.run(
        [qemu_img(), "info", "--output=json", str(tmp_path / "d.vhd")],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(info.stdout)["format"] == "vpc"
    assert json.loads(info.stdout)["virtual-size"] == size


def test_vhd_body_sends_only_blocks_with_data() -> None:
    raw = bytearray(64 * MiB)
    raw[5 * MiB : 5 * MiB + 10] = b"x" * 10
    body = VhdBody(MemReader(bytes(raw)))
    assert body.length == 512 + 1024 + 512 + (512 + 2 * MiB) + 512
    assert vhd_to_raw(body_bytes(body)) == raw


def test_raw_body_is_the_disk() -> None:
    raw = disk_image(3 * MiB + 4096, seed=7)
    body = RawBody(MemReader(raw))
    assert body.length == len(raw) and body_bytes(body) == raw
    assert not vhd_possible(1000) and not vhd_possible(0) and vhd_possible(512)
