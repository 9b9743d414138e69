"""Command lines and configs the lab hands to QEMU, Xen, dom0 and xl."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenkit.core.errors import UsageError
from xenkit.lab import debs
from xenkit.lab.guest import guest_config
from xenkit.lab.image import GuestKit, LabImage
from xenkit.lab.machine import BootOptions, LabPaths, qemu_command
from xenkit.lab.paths import check_lab_name


def fake_image(root: Path) -> LabImage:
    kit = GuestKit(root / "guest/vmlinuz", root / "guest/initrd.img", "6.1.0-1-cloud-amd64")
    return LabImage(
        key="k" * 64,
        path=root,
        xen=root / "xen.elf",
        kernel=root / "vmlinuz",
        initrd=root / "stage1.cpio.gz",
        root_disk=root / "root.qcow2",
        host_key="ssh-ed25519 AAAA",
        kernel_version="6.1.0-1-amd64",
        xen_version="4.17",
        guest=kit,
        packages={},
        timings={},
    )


def test_qemu_command_has_the_recipe_and_the_lab_plumbing(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path / "labs" / "a")
    opts = BootOptions(scheduler="credit2", xenstored="xenstored")
    argv = qemu_command(fake_image(tmp_path), paths, opts, ssh_port=2222, ssh_key_blob="KEY")
    joined = " ".join(argv)
    assert argv[argv.index("-cpu") + 1] == "qemu64,+svm,+npt"
    assert argv[argv.index("-machine") + 1] == "q35"
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert "restrict=on" in joined
    assert f"logfile={paths.serial_log}" in joined
    assert f"unix:{paths.qmp},server=on,wait=off" in joined
    assert f"file={paths.overlay}," in joined
    append = argv[argv.index("-append") + 1]
    assert "sched=credit2" in append and "dom0_mem=1024M,max:1024M" in append
    modules = argv[argv.index("-initrd") + 1]
    kernel_part, initrd_part = modules.split(",")
    assert "xenkit.xenstored=xenstored" in kernel_part
    assert "xenkit.sshkey=KEY" in kernel_part
    assert initrd_part.endswith("stage1.cpio.gz")
    assert "-loadvm" not in argv
    with_snapshot = qemu_command(
        fake_image(tmp_path), paths, opts, ssh_port=1, ssh_key_blob="K", loadvm="base"
    )
    assert with_snapshot[-2:] == ["-loadvm", "base"]


def test_commas_are_refused_where_qemu_would_split() -> None:
    with pytest.raises(UsageError):
        BootOptions(dom0_args=("a=b,c",))


def test_commas_in_paths_are_refused(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "x,y")
    with pytest.raises(UsageError):
        qemu_command(image, LabPaths(tmp_path), BootOptions(), ssh_port=1, ssh_key_blob="K")


def test_dom0_memory_must_leave_room() -> None:
    with pytest.raises(UsageError):
        BootOptions(memory_mib=1024, dom0_memory_mib=1024)


@pytest.mark.parametrize("name", ["", "A", "-x", "a" * 33, "a/b", "a b"])
def test_bad_lab_names(name: str) -> None:
    with pytest.raises(UsageError):
        check_lab_name(name)


def test_guest_configs(tmp_path: Path) -> None:
    kit = fake_image(tmp_path).guest
    pv = guest_config(kit, "pv", "g1")
    assert 'type = "pv"' in pv and "console=hvc0" in pv and kit.dom0_kernel in pv
    hvm = guest_config(kit, "hvm", "g2", hold=True, bridge="xenbr0")
    assert "console=ttyS0" in hvm and "xenkit.hold" in hvm and "bridge=xenbr0" in hvm
    assert 'tsc_mode = "native"' in hvm and "tsc_mode" not in pv
    with pytest.raises(UsageError):
        guest_config(kit, "bogus", "g3")  # type: ignore[arg-type]


def test_apt_simulation_and_package_parsing() -> None:
    sim = (
        "Inst busybox (1:1.35.0-4+deb12u1+b1 Debian:12.15/oldstable [amd64])\n"
        "Inst seabios (1.16.2-1 Debian:12.15/oldstable [all])\n"
        "Conf seabios (1.16.2-1 Debian:12.15/oldstable [all])\n"
    )
    found = {m.group(1): m.group(2) for m in debs._INST.finditer(sim)}
    assert found == {"busybox": "1:1.35.0-4+deb12u1+b1", "seabios": "1.16.2-1"}
    assert debs.first_dependency("linux-image-6.1.0-57-amd64 (= 6.1.192-3)") == (
        "linux-image-6.1.0-57-amd64"
    )
    pkg = debs.DebPackage("busybox-static", "1:1.35.0-4", "amd64")
    assert pkg.filename == "busybox-static_1%3a1.35.0-4_amd64.deb"
    fields = debs._fields("Package: a\nDepends: b,\n c\nVersion: 1")
    assert fields == {"Package": "a", "Depends": "b,\nc", "Version": "1"}
