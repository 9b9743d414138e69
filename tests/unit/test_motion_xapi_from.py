"""from-xapi against the fake pool: the xl.cfg xenkit's parser reads, disk images
identical to what the pool holds, the VM found by name or uuid, and no files
left when the export fails."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_xapi import NULL, FakePool, disk_image, file_writer, qemu_img
from xenkit.config import load_config
from xenkit.core.errors import UsageError
from xenkit.motion.xapi import Credentials, FromXapiResult, PoolTarget, XapiFailure, from_xapi

MiB = 1 << 20


@pytest.fixture
def pool() -> Iterator[FakePool]:
    p = FakePool().start()
    yield p
    p.stop()
    assert p.violations == []


def vm_ctor(name: str, **changes: Any) -> dict[str, Any]:
    """A VM as an XCP-ng template clone holds it (the constructor fields)."""
    record: dict[str, Any] = {
        "name_label": name,
        "name_description": "Debian 12 web server",
        "user_version": "1",
        "is_a_template": False,
        "affinity": NULL,
        "memory_static_max": str(2048 * MiB),
        "memory_dynamic_max": str(1024 * MiB),
        "memory_dynamic_min": str(1024 * MiB),
        "memory_static_min": str(512 * MiB),
        "VCPUs_params": {"weight": "256"},
        "VCPUs_max": "4",
        "VCPUs_at_startup": "2",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn", "firmware": "bios"},
        "platform": {
            "acpi": "1",
            "apic": "true",
            "pae": "true",
            "nx": "true",
            "viridian": "false",
            "timeoffset": "0",
            "videoram": "8",
            "device-model": "qemu-upstream-compat",
            "secureboot": "false",
        },
        "PCI_bus": "",
        "other_config": {"base_template_name": "Debian Bookworm 12", "xenkit-xl-cpus": '"0-1"'},
        "recommendations": "",
        "domain_type": "hvm",
    }
    record.update(changes)
    return record


IMAGES = [disk_image(5 * MiB, seed=11), disk_image(2 * MiB + 4096, seed=12)]


def add_vm(pool: FakePool, name: str = "web-01", sr: str | None = None, **changes: Any) -> str:
    vm = pool.make("VM", vm_ctor(name, **changes))
    for i, data in enumerate(IMAGES):
        vdi = pool.make(
            "VDI",
            {
                "name_label": f"{name} disk {i}",
                "SR": sr or pool.local_sr,
                "virtual_size": str(len(data)),
                "type": "user",
                "sharable": False,
                "read_only": False,
                "other_config": {},
            },
        )
        pool.data[vdi][:] = data
        pool.make("VBD", vbd(vm, vdi, userdevice=str(i), bootable=i == 0, mode="RW"))
    pool.make("VBD", vbd(vm, NULL, userdevice="3", type="CD", mode="RO", empty=True))
    for device, bridge in enumerate(("xenbr0", "xenbr1")):
        network = next(r for r, n in pool.objects["network"].items() if n["bridge"] == bridge)
        pool.make(
            "VIF",
            {
                "device": str(device),
                "network": network,
                "VM": vm,
                "MAC": f"02:00:00:00:00:0{device}",
                "MTU": "1500",
                "other_config": {},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            },
        )
    return vm


def vbd(vm: str, vdi: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "VM": vm,
        "VDI": vdi,
        "userdevice": "0",
        "bootable": False,
        "mode": "RW",
        "type": "Disk",
        "empty": False,
        "other_config": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    }
    record.update(fields)
    return record


def target(pool: FakePool) -> PoolTarget:
    return PoolTarget(pool.url, Credentials("root", "s3cret"), timeout=10)


def export(pool: FakePool, out: Path, vm: str = "web-01", **kw: Any) -> FromXapiResult:
    kw.setdefault("open_writer", file_writer)
    return from_xapi(vm, target(pool), out, **kw)


def test_writes_an_xl_config_and_the_disks(pool: FakePool, tmp_path: Path) -> None:
    add_vm(pool)
    progress: list[tuple[int, int]] = []
    result = export(pool, tmp_path / "out", progress=lambda d, t: progress.append((d, t)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "web-01-hda.img",
        "web-01-hdb.img",
        "web-01.cfg",
    ]
    assert result.config == tmp_path / "out" / "web-01.cfg"
    cfg = load_config(str(result.config))
    assert (cfg.name, cfg.type, cfg.memory, cfg.maxmem) == ("web-01", "hvm", 1024, 2048)
    assert (cfg.vcpus, cfg.maxvcpus, cfg.cpu_weight, cfg.boot) == (2, 4, 256, "cdn")
    assert (cfg.acpi, cfg.apic, cfg.pae, cfg.nx, cfg.viridian) == (True, True, True, True, False)
    assert cfg.uuid == result.spec.uuid and cfg.cpus == "0-1" and cfg.unknown == {}
    assert [(d.vdev, d.target, d.format.value, d.access, d.is_cdrom) for d in cfg.disk] == [
        ("hda", str(result.disks["hda"]), "raw", "rw", False),
        ("hdb", str(result.disks["hdb"]), "raw", "rw", False),
        ("hdd", None, "empty", "ro", True),
    ]
    assert [(v.mac_address, v.bridge) for v in cfg.vif] == [
        ("02:00:00:00:00:00", "xenbr0"),
        ("02:00:00:00:00:01", "xenbr1"),
    ]
    for path, data in zip(result.disks.values(), IMAGES, strict=True):
        assert path.read_bytes() == data
    gets = [e for e in pool.http if e.method == "GET"]
    assert [(e.host, e.status, e.query["format"]) for e in gets] == [
        ("master", 302, "raw"),
        ("host2", 200, "raw"),
    ] * 2
    assert all(e.query["task_id"].startswith("OpaqueRef:") for e in gets)
    assert progress[-1] == (sum(map(len, IMAGES)),) * 2
    assert result.losses.items == []
    assert pool.leftovers()["task"] == 0 and pool.leftovers()["session"] == 0


def test_vhd_images_are_the_pools_vhd(pool: FakePool, tmp_path: Path) -> None:
    add_vm(pool)
    result = export(pool, tmp_path, disk_format="vhd", open_writer=None)
    cfg = load_config(str(result.config))
    assert [d.format.value for d in cfg.disk] == ["vhd", "vhd", "empty"]
    for path, data in zip(result.disks.values(), IMAGES, strict=True):
        assert path.suffix == ".vhd"
        info = subprocess.run(
            [qemu_img(), "info", "--output=json", str(path)], check=True, capture_output=True
        )
        assert json.loads(info.stdout)["format"] == "vpc"
        raw = tmp_path / "check.raw"
        subprocess.run(
            [qemu_img(), "convert", "-f", "vpc", "-O", "raw", str(path), str(raw)], check=True
        )
        assert raw.read_bytes() == data


def test_found_by_uuid_and_ambiguous_or_unknown_names(pool: FakePool, tmp_path: Path) -> None:
    vm = add_vm(pool)
    uuid = pool.record("VM", vm)["uuid"]
    assert export(pool, tmp_path / "a", vm=uuid).spec.uuid == uuid
    other = pool.make("VM", vm_ctor("web-01"))
    with pytest.raises(UsageError, match="2 VMs are named 'web-01'") as e:
        export(pool, tmp_path / "b")
    assert uuid in e.value.message and pool.record("VM", other)["uuid"] in e.value.message
    with pytest.raises(UsageError, match="no VM 'nginx'"):
        export(pool, tmp_path / "c", vm="nginx")
    with pytest.raises(UsageError, match="no VM"):
        export(pool, tmp_path / "c", vm="00000000-0000-4000-8000-000000000000")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_running_vm_is_refused_unless_forced(pool: FakePool, tmp_path: Path) -> None:
    vm = add_vm(pool)
    pool.record("VM", vm)["power_state"] = "Running"
    with pytest.raises(UsageError, match="is running") as e:
        export(pool, tmp_path)
    assert "--force" in str(e.value.hint)
    assert list(tmp_path.iterdir()) == []
    result = export(pool, tmp_path, force=True)
    assert result.power_state == "Running"
    assert result.warnings == ["VM 'web-01' is running: the disk images are not consistent"]


def test_a_failed_export_leaves_no_files(pool: FakePool, tmp_path: Path) -> None:
    add_vm(pool)
    pool.export_fault = "cut"
    with pytest.raises(XapiFailure, match="VDI_IO_ERROR") as e:
        export(pool, tmp_path)
    assert "download hda" in e.value.message
    assert list(tmp_path.iterdir()) == []
    assert pool.leftovers()["task"] == 0 and pool.leftovers()["session"] == 0


def test_existing_files_are_not_overwritten(pool: FakePool, tmp_path: Path) -> None:
    add_vm(pool)
    (tmp_path / "web-01.cfg").write_text("name = 'mine'\n")
    with pytest.raises(UsageError, match="would overwrite"):
        export(pool, tmp_path)
    assert (tmp_path / "web-01.cfg").read_text() == "name = 'mine'\n"
    export(pool, tmp_path, overwrite=True)
    assert load_config(str(tmp_path / "web-01.cfg")).name == "web-01"


def test_raw_and_qcow2_need_a_writer(pool: FakePool, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no writer for qcow2"):
        export(pool, tmp_path, disk_format="qcow2", open_writer=None)
    assert pool.calls == []
