"""OVF envelopes: every corpus sample read, the writer's choices, round trips."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import shared_dir
from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, Losses, NicRef, StrictLoss, VmSpec
from xenkit.motion.ovf import (
    OvfFile,
    OvfFileRef,
    OvfVersion,
    envelope_xml,
    parse_envelope,
    plan_slots,
)
from xenkit.motion.ovf.envelope import Slot
from xenkit.motion.ovf.vocab import VMDK_STREAM_URI, format_from_uri, unit_multiplier

SAMPLES = shared_dir() / "corpus" / "ovf" / "samples"
GiB = 1 << 30
MiB = 1 << 20
KiB = 1 << 10

# Every sample, and what reading it must do: None parses, a string is the
# reason it is refused (a substring of the error).
EXPECTED: dict[str, str | None] = {
    "govmomi__Zimbra_606_Ubuntu_8041_i386_OVF10.ovf": None,
    "govmomi__complete_vsc.ovf": None,
    "govmomi__neg_dup_instanceid.ovf": None,
    "govmomi__nvdimm.ovf": None,
    "govmomi__sunVHW-DiskTypes_invalidUTF.ovf": None,
    "govmomi__unsupportedSection.ovf": "required section UnsupportedSectionFoo is not understood",
    "govmomi__vCD_vApp_OVF.ovf": None,
    "govmomi__valid_multiple_vhtypes_ovf10.ovf": None,
    "govmomi__vbox10_four_different_network_adapters.ovf": None,
    "govmomi__vbox5_all_storage_controllers.ovf": None,
    "govmomi__virtualsystemcollection.ovf": None,
    "govmomi__xp-multinic.ovf": None,
    "openxt__uivm.ovf": None,
    "virt-manager__test2.ovf": None,
    "virt-manager__test_gzip.ovf": None,
    "virt-v2v__test-i-ova-formats.ovf": None,
    "virt-v2v__test-i-ova-gz.ovf": None,
    "virt-v2v__test-i-ova-two-disks.ovf": None,
    "virt-v2v__test-i-ova.ovf": None,
    "xencenter__sample_app.ovf": None,
}


def read(name: str, system: str | None = None) -> tuple[VmSpec, list[OvfFileRef], Losses]:
    losses = Losses()
    data = (SAMPLES / name).read_bytes()
    spec, files = parse_envelope(data, losses=losses, source=name, system=system)
    return spec, files, losses


def keys(losses: Losses) -> list[str]:
    return [loss.key for loss in losses]


def test_the_table_covers_exactly_the_corpus() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.ovf")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_parses_or_is_refused_with_its_reason(name: str) -> None:
    reason = EXPECTED[name]
    if reason is None:
        spec, _, _ = read(name)
        assert spec.name
        assert spec.memory_mib > 0 and spec.vcpus > 0
        assert len({d.vdev for d in spec.disks}) == len(spec.disks)
    else:
        with pytest.raises(UsageError, match=reason) as e:
            read(name)
        assert e.value.hint


def test_virtualbox_storage_controllers() -> None:
    spec, files, losses = read("govmomi__vbox5_all_storage_controllers.ovf")
    assert (spec.name, spec.guest_type, spec.memory_mib, spec.vcpus) == ("vbox5", "hvm", 384, 1)
    assert spec.disks == (
        DiskRef(vdev="hda", path="vbox5.vmdk", format="vmdk", virtual_size=4 * MiB, label="disk1"),
        DiskRef(vdev="sda", path="vbox2.vmdk", format="vmdk", virtual_size=10 * GiB, label="disk2"),
    )
    assert spec.nics == (NicRef(model="pcnet"),)
    assert [f.href for f in files] == ["vbox5.vmdk", "vbox2.vmdk"]
    text = [str(x) for x in losses]
    assert any("ResourceType 14" in k for k in keys(losses))  # floppies
    assert any("ResourceType 35" in t and "sound" in t for t in text)
    assert any("ResourceType 23" in t for t in text)
    assert any("AHCI controller" in t for t in text)
    assert any("'NAT', not a Xen bridge" in t for t in text)


def test_virtualbox_network_adapters() -> None:
    spec, files, _ = read("govmomi__vbox10_four_different_network_adapters.ovf")
    assert spec.name == "vbox10" and spec.memory_mib == 192
    assert [n.model for n in spec.nics] == ["pcnet", "pcnet", "e1000", "e1000"]
    assert spec.disks == () and files == []


def test_vmware_multinic() -> None:
    spec, _, losses = read("govmomi__xp-multinic.ovf")
    assert (spec.name, spec.guest_type, spec.memory_mib, spec.vcpus) == (
        "xp-multinic",
        "hvm",
        512,
        2,
    )
    assert [(d.vdev, d.path, d.virtual_size, d.cdrom) for d in spec.disks] == [
        ("sda", "xp-multinic-disk1.vmdk", 1536 * MiB, False),
        ("sdb", "xp-multinic-disk2.vmdk", 2 * GiB, False),
        ("hda", "", 0, True),
    ]
    assert all(d.format == "vmdk" for d in spec.disks if not d.cdrom)
    assert spec.nics == (NicRef(model="pcnet"), NicRef(model="pcnet"))
    assert "Item[InstanceID=10] ResourceType 14" in keys(losses)


def test_vmware_uefi_and_gzip() -> None:
    spec, _, losses = read("virt-v2v__test-i-ova-formats.ovf")
    assert spec.firmware == "uefi" and spec.memory_mib == 1024
    assert [(d.vdev, d.virtual_size) for d in spec.disks] == [("hdc", 0), ("sda", 50 * GiB)]
    vmw = next(x for x in losses if x.key == "vmw:Config")
    assert "cpuHotAddEnabled=false" in vmw.message
    _, files, _ = read("virt-v2v__test-i-ova-gz.ovf")
    assert [(f.href, f.compression, f.format) for f in files] == [("disk1.vmdk.gz", "gzip", "vmdk")]


def test_xencenter_sample() -> None:
    spec, files, losses = read("xencenter__sample_app.ovf")
    assert spec.name == "Web server"
    assert spec.guest_type == "pv"
    assert spec.uuid == "3b0aab30-0241-487f-b40b-2c79607011b3"
    assert (spec.memory_mib, spec.vcpus, spec.maxvcpus) == (64, 1, None)
    assert spec.bootloader == "pygrub"
    assert spec.platform == {
        "nx": "false",
        "pae": "true",
        "acpi": "true",
        "viridian": "true",
        "apic": "true",
    }
    assert spec.disks == (
        DiskRef(
            vdev="xvda",
            path="5936bc8c-20ae-4052-9083-b8e5b96dc683.vhd",
            format="vhd",
            virtual_size=10 * MiB,
            bootable=True,
            label="Hard Disk Image",
        ),
    )
    assert [f.size for f in files] == [16 * MiB]
    assert {"StartupSection", "EulaSection"} <= set(keys(losses))


def test_openxt_appliance() -> None:
    spec, files, losses = read("openxt__uivm.ovf")
    assert (spec.name, spec.guest_type, spec.memory_mib) == ("uivm-new", "pv", 256)
    assert spec.cmdline == "root=/dev/hda xencons=xvc0" and spec.bootloader == "pygrub"
    assert [(d.vdev, d.path, d.format, d.virtual_size) for d in spec.disks] == [
        ("xvda", "uivm.vhd", "vhd", 0),
        ("xvdb", "", "vhd", 256 * MiB),
        ("xvdc", "uivm-gconf.vhd", "vhd", 0),
    ]
    assert len(files) == 2
    assert "File[id=uivm-gconf-key]" in keys(losses)


def test_a_collection_gives_its_first_system_or_the_one_asked_for() -> None:
    spec, _, losses = read("govmomi__sunVHW-DiskTypes_invalidUTF.ovf")
    assert spec.name == "sunvhw-sas"
    first = next(x for x in losses if x.key.startswith("VirtualSystemCollection"))
    assert "only 'sunvhw-sas' is read, not 'sunvhw-pv'" in first.message
    other, files, _ = read("govmomi__sunVHW-DiskTypes_invalidUTF.ovf", system="sunvhw-pv")
    assert other.name == "sunvhw-pv"
    assert [f.href for f in files] == [
        "sunVHW-DiskTypes-disk3.vmdk",
        "sunVHW-DiskTypes-disk4.vmdk",
    ]
    with pytest.raises(UsageError, match="no VirtualSystem 'nope'"):
        read("govmomi__sunVHW-DiskTypes_invalidUTF.ovf", system="nope")


def test_deployment_options_and_a_shared_image() -> None:
    spec, files, losses = read("govmomi__complete_vsc.ovf")
    assert spec.name == "Test System 1" and spec.description == "Annotation on VM"
    assert [d.path for d in spec.disks if not d.cdrom] == ["nostalgia-disk1.vmdk"] * 2
    assert [f.vdevs for f in files] == [("sda", "sdb")]
    assert (
        "'medium' is used" in next(x for x in losses if x.key == "DeploymentOptionSection").message
    )


def _envelope(items: str, extra: str = "") -> bytes:
    return f"""<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References/>
  <VirtualSystem ovf:id="vm1">
    <Info>x</Info>
    <VirtualHardwareSection>
      <Info>x</Info>
      <System><vssd:ElementName>x</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType></System>
      <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits>
        <rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>3</rasd:VirtualQuantity></Item>
      {items}
    </VirtualHardwareSection>
    {extra}
  </VirtualSystem>
</Envelope>""".encode()


def test_unknown_resource_type_is_reported_with_element_and_number() -> None:
    xml = _envelope(
        "<Item><rasd:ElementName>gizmo</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID>"
        "<rasd:ResourceType>99</rasd:ResourceType></Item>"
    )
    losses = Losses()
    spec, _ = parse_envelope(xml, losses=losses)
    assert (spec.vcpus, spec.memory_mib) == (2, 3 * 1024)
    loss = next(x for x in losses if "99" in x.key)
    assert loss.key == "Item[InstanceID=7] ResourceType 99"
    assert "unknown ResourceType 99" in loss.message and "gizmo" in loss.message
    with pytest.raises(StrictLoss, match="ResourceType 99"):
        parse_envelope(xml, losses=Losses(strict=True))


def test_vbox_machine_is_ignored_with_a_note() -> None:
    xml = _envelope("", '<vbox:Machine ovf:required="false" uuid="{x}"><x/></vbox:Machine>')
    losses = Losses()
    parse_envelope(xml, losses=losses)
    assert "vbox:Machine" in keys(losses)


def test_bad_xml_and_non_envelopes_are_refused() -> None:
    with pytest.raises(UsageError, match="not well-formed XML"):
        parse_envelope(b"<Envelope><oops></Envelope>", losses=Losses())
    with pytest.raises(UsageError, match="not an OVF envelope"):
        parse_envelope(b"<value><struct/></value>", losses=Losses())


@pytest.mark.parametrize(
    ("units", "multiplier"),
    [
        ("byte", 1),
        ("bytes", 1),
        ("byte * 2^20", MiB),
        ("byte*2^30", GiB),
        ("MegaBytes", MiB),
        ("byte * 10^3", 1000),
        ("hertz * 10^6", None),
        ("byte * 3^2", None),
    ],
)
def test_allocation_units(units: str, multiplier: int | None) -> None:
    assert unit_multiplier(units) == multiplier


@pytest.mark.parametrize(
    ("uri", "href", "fmt", "exact"),
    [
        (VMDK_STREAM_URI, "a", "vmdk", True),
        ("http://www.vmware.com/specifications/vmdk.html#sparse", "a", "vmdk", True),
        ("http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx", "a", "vhd", True),
        ("vhd", "a", "vhd", True),
        ("http://www.gnome.org/~markmc/qcow-image-format.html", "a", "qcow2", True),
        ("http://example.com/what", "disk.qcow2", "qcow2", False),
        ("", "disk.img", "raw", False),
        ("", "disk.vmdk.gz", "vmdk", False),
    ],
)
def test_format_uris(uri: str, href: str, fmt: str, exact: bool) -> None:
    guess = format_from_uri(uri, href)
    assert guess is not None and (guess.format, guess.exact) == (fmt, exact)
    assert format_from_uri("http://example.com/what", "disk") is None


def test_slots_ide_first_then_scsi() -> None:
    disks = [DiskRef(vdev=v, path="") for v in ("xvda", "hdb", "hdc", "sda", "xvde", "xvdd", "hda")]
    assert plan_slots(disks) == [
        Slot("ide", 0, 0),
        Slot("ide", 0, 1),
        Slot("ide", 1, 0),
        Slot("scsi", 0, 0),
        Slot("scsi", 0, 1),
        Slot("ide", 1, 1),
        Slot("scsi", 0, 2),  # hda clashes with xvda
    ]
    many = [DiskRef(vdev=f"sd{chr(97 + i)}", path="") for i in range(16)]
    units = [(s.controller, s.unit) for s in plan_slots(many)]
    assert (0, 7) not in units and units[6:8] == [(0, 6), (0, 8)] and units[15] == (1, 0)


def pv_spec() -> VmSpec:
    return VmSpec(
        name="pv-guest",
        guest_type="pv",
        uuid="0f6c0ab6-2a49-4bd6-9d1e-1c2ab1f3a1a0",
        description="a PV guest",
        memory_mib=512,
        maxmem_mib=1024,
        vcpus=2,
        maxvcpus=4,
        bootloader="pygrub",
        bootloader_args="--entry=1",
        cmdline="console=hvc0",
        platform={"nx": "true"},
        on_crash="restart",
        cpu_weight=512,
        cap=50,
        disks=(
            DiskRef(
                vdev="xvda", path="/srv/a.img", virtual_size=256 * KiB, bootable=True, label="root"
            ),
            DiskRef(vdev="xvdb", path="/srv/b.img", virtual_size=128 * KiB),
        ),
        nics=(NicRef(mac="00:16:3e:12:34:56", bridge="xenbr0"), NicRef(bridge="xenbr1")),
        extra={"vendor_device": "xenserver"},
    )


def pvh_spec() -> VmSpec:
    return VmSpec(
        name="pvh-guest",
        guest_type="pvh",
        memory_mib=256,
        kernel="/var/lib/xen/vmlinuz",
        ramdisk="/var/lib/xen/initrd",
        cmdline="root=/dev/xvda1 console=hvc0",
        disks=(DiskRef(vdev="xvda", path="/srv/pvh.img", virtual_size=8 * MiB),),
        nics=(NicRef(bridge="xenbr0"),),
    )


def hvm_spec() -> VmSpec:
    return VmSpec(
        name="hvm-guest",
        guest_type="hvm",
        memory_mib=2048,
        vcpus=4,
        firmware="uefi",
        boot_order="dc",
        platform={"viridian": "true", "acpi": "1"},
        on_poweroff="restart",
        on_crash="coredump-destroy",
        disks=(
            DiskRef(vdev="hda", path="/srv/win.img", virtual_size=16 * MiB, bootable=True),
            DiskRef(vdev="hdc", path="", cdrom=True),
            DiskRef(vdev="sda", path="/srv/data.img", virtual_size=MiB, label="data"),
            DiskRef(vdev="xvde", path="/srv/e.img", virtual_size=MiB),
        ),
        nics=(NicRef(mac="00:16:3e:00:00:01", bridge="xenbr0", model="e1000"), NicRef()),
    )


SPECS = {"pv": pv_spec, "pvh": pvh_spec, "hvm": hvm_spec}


def files_for(spec: VmSpec) -> list[OvfFile]:
    """Every non-CD disk as a streamOptimized VMDK."""
    return [
        OvfFile(
            vdev=d.vdev,
            href=f"{spec.name}-{d.vdev}.vmdk",
            size=1000 + i,
            capacity=d.virtual_size,
            format_uri=VMDK_STREAM_URI,
            populated_size=d.virtual_size // 2,
        )
        for i, d in enumerate(spec.disks)
        if not d.cdrom
    ]


def as_read_back(spec: VmSpec) -> VmSpec:
    """What an envelope of ``spec`` with :func:`files_for` reads back as."""
    disks = tuple(
        d if d.cdrom else replace(d, path=f"{spec.name}-{d.vdev}.vmdk", format="vmdk")
        for d in spec.disks
    )
    return replace(spec, disks=disks)


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_round_trip(kind: str, version: OvfVersion) -> None:
    spec = SPECS[kind]()
    write_losses = Losses()
    xml = envelope_xml(spec, files_for(spec), version=version, losses=write_losses)
    read_losses = Losses()
    back, files = parse_envelope(xml, losses=read_losses)
    assert back == as_read_back(spec)
    assert sorted(f.href for f in files) == sorted(f.href for f in files_for(spec))
    assert [x.key for x in read_losses] == ["OperatingSystemSection"]
    expected_write = {"OperatingSystemSection"} | (
        {"kernel", "ramdisk"} if kind == "pvh" else set()
    )
    assert {x.key for x in write_losses} == expected_write


def test_the_writer_is_deterministic() -> None:
    spec = hvm_spec()
    first = envelope_xml(spec, files_for(spec), losses=Losses())
    assert envelope_xml(spec, files_for(spec), losses=Losses()) == first


@pytest.mark.parametrize(
    ("kind", "system_type", "present", "absent"),
    [
        ("pv", "xen-3.0-unknown vmx-07", ["PV_bootloader", "PV_args"], ["HVM_boot_policy"]),
        ("pvh", "xen-3.0-unknown vmx-07", ["PV_kernel", "PV_ramdisk"], ["HVM_boot_policy"]),
        ("hvm", "hvm-3.0-unknown vmx-07", ["HVM_boot_policy", "HVM_boot_params"], ["PV_kernel"]),
    ],
)
def test_xen_settings_as_xencenter_writes_them(
    kind: str, system_type: str, present: list[str], absent: list[str]
) -> None:
    xml = envelope_xml(SPECS[kind](), [], losses=Losses()).decode()
    assert f"<vssd:VirtualSystemType>{system_type}</vssd:VirtualSystemType>" in xml
    assert 'Name="domain_type">' in xml and f"<xenovf:Value>{kind}</xenovf:Value>" in xml
    for name in present:
        assert f'Name="{name}"' in xml
    for name in absent:
        assert f'Name="{name}"' not in xml
    assert xml.count('ovf:required="false" Name=') == xml.count(
        "VirtualSystemOtherConfigurationData "
    )


def test_hvm_boot_params_and_vmware_firmware() -> None:
    xml = envelope_xml(hvm_spec(), [], losses=Losses()).decode()
    assert "<xenovf:Value>order=dc;firmware=uefi</xenovf:Value>" in xml
    assert 'vmw:key="firmware" vmw:value="efi"' in xml


def test_what_the_writer_cannot_carry_is_reported() -> None:
    spec = replace(
        hvm_spec(),
        kernel="/boot/vmlinuz",
        on_reboot="rename-restart",
        disks=(DiskRef(vdev="hda", path="/x", readonly=True, virtual_size=MiB),),
        nics=(NicRef(model="rtl8139", mtu=9000),),
        platform={"a;b": "1"},
    )
    losses = Losses()
    envelope_xml(spec, [], losses=losses)
    assert {"kernel", "on_reboot", "disk hda", "nic 0.model", "nic 0.mtu", "platform.a;b"} <= set(
        keys(losses)
    )


def test_text_xml_cannot_hold_is_replaced_and_reported() -> None:
    spec = replace(pv_spec(), description="bell\x07")
    losses = Losses()
    back, _ = parse_envelope(envelope_xml(spec, [], losses=losses), losses=Losses())
    assert back.description == "bell\ufffd"
    assert "description" in keys(losses)


def test_files_must_match_the_disks() -> None:
    spec = pv_spec()
    stray = OvfFile(vdev="xvdz", href="z.vmdk", size=1, capacity=1, format_uri=VMDK_STREAM_URI)
    with pytest.raises(UsageError, match="xvdz"):
        envelope_xml(spec, [stray], losses=Losses())


def test_xencenter_reads_cpu_limit_as_max_vcpus() -> None:
    xml = (SAMPLES / "xencenter__sample_app.ovf").read_bytes()
    xml = xml.replace(b"<rasd:Limit>100000</rasd:Limit>", b"<rasd:Limit>4</rasd:Limit>")
    spec, _ = parse_envelope(xml, losses=Losses())
    assert spec.maxvcpus == 4
