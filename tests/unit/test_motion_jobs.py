"""The motion commands end to end on small files: outputs whole or absent, errors named."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from xenkit.cli.main import main
from xenkit.motion.disk.qemu import Qcow2Reader
from xenkit.motion.jobs import Qcow2FromStream, _qcow2_member


def cli(*args: str) -> tuple[int, dict[str, object]]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--json", *args])
    return rc, json.loads(buf.getvalue())


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    """An HVM with a qcow2 (data, a hole, zeros written) and a raw disk."""
    a, b = tmp_path / "a.qcow2", tmp_path / "b.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(a), "16M"], check=True)
    subprocess.run(
        ["qemu-io", "-c", "write -P 0xab 0 1M", "-c", "write -z 4M 1M", "-c", "write -P 7 9M 64k",
         str(a)], check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    with b.open("wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(bytes(range(256)) * 4096)
    cfg = tmp_path / "vm.cfg"
    cfg.write_text(
        'name = "box"\ntype = "hvm"\nmemory = 512\nvcpus = 2\nboot = "c"\n'
        'disk = [ "format=qcow2,vdev=hda,target=a.qcow2", "format=raw,vdev=hdb,target=b.img" ]\n'
        'vif = [ "mac=00:16:3e:00:00:01,bridge=xenbr0,model=e1000" ]\nserial = "pty"\n'
    )
    return cfg


def compare(a: Path, b: Path) -> bool:
    return (
        subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0
    )


@pytest.mark.parametrize(("package", "fmt"), [("xva", "qcow2"), ("xva", "vhd"), ("ova", "raw"),
                                              ("ova", "vmdk")])  # fmt: skip
def test_a_vm_goes_through_a_package_and_back(
    vm: Path, tmp_path: Path, package: str, fmt: str
) -> None:
    out = tmp_path / f"box.{package}"
    rc, made = cli("motion", f"to-{package}", str(vm), "--out", str(out))
    assert rc == 0 and made["outputs"] == [str(out)], made
    rc, back = cli("motion", f"from-{package}", str(out), "--out", str(tmp_path / "back"),
                   "--format", fmt)  # fmt: skip
    assert rc == 0, back
    ext = {"raw": "img"}.get(fmt, fmt)
    assert compare(tmp_path / "a.qcow2", tmp_path / "back" / f"hda.{ext}")
    assert compare(tmp_path / "b.img", tmp_path / "back" / f"hdb.{ext}")
    cfg = (tmp_path / "back" / "box.cfg").read_text()
    for line in ('type = "hvm"', "memory = 512", "vcpus = 2", 'boot = "c"', "00:16:3e:00:00:01"):
        assert line in cfg, cfg
    assert not list((tmp_path / "back").glob("*.part"))


def test_an_xva_keeps_xl_settings_that_xenapi_lacks(vm: Path, tmp_path: Path) -> None:
    cli("motion", "to-xva", str(vm), "--out", str(tmp_path / "box.xva"))
    rc, _ = cli("motion", "from-xva", str(tmp_path / "box.xva"), "--out", str(tmp_path / "b"))
    assert rc == 0 and 'serial = "pty"' in (tmp_path / "b" / "box.cfg").read_text()


def test_strict_refuses_and_writes_nothing(vm: Path, tmp_path: Path) -> None:
    rc, data = cli("motion", "to-ova", str(vm), "--out", str(tmp_path / "x.ova"), "--strict")
    assert rc == 2 and data["error"]["message"].startswith("--strict: "), data  # type: ignore[index]
    assert not list(tmp_path.glob("x.ova*"))


def test_an_existing_output_is_never_overwritten(vm: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken.xva"
    taken.write_text("mine")
    rc, data = cli("motion", "to-xva", str(vm), "--out", str(taken))
    assert rc == 2 and "already exists" in data["error"]["message"]  # type: ignore[index]
    assert taken.read_text() == "mine"


def test_a_flipped_byte_in_an_xva_chunk_is_named(vm: Path, tmp_path: Path) -> None:
    xva = tmp_path / "box.xva"
    cli("motion", "to-xva", str(vm), "--out", str(xva))
    data = bytearray(xva.read_bytes())
    data[data.index(b"\xab" * 4096) + 5000] ^= 0x01
    xva.write_bytes(bytes(data))
    rc, answer = cli("motion", "from-xva", str(xva), "--out", str(tmp_path / "back"))
    message = answer["error"]["message"]  # type: ignore[index]
    assert rc == 2 and "Ref:" in message and "/00000000" in message, message
    assert list((tmp_path / "back").iterdir()) == []


def test_a_truncated_ova_is_refused_and_leaves_nothing(vm: Path, tmp_path: Path) -> None:
    ova = tmp_path / "box.ova"
    cli("motion", "to-ova", str(vm), "--out", str(ova))
    ova.write_bytes(ova.read_bytes()[: ova.stat().st_size // 2])
    rc, answer = cli("motion", "from-ova", str(ova), "--out", str(tmp_path / "back"))
    assert rc == 2 and "truncated" in answer["error"]["message"].lower(), answer  # type: ignore[index]
    assert list((tmp_path / "back").iterdir()) == []


def test_a_disk_larger_than_the_free_space_is_refused_first(
    vm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine's disks are large; the directory is made to look nearly full.
    monkeypatch.setattr("xenkit.motion.jobs.disk_free", lambda directory: 1 << 20)
    for package in ("xva", "ova"):
        out = tmp_path / f"box.{package}"
        rc, answer = cli("motion", f"to-{package}", str(vm), "--out", str(out))
        message = answer["error"]["message"]  # type: ignore[index]
        assert rc == 2 and "needs" in message and "1.0 MiB free" in message, answer
        assert not list(tmp_path.glob(f"box.{package}*"))


def test_convert_one_disk(vm: Path, tmp_path: Path) -> None:
    rc, data = cli("motion", "convert", str(tmp_path / "a.qcow2"), str(tmp_path / "a.vmdk"),
                   "--to", "vmdk")  # fmt: skip
    assert rc == 0 and data["verified"] is True, data
    assert compare(tmp_path / "a.qcow2", tmp_path / "a.vmdk")


@pytest.mark.parametrize("disk_format", ["vhd", "qcow2"])
def test_an_ova_with_vhd_or_qcow2_disks(vm: Path, tmp_path: Path, disk_format: str) -> None:
    out = tmp_path / "box.ova"
    rc, made = cli("motion", "to-ova", str(vm), "--out", str(out), "--disk-format", disk_format)
    assert rc == 0, made
    with tarfile.open(out) as t:
        names = t.getnames()
    assert names[2:] == [f"box-disk1.{disk_format}", f"box-disk2.{disk_format}"], names
    assert not list(tmp_path.glob(".*.tmp")), "no scratch file is left"
    rc, back = cli("motion", "from-ova", str(out), "--out", str(tmp_path / "back"))
    assert rc == 0, back
    assert compare(tmp_path / "a.qcow2", tmp_path / "back" / "hda.img")
    assert compare(tmp_path / "b.img", tmp_path / "back" / "hdb.img")


def test_a_qcow2_member_is_read_where_it_is(
    vm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "box.ova"
    rc, made = cli("motion", "to-ova", str(vm), "--out", str(out), "--disk-format", "qcow2")
    assert rc == 0, made

    def no_scratch(*args: object, **kwargs: object) -> tuple[int, str]:
        raise AssertionError("a scratch copy of the member was made")

    monkeypatch.setattr(tempfile, "mkstemp", no_scratch)
    rc, back = cli("motion", "from-ova", str(out), "--out", str(tmp_path / "back"))
    assert rc == 0, back
    assert compare(tmp_path / "a.qcow2", tmp_path / "back" / "hda.img")
    assert compare(tmp_path / "b.img", tmp_path / "back" / "hdb.img")


def test_a_qcow2_member_only_qemu_reads_goes_through_a_scratch_copy(
    vm: Path, tmp_path: Path
) -> None:
    zstd = tmp_path / "z.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd",
                    str(tmp_path / "a.qcow2"), str(zstd)], check=True)  # fmt: skip
    plain = tmp_path / "p.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(tmp_path / "a.qcow2"),
                    str(plain)], check=True)  # fmt: skip
    for image, kind in ((zstd, Qcow2FromStream), (plain, Qcow2Reader)):
        with image.open("rb") as f:
            reader = _qcow2_member(f, f"{image.name} in the package")
            try:
                assert isinstance(reader, kind)
                content = reader.read(0, reader.virtual_size)
            finally:
                reader.close()
        assert content[: 1 << 20] == b"\xab" * (1 << 20)
        assert content[(9 << 20) : (9 << 20) + 65536] == b"\x07" * 65536
        assert content.count(0) == len(content) - (1 << 20) - 65536
