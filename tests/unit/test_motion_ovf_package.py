"""OVA packages: written then read back, the layout other tools expect, and
damaged packages refused with the file named."""

from __future__ import annotations

import gzip
import hashlib
import re
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.conftest import shared_dir
from tests.unit.test_motion_disk_images import qemu_img
from tests.unit.test_motion_ovf_envelope import as_read_back, hvm_spec, pv_spec
from tests.unit.test_motion_ovf_schema import assert_valid, load_schemas
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import Extent
from xenkit.motion.model import DiskFormat, DiskRef, Losses, StrictLoss, VmSpec
from xenkit.motion.ovf import ManifestMismatch, read_ova, read_ovf, tarfmt, write_ova
from xenkit.motion.ovf.manifest import Digest, parse_manifest

BLOCK = 4096
KiB = 1 << 10


class MemReader:
    """A disk image in memory; all-zero blocks are reported as zero extents."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def virtual_size(self) -> int:
        return len(self.data)

    def extents(self) -> Iterator[Extent]:
        for offset in range(0, len(self.data), BLOCK):
            chunk = self.data[offset : offset + BLOCK]
            yield Extent(offset, len(chunk), not any(chunk))

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class RawWriter:
    """The raw format: data at its offset, zeros by omission."""

    def __init__(self, out: BinaryIO, fmt: DiskFormat, size: int) -> None:
        self.out, self.size, self.end = out, size, 0

    def write(self, offset: int, data: bytes) -> None:
        assert offset >= self.end
        self.out.seek(offset)
        self.out.write(data)
        self.end = offset + len(data)

    def finish(self) -> int:
        return self.size


class PatchingWriter(RawWriter):
    """A format with a header it fills in last (like a VHD's BAT)."""

    def write(self, offset: int, data: bytes) -> None:
        super().write(offset + 512, data)

    def finish(self) -> int:
        self.out.seek(0)
        self.out.write(b"HDR!" + self.size.to_bytes(8, "big"))
        return self.size + 512


def image(seed: int, size: int) -> bytes:
    """Some data, some zero blocks, a zero tail."""
    data = bytearray(size)
    data[BLOCK : 2 * BLOCK] = bytes([seed]) * BLOCK
    data[3 * BLOCK + 7 : 3 * BLOCK + 100] = bytes(range(seed, seed + 93))
    return bytes(data)


def disks_of(spec: VmSpec) -> list[tuple[DiskRef, MemReader]]:
    return [
        (d, MemReader(image(i + 1, d.virtual_size)))
        for i, d in enumerate(spec.disks)
        if not d.cdrom
    ]


def member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None
    return f.read()


@pytest.fixture
def pv_ova(tmp_path: Path) -> Path:
    spec = pv_spec()
    out = tmp_path / "pv guest.ova"
    write_ova(spec, disks_of(spec), out, disk_format="raw", losses=Losses(), open_writer=RawWriter)
    return out


class Sink:
    """Keeps each image in memory, as a converter would write it out."""

    def __init__(self, read: int | None = None) -> None:
        self.images: dict[str, bytes | None] = {}
        self.read = read

    def __call__(self, disk: DiskRef, stream: BinaryIO | None) -> DiskRef:
        if stream is None:
            self.images[disk.vdev] = None
            return replace(disk, path=f"/out/{disk.vdev}.raw", format="raw")
        data = stream.read() if self.read is None else stream.read(self.read)
        self.images[disk.vdev] = data
        return DiskRef(vdev=disk.vdev, path=f"/out/{disk.vdev}.raw", format="raw")


def test_write_then_read(pv_ova: Path) -> None:
    spec = pv_spec()
    sink = Sink()
    losses = Losses()
    seen: list[tuple[int, int]] = []
    back = read_ova(pv_ova, sink_for=sink, losses=losses, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (384 * KiB, 384 * KiB)
    expected = as_read_back(spec)
    expected = replace(
        expected,
        disks=tuple(replace(d, path=f"/out/{d.vdev}.raw", format="raw") for d in expected.disks),
    )
    assert back == expected
    assert sink.images == {"xvda": image(1, 256 * KiB), "xvdb": image(2, 128 * KiB)}
    assert [x.key for x in losses] == ["OperatingSystemSection"]


def test_layout_is_ovf_mf_then_disks(pv_ova: Path) -> None:
    with tarfile.open(pv_ova) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == ["pv_guest.ovf", "pv_guest.mf", "pv_guest-disk1.img", "pv_guest-disk2.img"]
        assert all(m.isreg() for m in members)
        content = {m.name: member_bytes(tar, m.name) for m in members}
    raw = pv_ova.read_bytes()
    for m in members:
        assert raw[m.offset + 257 : m.offset + 265] == b"ustar\x0000"
    lines = content["pv_guest.mf"].decode().splitlines()
    assert len(lines) == 3
    names = ["pv_guest.ovf", "pv_guest-disk1.img", "pv_guest-disk2.img"]
    for line, name in zip(lines, names, strict=True):
        assert re.fullmatch(r"SHA256\(([^)]+)\)= ([0-9a-f]{64})", line)
        assert line == f"SHA256({name})= {hashlib.sha256(content[name]).hexdigest()}"
    assert content["pv_guest-disk1.img"] == image(1, 256 * KiB)
    ovf = content["pv_guest.ovf"].decode()
    assert (
        f'ovf:href="pv_guest-disk1.img" ovf:id="file1" ovf:size="{len(image(1, 256 * KiB))}"' in ovf
    )
    assert "http://en.wikipedia.org/wiki/Byte" in ovf
    assert len(raw) % tarfmt.RECORD == 0


def test_the_ovf_inside_validates(pv_ova: Path, tmp_path: Path) -> None:
    schemas = load_schemas()
    with tarfile.open(pv_ova) as tar:
        assert_valid(schemas["1.0"], member_bytes(tar, "pv_guest.ovf"))
    spec = pv_spec()
    out = tmp_path / "two.ova"
    write_ova(spec, disks_of(spec), out, version="2.0", losses=Losses(), open_writer=RawWriter)
    with tarfile.open(out) as tar:
        assert_valid(schemas["2.0"], member_bytes(tar, "two.ovf"))


def test_a_writer_that_goes_back_still_gets_the_right_digest(tmp_path: Path) -> None:
    spec = pv_spec()
    out = tmp_path / "p.ova"
    members = write_ova(
        spec, disks_of(spec), out, disk_format="vhd", losses=Losses(), open_writer=PatchingWriter
    )
    with tarfile.open(out) as tar:
        for m in members:
            data = member_bytes(tar, m.name)
            assert hashlib.sha256(data).hexdigest() == m.sha256 and len(data) == m.size
        disk = member_bytes(tar, "p-disk1.vhd")
    assert disk[:4] == b"HDR!" and disk[512:] == image(1, 256 * KiB)
    read_ova(out, sink_for=Sink(), losses=Losses())


def test_cd_images_go_in_raw_and_come_back_as_cds(tmp_path: Path) -> None:
    spec = hvm_spec()
    iso = b"CD001" + bytes(BLOCK * 2)
    cd = next(d for d in spec.disks if d.cdrom)
    out = tmp_path / "h.ova"
    write_ova(spec, [(cd, MemReader(iso))], out, losses=Losses(), open_writer=RawWriter)
    with tarfile.open(out) as tar:
        assert "h-cd2.iso" in tar.getnames()
    sink = Sink()
    back = read_ova(out, sink_for=sink, losses=Losses())
    cd_back = next(d for d in back.disks if d.cdrom)
    assert cd_back.vdev == "hdc" and cd_back.path == "/out/hdc.raw" and sink.images["hdc"] == iso
    blanks = [v for v, data in sink.images.items() if data is None]
    assert sorted(blanks) == ["hda", "sda", "xvde"]  # not packaged: blank disks of their size


def test_progress_reaches_the_total(tmp_path: Path) -> None:
    spec = pv_spec()
    seen: list[tuple[int, int]] = []
    write_ova(
        spec,
        disks_of(spec),
        tmp_path / "x.ova",
        losses=Losses(),
        progress=lambda done, total: seen.append((done, total)),
        open_writer=RawWriter,
    )
    total = 384 * KiB
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_strict_refuses_before_writing(tmp_path: Path) -> None:
    spec = replace(pv_spec(), kernel="/boot/vmlinuz")
    out = tmp_path / "s.ova"
    with pytest.raises(StrictLoss):
        write_ova(spec, disks_of(spec), out, losses=Losses(strict=True), open_writer=RawWriter)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_leaves_nothing(tmp_path: Path) -> None:
    class Broken(RawWriter):
        def write(self, offset: int, data: bytes) -> None:
            raise OSError("disk full")

    spec = pv_spec()
    with pytest.raises(OSError, match="disk full"):
        write_ova(spec, disks_of(spec), tmp_path / "b.ova", losses=Losses(), open_writer=Broken)
    assert list(tmp_path.iterdir()) == []


def _member(ova: Path, name: str) -> tarfile.TarInfo:
    with tarfile.open(ova) as tar:
        return tar.getmember(name)


def test_truncated_inside_a_disk(pv_ova: Path, tmp_path: Path) -> None:
    m = _member(pv_ova, "pv_guest-disk2.img")
    cut = tmp_path / "cut.ova"
    cut.write_bytes(pv_ova.read_bytes()[: m.offset_data + 100])
    with pytest.raises(UsageError, match=r"truncated OVA: member 'pv_guest-disk2.img'") as e:
        read_ova(cut, sink_for=Sink(), losses=Losses())
    assert f"ends {m.size - 100} bytes short" in e.value.message


def test_truncated_before_a_disk(pv_ova: Path, tmp_path: Path) -> None:
    m = _member(pv_ova, "pv_guest-disk2.img")
    cut = tmp_path / "cut.ova"
    cut.write_bytes(pv_ova.read_bytes()[: m.offset])
    with pytest.raises(UsageError, match=r"truncated OVA: 'pv_guest-disk2.img' is missing"):
        read_ova(cut, sink_for=Sink(), losses=Losses())


def test_truncated_to_almost_nothing(pv_ova: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.ova"
    cut.write_bytes(pv_ova.read_bytes()[:300])
    with pytest.raises(UsageError, match="truncated OVA: 300 bytes"):
        read_ova(cut, sink_for=Sink(), losses=Losses())


def test_not_a_tar(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ova"
    bad.write_bytes(b"<Envelope/>" * 100)
    with pytest.raises(UsageError, match="not a tar archive"):
        read_ova(bad, sink_for=Sink(), losses=Losses())


def _flip(ova: Path, out: Path, name: str, at: int) -> None:
    m = _member(ova, name)
    raw = bytearray(ova.read_bytes())
    raw[m.offset_data + at] ^= 0x20
    out.write_bytes(bytes(raw))


def test_manifest_mismatch_in_a_disk_names_the_file(pv_ova: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ova"
    _flip(pv_ova, bad, "pv_guest-disk2.img", BLOCK + 5)
    corrupt = bytearray(image(2, 128 * KiB))
    corrupt[BLOCK + 5] ^= 0x20
    # The sink reads only the start: the check covers the rest anyway.
    with pytest.raises(ManifestMismatch) as e:
        read_ova(bad, sink_for=Sink(read=10), losses=Losses())
    err = e.value
    assert err.name == "pv_guest-disk2.img" and err.algorithm == "SHA256"
    assert err.expected == hashlib.sha256(image(2, 128 * KiB)).hexdigest()
    assert err.actual == hashlib.sha256(corrupt).hexdigest()
    assert err.expected in err.message and err.actual in err.message and err.name in err.message


def test_manifest_mismatch_in_the_ovf(pv_ova: Path, tmp_path: Path) -> None:
    m = _member(pv_ova, "pv_guest.ovf")
    bad = tmp_path / "bad.ova"
    _flip(pv_ova, bad, "pv_guest.ovf", m.size - 2)  # the trailing blanks: still valid XML
    with pytest.raises(ManifestMismatch, match=r"pv_guest.ovf: SHA256 mismatch"):
        read_ova(bad, sink_for=Sink(), losses=Losses())


def _directory_ovf(tmp_path: Path, pv_ova: Path, manifest: str | None) -> Path:
    with tarfile.open(pv_ova) as tar:
        tar.extractall(tmp_path, filter="data")
    (tmp_path / "pv_guest.mf").unlink()
    if manifest is not None:
        (tmp_path / "pv_guest.mf").write_text(manifest)
    return tmp_path / "pv_guest.ovf"


def test_directory_ovf_with_an_ovftool_manifest(pv_ova: Path, tmp_path: Path) -> None:
    digest = hashlib.sha1(image(1, 256 * KiB)).hexdigest()
    ovf = _directory_ovf(tmp_path, pv_ova, f"SHA1 (pv_guest-disk1.img) = {digest}\ngarbage\n")
    losses = Losses()
    sink = Sink()
    back = read_ovf(ovf, sink_for=sink, losses=losses)
    assert [d.path for d in back.disks] == ["/out/xvda.raw", "/out/xvdb.raw"]
    assert sink.images == {"xvda": image(1, 256 * KiB), "xvdb": image(2, 128 * KiB)}
    lost = {x.key: x.message for x in losses}
    assert "not a digest line" in lost["pv_guest.mf line 2"]
    assert "not listed in the manifest" in lost["pv_guest.ovf"]
    assert "not listed in the manifest" in lost["pv_guest-disk2.img"]


def test_directory_ovf_without_manifest_and_a_missing_disk(pv_ova: Path, tmp_path: Path) -> None:
    ovf = _directory_ovf(tmp_path, pv_ova, None)
    (tmp_path / "pv_guest-disk2.img").unlink()
    losses = Losses()
    with pytest.raises(UsageError, match=r"names 'pv_guest-disk2\.img', which is not in"):
        read_ovf(ovf, sink_for=Sink(), losses=losses)
    assert "manifest" in [x.key for x in losses]


def test_gzipped_files_are_decompressed_and_digested_compressed(
    pv_ova: Path, tmp_path: Path
) -> None:
    ovf = _directory_ovf(tmp_path, pv_ova, None)
    packed = gzip.compress(image(1, 256 * KiB), mtime=0)
    (tmp_path / "pv_guest-disk1.img.gz").write_bytes(packed)
    text = ovf.read_text().replace(
        f'ovf:href="pv_guest-disk1.img" ovf:id="file1" ovf:size="{len(image(1, 256 * KiB))}"',
        f'ovf:href="pv_guest-disk1.img.gz" ovf:id="file1" ovf:size="{len(packed)}" '
        'ovf:compression="gzip"',
    )
    ovf.write_text(text)
    (tmp_path / "pv_guest.mf").write_text(
        f"SHA256(pv_guest-disk1.img.gz)= {hashlib.sha256(packed).hexdigest()}\n"
    )
    sink = Sink()
    read_ovf(ovf, sink_for=sink, losses=Losses())
    assert sink.images["xvda"] == image(1, 256 * KiB)


def test_sizes_of_8_gib_and_more_use_base_256() -> None:
    size = 9 << 30
    header = tarfmt.header("big.vmdk", size, 0)
    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    assert (info.name, info.size) == ("big.vmdk", size)
    small = tarfile.TarInfo.frombuf(tarfmt.header("s", 1234, 0), "utf-8", "surrogateescape")
    assert small.size == 1234


def test_the_corpus_manifest_in_ovftool_style() -> None:
    path = shared_dir() / "corpus/ovf/manifests/govmomi__ttylinux-pc_i486-16.1.mf"
    losses = Losses()
    digests = parse_manifest(path.read_bytes(), path.name, losses)
    assert digests == {
        "ttylinux-pc_i486-16.1.ovf": Digest("SHA1", "06271f767e0d5671c67e4edeaa2c157cabb66c2b"),
        "ttylinux-pc_i486-16.1-disk1.vmdk": Digest(
            "SHA1", "648e20a1e1625b1bb963b08c926bc18e62f15dfc"
        ),
    }
    assert len(losses) == 0


def test_the_default_writers_make_a_stream_optimized_vmdk(tmp_path: Path) -> None:
    from xenkit.motion.disk.convert import open_reader
    from xenkit.motion.disk.vmdk import VmdkReader

    spec = replace(pv_spec(), disks=pv_spec().disks[:1])
    data = image(7, 256 * KiB)
    out = tmp_path / "v.ova"
    members = write_ova(spec, [(spec.disks[0], MemReader(data))], out, losses=Losses())
    assert [m.name for m in members] == ["v.ovf", "v.mf", "v-disk1.vmdk"]
    with tarfile.open(out) as tar:
        vmdk = member_bytes(tar, "v-disk1.vmdk")
        ovf = member_bytes(tar, "v.ovf").decode()
    assert b'createType="streamOptimized"' in vmdk[:4096]
    assert "vmdk.html#streamOptimized" in ovf
    (tmp_path / "d.vmdk").write_bytes(vmdk)
    reader = open_reader(tmp_path / "d.vmdk", "vmdk")
    try:
        assert reader.virtual_size == len(data)
        assert reader.read(0, len(data)) == data
    finally:
        reader.close()

    def convert(disk: DiskRef, stream: BinaryIO | None) -> DiskRef:
        assert stream is not None
        from_member = VmdkReader(stream, name=disk.path)
        try:
            assert from_member.read(0, from_member.virtual_size) == data
        finally:
            from_member.close()
        return replace(disk, path="/out/xvda.raw", format="raw")

    back = read_ova(out, sink_for=convert, losses=Losses())
    assert back.disks[0].path == "/out/xvda.raw" and back.disks[0].virtual_size == len(data)


def test_a_qcow2_disk_is_written_into_its_member(tmp_path: Path) -> None:
    from xenkit.motion.disk.convert import open_reader

    spec = replace(pv_spec(), disks=pv_spec().disks[:1])
    data = image(3, 256 * KiB)
    out = tmp_path / "q.ova"
    members = write_ova(
        spec, [(spec.disks[0], MemReader(data))], out, disk_format="qcow2", losses=Losses()
    )
    assert [m.name for m in members] == ["q.ovf", "q.mf", "q-disk1.qcow2"]
    with tarfile.open(out) as tar:
        (tmp_path / "d.qcow2").write_bytes(member_bytes(tar, "q-disk1.qcow2"))
    assert qemu_img("check", tmp_path / "d.qcow2").returncode == 0
    reader = open_reader(tmp_path / "d.qcow2", "qcow2")
    try:
        assert reader.virtual_size == len(data)
        assert reader.read(0, len(data)) == data
    finally:
        reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.qcow2", "q.ova"]  # no scratch
