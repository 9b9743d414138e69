"""xl.cfg to VmSpec and back: what xl says survives, and what does not is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenkit.config import ConfigError, parse_config
from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, Losses, StrictLoss, VmSpec
from xenkit.motion.xl import spec_from_xl, xl_text

HVM = """
name = "win"
type = "hvm"
memory = 2048
maxmem = 4096
vcpus = 2
maxvcpus = 4
bios = "ovmf"
boot = "dc"
acpi = 1
apic = 0
viridian = 1
videoram = 16
stdvga = 1
rtc_timeoffset = 3600
on_crash = "preserve"
cpu_weight = 512
cap = 50
disk = [ "format=qcow2, vdev=hda, access=rw, target=win.qcow2",
         "vdev=hdc, devtype=cdrom, access=ro, target=/iso/install.iso" ]
vif = [ "mac=00:16:3e:01:02:03,bridge=xenbr1,model=e1000,type=ioemu", "bridge=xenbr0" ]
serial = "pty"
usbdevice = "tablet"
"""


def test_an_hvm_config_round_trips(tmp_path: Path) -> None:
    losses = Losses()
    spec = spec_from_xl(parse_config(HVM), base=tmp_path, losses=losses)
    assert (spec.name, spec.guest_type, spec.memory_mib, spec.maxmem_mib) == (
        "win",
        "hvm",
        2048,
        4096,
    )
    assert (spec.vcpus, spec.maxvcpus, spec.firmware, spec.boot_order) == (2, 4, "uefi", "dc")
    assert spec.platform == {
        "acpi": "true", "apic": "false", "viridian": "true", "videoram": "16",
        "vga": "std", "timeoffset": "3600",
    }  # fmt: skip
    hda, hdc = spec.disks
    assert hda.path == str(tmp_path / "win.qcow2") and hda.format == "qcow2" and hda.bootable
    assert hdc.cdrom and hdc.readonly and not hdc.bootable
    assert spec.nics[0].mac == "00:16:3e:01:02:03" and spec.nics[0].model == "e1000"
    assert spec.nics[1].mac is None and spec.nics[1].model is None
    assert spec.extra == {"serial": '"pty"', "usbdevice": '"tablet"'}
    again = spec_from_xl(parse_config(xl_text(spec)), base=tmp_path, losses=Losses())
    assert again == spec


def test_pv_direct_kernel_and_its_cmdline(tmp_path: Path) -> None:
    cfg = 'name="p"\nkernel="/k"\nramdisk="/r"\nroot="/dev/xvda1 ro"\nextra="console=hvc0"\n'
    spec = spec_from_xl(parse_config(cfg), base=tmp_path, losses=Losses())
    assert spec.guest_type == "pv" and spec.cmdline == "root=/dev/xvda1 ro console=hvc0"
    assert spec.memory_mib == 32 and spec.disks == ()
    assert spec_from_xl(parse_config(xl_text(spec)), base=tmp_path, losses=Losses()) == spec


def test_what_cannot_be_carried_is_named(tmp_path: Path) -> None:
    cfg = 'name="n"\ntype="hvm"\nbios="rombios"\nvif=["ip=192.0.2.9,script=vif-route"]\n'
    losses = Losses()
    spec_from_xl(parse_config(cfg), base=tmp_path, losses=losses)
    assert {x.key for x in losses} == {"vif[0].ip", "vif[0].script", "bios"}
    with pytest.raises(StrictLoss, match="--strict: "):
        spec_from_xl(parse_config(cfg), base=tmp_path, losses=Losses(strict=True))


def test_bad_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no name"):
        spec_from_xl(parse_config("memory=1\n"), base=tmp_path, losses=Losses())
    with pytest.raises(UsageError, match="qed cannot be moved"):
        cfg = 'name="q"\ndisk=["format=qed,vdev=xvda,target=/x"]\n'
        spec_from_xl(parse_config(cfg), base=tmp_path, losses=Losses())


def test_every_corpus_config_reads_or_is_refused_clearly(corpus: Path, tmp_path: Path) -> None:
    read = 0
    for path in sorted((corpus / "xl-cfg").rglob("*.cfg")):
        try:
            config = parse_config(path.read_text(errors="replace"), str(path))
        except ConfigError:
            continue
        try:
            spec = spec_from_xl(config, base=path.parent, losses=Losses())
        except UsageError as exc:
            assert exc.message, path
            continue
        again = spec_from_xl(parse_config(xl_text(spec)), base=path.parent, losses=Losses())
        assert again == spec, path
        read += 1
    assert read >= 40


def test_a_negative_rtc_timeoffset_is_written_quoted_and_read_back(tmp_path: Path) -> None:
    """xl's lexer has no minus sign, but libxlu keeps every value as a string and
    reads numbers from it with strtol: ``"-3600"`` is -3600."""
    cfg = 'name = "w"\ntype = "hvm"\nrtc_timeoffset = "-3600"\n'
    spec = spec_from_xl(parse_config(cfg), base=tmp_path, losses=Losses())
    assert spec.platform["timeoffset"] == "-3600"
    text = xl_text(spec)
    assert 'rtc_timeoffset = "-3600"' in text
    assert parse_config(text).rtc_timeoffset == -3600
    assert spec_from_xl(parse_config(text), base=tmp_path, losses=Losses()) == spec


def test_what_xl_cannot_say_is_reported_and_the_description_is_a_comment(tmp_path: Path) -> None:
    spec = VmSpec(
        name="d",
        guest_type="hvm",
        description="made in\na pool",
        platform={"secureboot": "true", "nested-virt": "1", "acpi": "maybe"},
        disks=(DiskRef(vdev="hdc", path="", cdrom=True), DiskRef(vdev="xvda", path="/a,")),
        extra={"vnc": "1", "name": '"other"'},
    )
    losses = Losses()
    text = xl_text(spec, comment="from a test", losses=losses)
    assert text.startswith("# from a test\n# made in\n# a pool\n")
    cfg = parse_config(text)
    assert cfg.nestedhvm is True and cfg.vnc is True and cfg.name == "d"
    assert [(d.vdev, d.format.value, d.target) for d in cfg.disk] == [
        ("hdc", "empty", None),
        ("xvda", "raw", "/a,"),
    ]
    assert [x.key for x in losses] == ["platform:acpi", "platform:secureboot", "name"]
