"""VM motion round trips through real packages, with the disks of a real guest.

A kit guest with two disks writes random data in the lab; its images and its xl.cfg
go through an XVA or an OVA and back to xl here (``xenkit motion``); the result boots
in the lab and the guest reads exactly what it wrote, and ``qemu-img compare`` agrees.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from xenkit.cli.main import main
from xenkit.config import parse_config
from xenkit.host.guestexec import guest_exec
from xenkit.host.host import Host
from xenkit.lab import LabImage, Machine, guest_config

pytestmark = pytest.mark.lab

LAB_DIR = "/root/motion"
WRITES = (
    "printf 'disk a, sector 0\\n' | dd of=/dev/xvda conv=notrunc 2>/dev/null; "
    "dd if=/dev/urandom of=/dev/xvda bs=1M count=5 seek=2 conv=fsync 2>/dev/null; "
    "dd if=/dev/urandom of=/dev/xvda bs=64k count=3 seek=700 conv=fsync 2>/dev/null; "
    "dd if=/dev/zero of=/dev/xvda bs=1M count=2 seek=30 conv=fsync 2>/dev/null; "
    "printf 'disk b\\n' | dd of=/dev/xvdb conv=notrunc 2>/dev/null; "
    "dd if=/dev/urandom of=/dev/xvdb bs=1M count=3 seek=17 conv=fsync 2>/dev/null; sync"
)
SUMS = (
    "echo 3 > /proc/sys/vm/drop_caches; md5sum < /dev/xvda; md5sum < /dev/xvdb; "
    "head -c 16 /dev/xvdb"
)


@pytest.fixture
def host(lab: Machine) -> Host:
    return Host.from_machine(lab)


def cli(*args: str) -> dict[str, object]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--json", *args])
    data: dict[str, object] = json.loads(buf.getvalue())
    assert rc == 0, data
    return data


def written_guest(host: Host, lab_image: LabImage) -> tuple[str, str]:
    """Boots the original guest, lets it write, and returns its config and what it reads."""
    host.run(
        f"mkdir -p {LAB_DIR} && qemu-img create -q -f qcow2 {LAB_DIR}/a.qcow2 48M && "
        f"qemu-img create -q -f raw {LAB_DIR}/b.img 24M",
        check=True,
    )
    disks = (
        f'disk = [ "format=qcow2,vdev=xvda,access=rw,backendtype=qdisk,target={LAB_DIR}/a.qcow2",'
        f' "format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target={LAB_DIR}/b.img" ]\n'
        'vif = [ "mac=00:16:3e:12:34:56,bridge=xenbr0" ]\n'
    )
    cfg = guest_config(lab_image.guest, "pv", "traveller", agent=True, memory_mib=160) + disks
    domid = host.xl.create(parse_config(cfg))
    guest_exec(host, domid, "true", wait=180).check()
    guest_exec(host, domid, WRITES, timeout=300).check()
    sums = guest_exec(host, domid, SUMS, timeout=120).check().text
    host.xl.destroy("traveller")
    return cfg, sums


def booted_sums(host: Host, cfg: str) -> str:
    domid = host.xl.create(parse_config(cfg))
    try:
        guest_exec(host, domid, "true", wait=180).check()
        return guest_exec(host, domid, SUMS, timeout=120).check().text
    finally:
        host.xl.destroy("traveller")


def same_content(a: Path, b: Path) -> None:
    done = subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False)
    assert done.returncode == 0, f"qemu-img compare {a} {b}: {done.returncode}"


@pytest.mark.parametrize("package", ["xva", "ova"])
def test_a_two_disk_guest_goes_through_a_package_and_back(
    host: Host, lab_image: LabImage, tmp_path: Path, package: str
) -> None:
    cfg, sums = written_guest(host, lab_image)
    local = tmp_path / "orig"
    local.mkdir()
    for name in ("a.qcow2", "b.img"):
        host.download(f"{LAB_DIR}/{name}", local / name)
    (local / "traveller.cfg").write_text(cfg.replace(LAB_DIR, str(local)))

    out = tmp_path / f"vm.{package}"
    back = tmp_path / "back"
    made = cli("motion", f"to-{package}", str(local / "traveller.cfg"), "--out", str(out))
    assert made["outputs"] == [str(out)]
    read = cli("motion", f"from-{package}", str(out), "--out", str(back), "--format", "qcow2")
    assert read["name"] == "traveller"
    same_content(local / "a.qcow2", back / "xvda.qcow2")
    same_content(local / "b.img", back / "xvdb.qcow2")

    converted = (back / "traveller.cfg").read_text()
    assert "00:16:3e:12:34:56" in converted and 'type = "pv"' in converted
    there = f"{LAB_DIR}/{package}"
    for name in ("xvda.qcow2", "xvdb.qcow2"):
        host.upload(back / name, f"{there}/{name}")
    assert booted_sums(host, converted.replace(str(back), there)) == sums
