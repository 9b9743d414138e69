"""XVA streams both ways: VmSpec and disks through write_xva and read_xva, the
output checked by an independent reader, and damaged inputs named exactly."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import random
import shutil
import subprocess
import sys
import tarfile
import types
from collections.abc import Iterator

import pytest
import xxhash

from tests.unit.xva_independent import check_xva
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import Extent
from xenkit.motion.model import DiskRef, GuestType, Losses, NicRef, VmSpec
from xenkit.motion.xva import BadXva, Checksum, read_xva, write_xva

MiB = 1 << 20
UUID = "5a0fd7d6-4b0a-4c36-9a3b-6a3c1f3e2b11"


class MemDisk:
    """A DiskReader over bytes; ``extents`` as given (default: one data extent),
    so a test can claim zeros the writer must not read, or data that is zeros."""

    def __init__(self, data: bytes, extents: list[Extent] | None = None) -> None:
        self.data = data
        self._extents = extents
        self.reads: list[tuple[int, int]] = []

    @property
    def virtual_size(self) -> int:
        return len(self.data)

    def extents(self) -> Iterator[Extent]:
        return iter(self._extents or [Extent(0, len(self.data), False)])

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class MemSink:
    """A DiskWriter into a bytearray that insists on increasing offsets."""

    def __init__(self, ref: DiskRef) -> None:
        self.ref = ref
        self.buf = bytearray(ref.virtual_size)
        self.at = 0
        self.finished = False

    def write(self, offset: int, data: bytes) -> None:
        assert offset >= self.at, (offset, self.at)
        self.buf[offset : offset + len(data)] = data
        self.at = offset + len(data)

    def finish(self) -> int:
        self.finished = True
        return len(self.buf)


def holey_disk(size: int, seed: int) -> tuple[bytes, list[Extent]]:
    """Random data with a hole (chunk 2, declared zero), written zeros (chunk 4
    and on, declared data) and data at both ends and in chunk 3."""
    rng = random.Random(seed)
    data = bytearray(size)
    data[0:5000] = rng.randbytes(5000)
    data[MiB + 100 : MiB + 300] = rng.randbytes(200)
    data[3 * MiB + 10 : 3 * MiB + 20] = rng.randbytes(10)
    tail = min(777, size - 3 * MiB)
    data[size - tail :] = rng.randbytes(tail)
    extents = [
        Extent(0, 2 * MiB, False),
        Extent(2 * MiB, MiB, True),
        Extent(3 * MiB, size - 3 * MiB, False),
    ]
    return bytes(data), extents


def spec_of(guest_type: GuestType, sizes: list[int]) -> VmSpec:
    """A guest with every VmSpec field set to something XenAPI can carry."""
    letter = "hd" if guest_type == "hvm" else "xvd"
    disks = [
        DiskRef(
            vdev=f"{letter}{chr(97 + i)}",
            path=f"/images/d{i}.img",
            virtual_size=size,
            bootable=i == 0,
            readonly=i == 2,
            label=f"disk {i}",
        )
        for i, size in enumerate(sizes)
    ]
    model = "e1000" if guest_type == "hvm" else None
    spec = VmSpec(
        name=f"vm-{guest_type}",
        guest_type=guest_type,
        uuid=UUID,
        description="a test guest",
        memory_mib=512,
        maxmem_mib=1024,
        vcpus=2,
        maxvcpus=4,
        cpu_weight=512,
        cap=50,
        on_crash="coredump-restart",
        nics=(
            NicRef(mac="00:16:3e:12:34:56", bridge="xenbr0", model=model),
            NicRef(bridge="xenbr1", mtu=9000, model=model),
        ),
        extra={"max_grant_frames": "64"},
        disks=tuple(disks),
    )
    if guest_type == "hvm":
        cd = DiskRef(vdev="hdd", path="/isos/install.iso", readonly=True, cdrom=True)
        return dataclasses.replace(
            spec,
            disks=(*spec.disks, cd),
            firmware="seabios",
            boot_order="dc",
            platform={"acpi": "1", "apic": "1", "viridian": "1", "videoram": "16"},
        )
    return dataclasses.replace(
        spec,
        kernel="/var/lib/xcp/guest/vmlinuz" if guest_type == "pvh" else "/boot/vmlinuz-6.1",
        ramdisk="/boot/initrd.img-6.1" if guest_type == "pv" else None,
        cmdline="root=/dev/xvda1 console=hvc0",
    )


def write(spec: VmSpec, disks: list[MemDisk], checksum: Checksum = "sha1") -> tuple[bytes, Losses]:
    out = io.BytesIO()
    losses = Losses()
    n = write_xva(spec, disks, out, checksum=checksum, losses=losses)
    assert n == len(out.getvalue())
    return out.getvalue(), losses


def read(data: bytes | io.RawIOBase) -> tuple[VmSpec, dict[str, MemSink], Losses]:
    sinks: dict[str, MemSink] = {}

    def sink_for(ref: DiskRef) -> MemSink:
        sinks[ref.vdev] = MemSink(ref)
        return sinks[ref.vdev]

    src = io.BytesIO(data) if isinstance(data, bytes) else data
    losses = Losses()
    spec = read_xva(src, sink_for=sink_for, losses=losses)  # type: ignore[arg-type]
    return spec, sinks, losses


def with_paths(read_back: VmSpec, original: VmSpec) -> VmSpec:
    paths = {d.vdev: d.path for d in original.disks}
    disks = tuple(dataclasses.replace(d, path=paths[d.vdev]) for d in read_back.disks)
    return dataclasses.replace(read_back, disks=disks)


@pytest.fixture(scope="module")
def disks() -> list[tuple[bytes, list[Extent]]]:
    return [holey_disk(5 * MiB + 1234, 1), holey_disk(4 * MiB, 2), holey_disk(3 * MiB + 512, 3)]


@pytest.mark.parametrize("guest_type", ["pv", "pvh", "hvm"])
def test_a_spec_and_its_disks_survive_the_round_trip(
    guest_type: GuestType, disks: list[tuple[bytes, list[Extent]]]
) -> None:
    spec = spec_of(guest_type, [len(d) for d, _ in disks])
    data, _ = write(spec, [MemDisk(d, e) for d, e in disks])
    back, sinks, _ = read(data)
    assert with_paths(back, spec) == spec
    for disk, (content, _) in zip(spec.disks, disks, strict=False):
        assert bytes(sinks[disk.vdev].buf) == content
        assert sinks[disk.vdev].finished
    assert set(sinks) == {d.vdev for d in spec.disks if not d.cdrom}


@pytest.mark.parametrize("checksum", ["sha1", "xxhash"])
def test_an_independent_reader_accepts_the_output(
    checksum: Checksum, disks: list[tuple[bytes, list[Extent]]]
) -> None:
    spec = spec_of("hvm", [len(d) for d, _ in disks])
    data, _ = write(spec, [MemDisk(d, e) for d, e in disks], checksum)
    checked = check_xva(data)
    assert checked.checksum_kinds == {checksum}
    vdis = sorted(checked.disks)
    assert [checked.disks[v] for v in vdis] == [d for d, _ in disks]
    # The hole and the zero run are not in the tar; the first and last chunks are.
    assert checked.chunks[vdis[0]] == [0, 1, 3, 5]
    assert checked.chunks[vdis[1]] == [0, 1, 3]


def test_after_a_disk_smaller_than_a_chunk_no_chunk_is_skipped(
    disks: list[tuple[bytes, list[Extent]]],
) -> None:
    """xapi sizes every gap by the stream's first chunk: a 4 KiB first disk
    would make 1 MiB gaps 4 KiB ones."""
    tiny = bytes(range(256)) * 16
    content, extents = disks[0]
    spec = spec_of("pv", [len(tiny), len(content)])
    data, _ = write(spec, [MemDisk(tiny), MemDisk(content, extents)])
    checked = check_xva(data)
    assert checked.chunks["Ref:004"] == [0, 1, 2, 3, 4, 5]
    assert checked.disks["Ref:004"] == content
    _, sinks, _ = read(data)
    assert bytes(sinks["xvdb"].buf) == content


def test_zeros_the_extents_declare_are_not_read(disks: list[tuple[bytes, list[Extent]]]) -> None:
    content, extents = disks[0]
    disk = MemDisk(content, extents)
    write(spec_of("pv", [len(content)]), [disk])
    assert all(not (2 * MiB <= off < 3 * MiB) for off, _ in disk.reads)


def test_xxhash_members_round_trip(disks: list[tuple[bytes, list[Extent]]]) -> None:
    spec = spec_of("pvh", [len(d) for d, _ in disks])
    data, _ = write(spec, [MemDisk(d, e) for d, e in disks], "xxhash")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert any(n.endswith(".xxhash") for n in names)
    assert not any(n.endswith(".checksum") for n in names)
    back, sinks, _ = read(data)
    assert with_paths(back, spec) == spec
    assert bytes(sinks["xvdb"].buf) == disks[1][0]


def test_gzip_input_reads_the_same(disks: list[tuple[bytes, list[Extent]]]) -> None:
    spec = spec_of("pv", [len(disks[1][0])])
    data, _ = write(spec, [MemDisk(*disks[1])])
    back, sinks, _ = read(gzip.compress(data, compresslevel=1))
    assert with_paths(back, spec) == spec
    assert bytes(sinks["xvda"].buf) == disks[1][0]


def test_zstd_input_without_zstandard_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails
    with pytest.raises(UsageError, match="zstd") as e:
        read(b"\x28\xb5\x2f\xfd" + bytes(600))
    assert e.value.hint is not None and "zstandard" in e.value.hint


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_zstd_input_is_decompressed_by_zstandard(
    monkeypatch: pytest.MonkeyPatch, disks: list[tuple[bytes, list[Extent]]]
) -> None:
    """zstandard itself is optional; a stand-in with its streaming API, backed
    by the zstd program, shows the stream is sniffed and handed over whole."""

    class Decompressor:
        def stream_reader(self, src: io.BufferedIOBase, read_across_frames: bool) -> io.BytesIO:
            assert read_across_frames
            done = subprocess.run(["zstd", "-dc"], input=src.read(), capture_output=True)
            return io.BytesIO(done.stdout)

    monkeypatch.setitem(
        sys.modules, "zstandard", types.SimpleNamespace(ZstdDecompressor=Decompressor)
    )
    spec = spec_of("pv", [len(disks[1][0])])
    data, _ = write(spec, [MemDisk(*disks[1])])
    packed = subprocess.run(["zstd", "-1", "-c"], input=data, capture_output=True).stdout
    back, sinks, _ = read(packed)
    assert with_paths(back, spec) == spec
    assert bytes(sinks["xvda"].buf) == disks[1][0]


class Trickle(io.RawIOBase):
    """A pipe-like source: short reads, no seek."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    @property
    def left(self) -> int:
        return len(self._data)

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._step, len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


class ShortWrites(io.RawIOBase):
    """A pipe-like sink: takes at most ``step`` bytes a call, cannot seek or tell."""

    def __init__(self, step: int) -> None:
        self.data = bytearray()
        self._step = step

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        part = bytes(b[: self._step])
        self.data += part
        return len(part)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("not seekable")


def test_streams_go_through_pipes(disks: list[tuple[bytes, list[Extent]]]) -> None:
    spec = spec_of("pv", [len(disks[0][0])])
    sink = ShortWrites(100_000)
    write_xva(spec, [MemDisk(*disks[0])], sink, losses=Losses())  # type: ignore[arg-type]
    reference, _ = write(spec, [MemDisk(*disks[0])])
    assert _without_dates(bytes(sink.data)) == _without_dates(reference)
    src = Trickle(bytes(sink.data), 7001)
    back, sinks, _ = read(src)
    assert src.left == 0, "the writer of a pipe sees all its output taken"
    assert bytes(sinks["xvda"].buf) == disks[0][0]
    assert with_paths(back, spec) == spec


def _without_dates(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return b"".join(
            m.name.encode() + (_body(tf, m.name) if m.name != "ova.xml" else b"") for m in tf
        )


def _body(tf: tarfile.TarFile, name: str) -> bytes:
    f = tf.extractfile(name)
    assert f is not None
    return f.read()


def ova_of(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return _body(tf, "ova.xml")


def _member(data: bytes, name: str) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmember(name)


def test_a_flipped_byte_names_the_chunk_and_both_digests(
    disks: list[tuple[bytes, list[Extent]]],
) -> None:
    content, extents = disks[0]
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)])
    chunk = _member(data, "Ref:002/00000003")
    damaged = bytearray(data)
    damaged[chunk.offset_data + 1000] ^= 0x40
    original = content[3 * MiB : 4 * MiB]
    flipped = bytearray(original)
    flipped[1000] ^= 0x40
    sinks: dict[str, MemSink] = {}

    def sink_for(ref: DiskRef) -> MemSink:
        sinks[ref.vdev] = MemSink(ref)
        return sinks[ref.vdev]

    with pytest.raises(BadXva) as e:
        read_xva(io.BytesIO(bytes(damaged)), sink_for=sink_for, losses=Losses())
    assert sinks["xvda"].at <= 3 * MiB, "the damaged chunk never reached the disk"
    message = str(e.value)
    assert "Ref:002/00000003" in message
    assert hashlib.sha1(original).hexdigest() in message
    assert hashlib.sha1(flipped).hexdigest() in message


def test_a_flipped_byte_under_xxhash_is_named_too(
    disks: list[tuple[bytes, list[Extent]]],
) -> None:
    content, extents = disks[1]
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)], "xxhash")
    chunk = _member(data, "Ref:002/00000000")
    damaged = bytearray(data)
    damaged[chunk.offset_data + 7] ^= 1
    with pytest.raises(BadXva, match="Ref:002/00000000") as e:
        read(bytes(damaged))
    assert f"{xxhash.xxh64_intdigest(content[:MiB]):016X}" in str(e.value)


def test_a_damaged_tar_header_names_the_member_before(
    disks: list[tuple[bytes, list[Extent]]],
) -> None:
    content, extents = disks[1]
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)])
    header_at = _member(data, "Ref:002/00000001").offset
    damaged = bytearray(data)
    damaged[header_at + 130] ^= 0x01
    with pytest.raises(BadXva, match=r"header after Ref:002/00000000\.checksum is damaged"):
        read(bytes(damaged))


def test_a_damaged_digest_member_is_named(disks: list[tuple[bytes, list[Extent]]]) -> None:
    content, extents = disks[1]
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)])
    member = _member(data, "Ref:002/00000001.checksum")
    damaged = bytearray(data)
    damaged[member.offset_data] = ord("0") if damaged[member.offset_data] != ord("0") else ord("1")
    with pytest.raises(BadXva, match=r"chunk Ref:002/00000001 is damaged"):
        read(bytes(damaged))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("ova.xml", "inside ova.xml"),
        ("Ref:002/00000001", "inside chunk Ref:002/00000001"),
        ("Ref:002/00000001.checksum", "inside Ref:002/00000001.checksum"),
        ("after:Ref:002/00000003.checksum", r"ends after Ref:002/00000003\.checksum: VDI Ref:002"),
        ("after:Ref:002/00000001", r"ends after chunk Ref:002/00000001, before its checksum"),
    ],
)
def test_truncation_says_what_was_being_read(
    where: str, expected: str, disks: list[tuple[bytes, list[Extent]]]
) -> None:
    content, extents = disks[0]
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)])
    if where.startswith("after:"):
        m = _member(data, where[len("after:") :])
        cut = m.offset_data + m.size + (-m.size % 512)
    else:
        m = _member(data, where)
        cut = m.offset_data + m.size // 2
    with pytest.raises(BadXva, match=expected):
        read(data[:cut])


def test_a_cut_gzip_stream_is_truncation() -> None:
    content, extents = holey_disk(4 * MiB, 9)
    data, _ = write(spec_of("pv", [len(content)]), [MemDisk(content, extents)])
    packed = gzip.compress(data, compresslevel=1)
    with pytest.raises(BadXva, match="ends"):
        read(packed[: len(packed) * 2 // 3])


def test_a_tar_without_ova_xml_first_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in ("Ref:1/00000000", "ova.xml"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(BadXva, match=r"first member is 'Ref:1/00000000', not ova\.xml"):
        read(out.getvalue())


def test_what_is_not_a_tar_is_refused() -> None:
    with pytest.raises(BadXva, match="does not start with a tar header"):
        read(b"hello world" * 100)
    with pytest.raises(BadXva, match="empty"):
        read(b"")
    with pytest.raises(BadXva, match="xz"):
        read(b"\xfd7zXZ\x00" + bytes(600))


def tar_of(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return out.getvalue()


def _sha1(b: bytes) -> bytes:
    return hashlib.sha1(b).hexdigest().encode()


def test_chunks_are_placed_by_sequence_across_keep_alives() -> None:
    """xapi's exporter sends a 0-byte chunk when a disk is slow and numbers the
    rest one higher; gaps count in first-chunk lengths."""
    size = 4 * MiB
    spec = spec_of("pv", [size])
    data, _ = write(spec, [MemDisk(bytes(size))])
    ova = ova_of(data)
    a, b, c = (bytes([x]) * MiB for x in (1, 2, 3))
    members = [("ova.xml", ova)]
    # offset 0: a; keep-alive "1"; offset 1 MiB: b as "2"; gap "3"; offset 3 MiB: c as "4".
    for n, body in ((0, a), (1, b""), (2, b), (4, c)):
        name = f"Ref:002/{n:08d}"
        members += [(name, body), (name + ".checksum", _sha1(body))]
    _, sinks, _ = read(tar_of(members))
    assert bytes(sinks["xvda"].buf) == a + b + bytes(MiB) + c


def test_chunk_names_must_increase() -> None:
    size = 3 * MiB
    data, _ = write(spec_of("pv", [size]), [MemDisk(bytes(size))])
    ova = ova_of(data)
    members = [("ova.xml", ova)]
    for n in (1, 0):
        name = f"Ref:002/{n:08d}"
        members += [(name, bytes(MiB)), (name + ".checksum", _sha1(bytes(MiB)))]
    with pytest.raises(BadXva, match="names must increase"):
        read(tar_of(members))


def test_a_chunk_without_its_checksum_is_refused() -> None:
    size = 2 * MiB
    data, _ = write(spec_of("pv", [size]), [MemDisk(bytes(size))])
    ova = ova_of(data)
    members = [("ova.xml", ova), ("Ref:002/00000000", bytes(MiB)), ("Ref:002/00000001", b"x")]
    with pytest.raises(BadXva, match=r"followed by 'Ref:002/00000001', not its \.checksum"):
        read(tar_of(members))


def test_progress_runs_to_the_total(disks: list[tuple[bytes, list[Extent]]]) -> None:
    spec = spec_of("pv", [len(d) for d, _ in disks])
    seen: list[tuple[int, int]] = []
    out = io.BytesIO()
    write_xva(
        spec,
        [MemDisk(d, e) for d, e in disks],
        out,
        losses=Losses(),
        progress=lambda done, total: seen.append((done, total)),
    )
    total = sum(len(d) for d, _ in disks)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()

    def sink_for(ref: DiskRef) -> MemSink:
        return MemSink(ref)

    read_xva(
        io.BytesIO(out.getvalue()),
        sink_for=sink_for,
        losses=Losses(),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (total, total)


def test_place_chooses_the_disk_paths(disks: list[tuple[bytes, list[Extent]]]) -> None:
    spec = spec_of("pv", [len(disks[1][0])])
    data, _ = write(spec, [MemDisk(*disks[1])])
    offered: list[DiskRef] = []

    def place(ref: DiskRef) -> DiskRef:
        offered.append(ref)
        return dataclasses.replace(ref, path=f"/out/{ref.vdev}.qcow2", format="qcow2")

    back = read_xva(io.BytesIO(data), sink_for=MemSink, losses=Losses(), place=place)
    assert offered[0].path == "xvda.raw" and offered[0].virtual_size == len(disks[1][0])
    assert back.disks[0].path == "/out/xvda.qcow2" and back.disks[0].format == "qcow2"
