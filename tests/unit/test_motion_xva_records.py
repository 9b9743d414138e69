"""ova.xml's records against xapi's datamodel (xenapi.json), and the VmSpec to
XenAPI mapping both ways: what lands where, what is reported lost."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_motion_xva import MemDisk, MiB, ova_of, read, spec_of, tar_of, write
from tests.unit.xva_independent import Typed, plain, typed
from xenkit.core.errors import UsageError
from xenkit.motion.model import DiskRef, GuestType, Losses, NicRef, VmSpec
from xenkit.motion.xva.datamodel import FIELDS
from xenkit.motion.xva.from_records import import_spec
from xenkit.motion.xva.ovaxml import OvaXml, XvaObject, parse, render


@pytest.fixture(scope="module")
def datamodel(corpus: Path) -> dict[str, dict[str, dict[str, Any]]]:
    classes = json.loads((corpus / "xapi" / "xenapi.json").read_text())
    return {c["name"]: {**c, "fields": {f["name"]: f for f in c["fields"]}} for c in classes}


def written_objects(guest_type: GuestType) -> list[dict[str, Typed]]:
    sizes = [2 * MiB, MiB + 512, 3 * MiB]
    data, _ = write(spec_of(guest_type, sizes), [MemDisk(bytes(s)) for s in sizes])
    root = typed(ET.fromstring(ova_of(data)))
    return [o.value for o in root.value["objects"].value]


def enum_values(model: dict[str, Any], cls: str, name: str) -> set[str]:
    enums = {e["name"]: e for e in model[cls]["enums"]}
    return {v["name"] for v in enums[name]["values"]}


def check_type(
    value: Typed, ty: str, model: dict[str, Any], cls: str, ids: dict[str, str], where: str
) -> None:
    """``value`` is what xapi's ``X_t_of_rpc`` takes for a field of type ``ty``."""
    m = re.fullmatch(r"\((.+) -> (.+)\) map", ty)
    if m is not None:
        assert value.kind == "struct", where
        for k, v in value.value.items():
            check_type(Typed("string", k), m.group(1), model, cls, ids, f"{where} key")
            check_type(v, m.group(2), model, cls, ids, f"{where}:{k}")
        return
    if ty.endswith(" set"):
        assert value.kind == "array", where
        for item in value.value:
            check_type(item, ty[: -len(" set")], model, cls, ids, where)
        return
    if ty == "bool":
        assert value.kind == "boolean" and value.value in ("0", "1"), where
    elif ty == "float":
        assert value.kind == "double", where
        float(value.value)
    elif ty == "datetime":
        assert value.kind == "dateTime.iso8601", where
        assert re.fullmatch(r"\d{8}T\d\d:\d\d:\d\dZ", value.value), where
    elif ty == "int":
        assert value.kind == "string" and re.fullmatch(r"-?\d+", value.value), (where, value)
    elif ty == "string":
        assert value.kind == "string", where
    elif ty.startswith("enum "):
        assert value.kind == "string", where
        assert value.value in enum_values(model, cls, ty[len("enum ") :]), (where, value)
    elif ty.endswith(" ref"):
        assert value.kind == "string", where
        target = ty[: -len(" ref")]
        if value.value != "OpaqueRef:NULL":
            assert ids.get(value.value) == target, f"{where}: {value.value} is not a {target}"
    else:  # pragma: no cover
        raise AssertionError(f"{where}: unknown type {ty}")


def has_default(f: dict[str, Any]) -> bool:
    """xapi's generated decoders default a field the datamodel gives a default,
    and every ``X ref set`` (ocaml/idl/ocaml_backend/gen_api.ml, get_default)."""
    return "default" in f or bool(re.fullmatch(r".+ ref set", f["type"]))


@pytest.mark.parametrize("guest_type", ["pv", "pvh", "hvm"])
def test_every_record_is_one_xapi_decodes(
    guest_type: GuestType, datamodel: dict[str, dict[str, Any]]
) -> None:
    objects = written_objects(guest_type)
    ids = {o["id"].value: o["class"].value for o in objects}
    assert all(re.fullmatch(r"Ref:\d{3}", i) for i in ids)
    assert sorted(set(ids.values())) == ["SR", "VBD", "VDI", "VIF", "VM", "network"]
    for o in objects:
        cls, record = o["class"].value, o["snapshot"]
        fields = datamodel[cls]["fields"]
        assert record.kind == "struct"
        for name, value in record.value.items():
            assert name in fields, f"{cls}.{name} is not in the datamodel"
            check_type(value, fields[name]["type"], datamodel, cls, ids, f"{cls}.{name}")
        missing = [n for n, f in fields.items() if not has_default(f) and n not in record.value]
        assert missing == [], f"{cls} lacks fields without a default: {missing}"


def test_the_field_table_is_the_datamodel(datamodel: dict[str, dict[str, Any]]) -> None:
    for cls, fields in FIELDS.items():
        assert [n for n, _ in fields] == list(datamodel[cls]["fields"]), cls
        for name, default in fields:
            f = datamodel[cls]["fields"][name]
            if default is None:
                assert f["type"].startswith("enum ") and "default" not in f, f"{cls}.{name}"


def test_cross_references_agree() -> None:
    objects = [{k: plain(v) for k, v in o.items()} for o in written_objects("hvm")]
    by_id = {o["id"]: o for o in objects}
    vm = next(o for o in objects if o["class"] == "VM")
    for vbd_id in vm["snapshot"]["VBDs"]:
        vbd = by_id[vbd_id]["snapshot"]
        assert vbd["VM"] == vm["id"]
        if vbd["type"] == "CD":
            assert vbd["VDI"] == "OpaqueRef:NULL" and vbd["empty"] == "1"
        else:
            vdi = by_id[vbd["VDI"]]["snapshot"]
            assert vdi["VBDs"] == [vbd_id]
            assert by_id[vdi["SR"]]["class"] == "SR"
            assert by_id[vdi["SR"]]["snapshot"]["content_type"] == "user"
    for vif_id in vm["snapshot"]["VIFs"]:
        vif = by_id[vif_id]["snapshot"]
        assert vif_id in by_id[vif["network"]]["snapshot"]["VIFs"]


def vm_record(data: bytes) -> dict[str, Any]:
    ova = parse(ova_of(data))
    return next(o.snapshot for o in ova.objects if o.cls == "VM")


def test_the_vm_record_carries_the_spec() -> None:
    spec = spec_of("hvm", [MiB])
    data, losses = write(spec, [MemDisk(bytes(MiB))])
    vm = vm_record(data)
    # ova.xml integers are untyped XML-RPC text, as xapi writes int64s.
    assert vm["memory_static_max"] == str(1024 * MiB)
    assert vm["memory_dynamic_max"] == vm["memory_dynamic_min"] == str(512 * MiB)
    assert vm["memory_static_min"] == str(512 * MiB)
    assert (vm["VCPUs_max"], vm["VCPUs_at_startup"]) == ("4", "2")
    assert vm["VCPUs_params"] == {"weight": "512", "cap": "50"}
    assert vm["domain_type"] == "hvm"
    assert vm["HVM_boot_policy"] == "BIOS order"
    assert vm["HVM_boot_params"] == {"order": "dc", "firmware": "bios"}
    assert vm["platform"]["nic_type"] == "e1000"
    assert vm["actions_after_crash"] == "coredump_and_restart"
    assert vm["other_config"]["xenkit-xl-firmware"] == "seabios"
    assert vm["other_config"]["xenkit-xl-max_grant_frames"] == "64"
    kinds = {x.key: x.kind for x in losses}
    assert kinds["firmware"] == "approximated"
    assert kinds["max_grant_frames"] == "approximated"
    assert kinds["disk hdd"] == "lost"


def test_pv_guests_are_warned_about() -> None:
    spec = spec_of("pv", [MiB])
    data, losses = write(spec, [MemDisk(bytes(MiB))])
    vm = vm_record(data)
    assert vm["domain_type"] == "pv" and vm["HVM_boot_policy"] == ""
    assert vm["PV_args"] == "root=/dev/xvda1 console=hvc0"
    # xapi boots PV kernels only from /var/lib/xcp/guest/; the xl path is kept.
    assert vm["PV_kernel"] == "/var/lib/xcp/guest/vmlinuz-6.1"
    assert vm["PV_ramdisk"] == "/var/lib/xcp/guest/initrd.img-6.1"
    assert vm["other_config"]["xenkit-xl-kernel"] == "/boot/vmlinuz-6.1"
    messages = {x.key: x.message for x in losses}
    assert "8.1" in messages["type"]
    assert "copy /boot/vmlinuz-6.1 to /var/lib/xcp/guest/vmlinuz-6.1" in messages["kernel"]
    assert "/var/lib/xcp/guest/" in messages["ramdisk"]


def test_pvh_is_not_warned_about_but_its_kernel_is() -> None:
    spec = spec_of("pvh", [MiB])
    data, losses = write(spec, [MemDisk(bytes(MiB))])
    assert vm_record(data)["PV_kernel"] == "/var/lib/xcp/guest/vmlinuz"
    messages = {x.key: x.message for x in losses}
    assert "type" not in messages
    assert "not in the XVA" in messages["kernel"]


def test_xl_actions_xenapi_lacks_are_kept_exactly() -> None:
    spec = dataclasses.replace(
        spec_of("pvh", [MiB]), on_poweroff="rename-restart", on_reboot="preserve"
    )
    data, losses = write(spec, [MemDisk(bytes(MiB))])
    vm = vm_record(data)
    assert (vm["actions_after_shutdown"], vm["actions_after_reboot"]) == ("restart", "destroy")
    assert {"on_poweroff", "on_reboot"} <= {x.key for x in losses}
    back, _, _ = read(data)
    assert (back.on_poweroff, back.on_reboot) == ("rename-restart", "preserve")


def test_uefi_guests_get_the_uefi_device_model() -> None:
    spec = dataclasses.replace(spec_of("hvm", [MiB]), firmware="uefi")
    data, losses = write(spec, [MemDisk(bytes(MiB))])
    vm = vm_record(data)
    assert vm["HVM_boot_params"]["firmware"] == "uefi"
    assert vm["platform"]["device-model"] == "qemu-upstream-uefi"
    assert "firmware" not in {x.key for x in losses}
    back, _, _ = read(data)
    assert back.firmware == "uefi" and "device-model" not in back.platform


@pytest.mark.parametrize(
    ("vdev", "userdevice"),
    [("xvda", "0"), ("xvdb", "1"), ("hda", "0"), ("hdc", "2"), ("sdb", "1"), ("xvdaa", "26")],
)
def test_userdevice_follows_the_vdev(vdev: str, userdevice: str) -> None:
    disk = DiskRef(vdev=vdev, path="/d.img")
    data, _ = write(VmSpec(name="x", disks=(disk,)), [MemDisk(bytes(4096))])
    ova = parse(ova_of(data))
    vbd = next(o.snapshot for o in ova.objects if o.cls == "VBD")
    assert vbd["userdevice"] == userdevice and vbd["device"] == vdev
    back, _, _ = read(data)
    assert back.disks[0].vdev == vdev


def test_two_names_for_one_slot_move_the_second_and_come_back() -> None:
    disks = (DiskRef(vdev="xvda", path="/a"), DiskRef(vdev="hda", path="/b"))
    data, losses = write(VmSpec(name="x", disks=disks), [MemDisk(bytes(512)), MemDisk(bytes(512))])
    assert {x.key: x.kind for x in losses}["disk hda"] == "approximated"
    ova = parse(ova_of(data))
    assert [o.snapshot["userdevice"] for o in ova.objects if o.cls == "VBD"] == ["0", "1"]
    back, _, _ = read(data)
    assert [d.vdev for d in back.disks] == ["xvda", "hda"]
    with pytest.raises(UsageError, match="'fd0' is not a xvdX"):
        write(VmSpec(name="x", disks=(DiskRef(vdev="fd0", path="/c"),)), [MemDisk(bytes(512))])


def test_nics_map_to_vifs_and_networks() -> None:
    nics = (
        NicRef(mac="00:16:3E:AA:BB:CC", bridge="xenbr0"),
        NicRef(),
        NicRef(bridge="xapi1", mtu=9000),
    )
    data, _ = write(VmSpec(name="n", nics=nics), [])
    ova = parse(ova_of(data))
    by_id = ova.by_id()
    vifs = [o.snapshot for o in ova.objects if o.cls == "VIF"]
    assert [(v["device"], v["MAC"], v["MTU"]) for v in vifs] == [
        ("0", "00:16:3e:aa:bb:cc", "1500"),
        ("1", "", "1500"),
        ("2", "", "9000"),
    ]
    bridges = [by_id[str(v["network"])].snapshot["bridge"] for v in vifs]
    assert bridges == ["xenbr0", "xenbr0", "xapi1"]
    assert len(ova.of_class("network")) == 2
    back, _, _ = read(data)
    assert back.nics == (
        NicRef(mac="00:16:3e:aa:bb:cc", bridge="xenbr0"),
        NicRef(bridge="xenbr0"),
        NicRef(bridge="xapi1", mtu=9000),
    )


def _edit_vm(data: bytes, **fields: Any) -> OvaXml:
    ova = parse(ova_of(data))
    objects = tuple(
        XvaObject(o.cls, o.id, {**o.snapshot, **fields}) if o.cls == "VM" else o
        for o in ova.objects
    )
    return parse(render(OvaXml(ova.version, objects)))


def test_what_xl_cannot_express_is_reported_by_field() -> None:
    data, _ = write(spec_of("hvm", [MiB]), [MemDisk(bytes(MiB))])
    ova = _edit_vm(
        data,
        memory_dynamic_min=256 * MiB,
        memory_static_min=128 * MiB,
        NVRAM={"EFI-variables": "AAAA"},
        VTPMs=["OpaqueRef:NULL"],
        VCPUs_params={"weight": "256", "mask": "0,1", "mystery": "1"},
        HVM_shadow_multiplier=2.0,
        bios_strings={"bios-vendor": "Xen"},
        other_config={"auto_poweron": "true", "mac_seed": "x"},
        has_vendor_device=True,
    )
    losses = Losses()
    spec = import_spec(ova, losses).spec
    keys = {x.key for x in losses}
    assert {
        "VM.memory_dynamic_min",
        "VM.NVRAM",
        "VM.VTPMs",
        "VM.VCPUs_params:mystery",
        "VM.HVM_shadow_multiplier",
        "VM.bios_strings",
        "VM.other_config:auto_poweron",
    } <= keys
    assert "VM.other_config:mac_seed" not in keys
    assert "VM.memory_static_min" not in keys  # a floor xl does not need
    assert spec.cpu_weight == 256
    # extra values are xl source text
    assert spec.extra["cpus"] == '"0,1"'
    assert spec.extra["vendor_device"] == '"xenserver"'
    assert spec.memory_mib == 512


@pytest.mark.parametrize(("device", "flag"), [("xenserver", True), ("none", False)])
def test_the_vendor_device_is_has_vendor_device(device: str, flag: bool) -> None:
    spec = dataclasses.replace(spec_of("hvm", [MiB]), extra={"vendor_device": device})
    data, _ = write(spec, [MemDisk(bytes(MiB))])
    assert vm_record(data)["has_vendor_device"] is flag
    back, _, _ = read(data)
    assert back.extra == {"vendor_device": device}


def test_domain_type_is_derived_for_old_records() -> None:
    data, _ = write(spec_of("pv", [MiB]), [MemDisk(bytes(MiB))])
    ova = parse(ova_of(data))
    objects = tuple(
        XvaObject(o.cls, o.id, {k: v for k, v in o.snapshot.items() if k != "domain_type"})
        for o in ova.objects
    )
    assert import_spec(OvaXml(ova.version, objects), Losses()).spec.guest_type == "pv"
    hvm = _edit_vm(data, domain_type="unspecified", HVM_boot_policy="BIOS order")
    assert import_spec(hvm, Losses()).spec.guest_type == "hvm"


def test_vdis_stream_in_xapis_string_order() -> None:
    """xapi's own ids are not padded: Ref:10 streams before Ref:9."""
    data, _ = write(spec_of("pv", [MiB, MiB]), [MemDisk(bytes(MiB)), MemDisk(bytes(MiB))])
    text = ova_of(data).decode().replace("Ref:002", "Ref:9").replace("Ref:004", "Ref:10")
    plan = import_spec(parse(text.encode()), Losses())
    assert [v.id for v in plan.vdis] == ["Ref:10", "Ref:9"]
    assert [plan.spec.disks[v.disk].vdev for v in plan.vdis if v.disk is not None] == [
        "xvdb",
        "xvda",
    ]


def test_a_vorteil_style_template_imports(corpus: Path) -> None:
    """A hand-made ova.xml from a XenServer 7.1 export, as vorteil fills it."""
    template = (corpus / "xva" / "vorteil__ova-template.xml.tmpl").read_text()
    size = 2 * MiB + 4096
    ova = template % ("tiny", "from vorteil", *(4 * [256 * MiB]), 1, 1, "", "", size)
    content = bytes(range(256)) * (size // 256)
    members = [("ova.xml", ova.encode())]
    for n, part in ((0, content[:MiB]), (1, content[MiB : 2 * MiB]), (2, content[2 * MiB :])):
        name = f"Ref:4/{n:08d}"
        members += [(name, part), (name + ".checksum", hashlib.sha1(part).hexdigest().encode())]
    spec, sinks, losses = read(tar_of(members, tarfile.GNU_FORMAT))
    assert (spec.name, spec.guest_type, spec.memory_mib, spec.vcpus) == ("tiny", "hvm", 256, 1)
    assert spec.boot_order == "dc"
    assert spec.platform["apic"] == "true"
    assert [d.vdev for d in spec.disks] == ["hda"] and spec.disks[0].bootable
    assert bytes(sinks["hda"].buf) == content
    assert "VM.bios_strings" in {x.key for x in losses}
