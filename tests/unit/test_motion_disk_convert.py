"""convert(): every pair of formats, the refusals before anything is written, the
resume after an interruption, no partial output after a failure, and the
verification catching a writer that got it wrong."""

from __future__ import annotations

import fcntl
import io
import itertools
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import TypedDict, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_motion_disk_images import (
    SIZE,
    Kind,
    Layout,
    children_reported,
    content,
    identical,
    make_raw,
    qemu_convert,
    qemu_img,
    qemu_nbd_children,
)
from xenkit.core.errors import OperationFailed, UsageError
from xenkit.motion.disk import convert as convert_module
from xenkit.motion.disk import vhd as vhd_module
from xenkit.motion.disk.base import CHUNK, CorruptImage, MiB, Progress
from xenkit.motion.disk.convert import (
    FORMATS,
    ContentDigest,
    convert,
    detect_format,
    estimate_output,
    open_reader,
    open_writer,
)
from xenkit.motion.disk.qemu import Qcow2Reader
from xenkit.motion.disk.raw import RawReader, RawWriter
from xenkit.motion.disk.vhd import VhdReader, VhdWriter
from xenkit.motion.disk.vmdk import GT_SPAN, VmdkReader, VmdkWriter
from xenkit.motion.model import DiskFormat


@pytest.fixture(autouse=True)
def _children_reported() -> Iterator[None]:
    yield from children_reported()


QEMU_OPTIONS = {
    "raw": [],
    "qcow2": [],
    "vhd": ["-o", "subformat=dynamic,force_size=on"],
    "vmdk": ["-o", "subformat=streamOptimized"],
}


@pytest.fixture(autouse=True)
def no_qemu_nbd_left() -> Iterator[None]:
    yield
    assert qemu_nbd_children() == []


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The standard image in every format, the non-raw ones made by qemu-img."""
    base = tmp_path_factory.mktemp("sources")
    raw = make_raw(base / "disk.raw")
    made = {"raw": raw}
    for fmt in ("qcow2", "vhd", "vmdk"):
        made[fmt] = qemu_convert(raw, "raw", base / f"disk.{fmt}", fmt, *QEMU_OPTIONS[fmt])
    return made


def leftovers(dst: Path) -> list[Path]:
    return sorted(dst.parent.glob(dst.name + "*"))


@pytest.mark.parametrize("dst_fmt", FORMATS)
@pytest.mark.parametrize("src_fmt", FORMATS)
def test_every_pair_converts_to_the_same_content(
    tmp_path: Path, sources: dict[str, Path], src_fmt: DiskFormat, dst_fmt: DiskFormat
) -> None:
    dst = tmp_path / f"out.{dst_fmt}"
    result = convert(sources[src_fmt], src_fmt, dst, dst_fmt)
    assert identical(sources["raw"], "raw", dst, dst_fmt)
    assert result.verified and result.virtual_size == SIZE and result.resumed_from == 0
    assert result.size == dst.stat().st_size and detect_format(dst) == dst_fmt
    assert leftovers(dst) == [dst]
    reference = ContentDigest(SIZE, worker=False)
    reference.data(0, content(dst))
    assert result.digest == reference.hexdigest()


def test_zeros_are_not_stored_in_any_format(tmp_path: Path, sources: dict[str, Path]) -> None:
    data = content(tmp_path)
    outs = {fmt: tmp_path / f"out.{fmt}" for fmt in FORMATS}
    for fmt, out in outs.items():
        convert(sources["raw"], "raw", out, fmt)
    grains = sum(1 for at in range(0, SIZE, 64 * 1024) if any(data[at : at + 64 * 1024]))
    assert outs["raw"].stat().st_blocks * 512 <= grains * 64 * 1024
    with VhdReader.open(outs["vhd"]) as vhd:
        assert vhd.allocated_blocks == 3
    with VmdkReader.open(outs["vmdk"]) as vmdk:
        assert vmdk.grains == grains
    assert outs["qcow2"].stat().st_size < 2 * MiB


def test_the_format_is_told_by_its_magic(tmp_path: Path, sources: dict[str, Path]) -> None:
    for fmt, path in sources.items():
        assert detect_format(path) == fmt
    fixed = qemu_convert(sources["raw"], "raw", tmp_path / "f.vhd", "vhd", "-o", "subformat=fixed")
    assert detect_format(fixed) == "vhd"
    (tmp_path / "x.vhdx").write_bytes(b"vhdxfile" + bytes(1024))
    with pytest.raises(UsageError, match="VHDX") as err:
        detect_format(tmp_path / "x.vhdx")
    assert err.value.hint and "qemu-img convert" in err.value.hint
    with closing(open_reader(fixed)) as reader:
        assert reader.read(0, SIZE) == sources["raw"].read_bytes()


def test_an_existing_destination_is_never_overwritten(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    dst = tmp_path / "out.vhd"
    dst.write_bytes(b"precious")
    with pytest.raises(UsageError, match=f"{dst} already exists") as err:
        convert(sources["raw"], "raw", dst, "vhd")
    assert err.value.hint and "never overwrites" in err.value.hint
    assert dst.read_bytes() == b"precious" and leftovers(dst) == [dst]


def test_too_little_space_is_refused_with_the_numbers(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    dst = tmp_path / "out.raw"
    with pytest.raises(UsageError, match=r"needs up to .* \(\d+ bytes\), .* has 1000 bytes"):
        convert(sources["qcow2"], "qcow2", dst, "raw", free_space=lambda _: 1000)
    assert leftovers(dst) == []


def huge_full_vhd(path: Path, size: int) -> Path:
    """A VHD of ``size`` bytes whose every BAT entry points at the same stored
    block: the allocation map says all of it is data, the file is a few MiB."""
    with path.open("w+b") as f:
        writer = VhdWriter(f, size)
        writer.write(0, b"\1" * 4096)
        writer.finish()
    data = bytearray(path.read_bytes())
    entries = -(-size // vhd_module.BLOCK)
    first = data[1536:1540]
    data[1536 : 1536 + 4 * entries] = first * entries
    path.write_bytes(bytes(data))
    return path


def test_a_huge_full_disk_is_refused_on_this_file_system(tmp_path: Path) -> None:
    size = 1 << 40
    src = huge_full_vhd(tmp_path / "huge.vhd", size)
    assert src.stat().st_size < 8 * MiB
    with VhdReader.open(src) as reader:
        assert estimate_output("raw", size, reader.allocation()) == size
    dst = tmp_path / "out.raw"
    with pytest.raises(UsageError, match=r"not enough space .* 1\.0 TiB"):
        convert(src, "vhd", dst, "raw")
    assert leftovers(dst) == []


class Small(TypedDict):
    segment: int
    checkpoint_every: int


SMALL = Small(segment=4 * MiB, checkpoint_every=1)
"""Checkpoints at every 4 MiB that holds data."""


def spread(tmp_path: Path, size: int, name: str = "spread.raw") -> Path:
    """A sparse image with a little data in many places (so many checkpoints)."""
    runs: list[tuple[int, int, Kind]] = [
        (at + 4096, 200 * 1024, "data") for at in range(0, size - MiB, 4 * MiB)
    ]
    layout: Layout = [*runs, (size - 512, 512, "data")]
    return make_raw(tmp_path / name, size, layout)


def interrupt_at(at: float, expected: int) -> Progress:
    """A progress callback that is a Ctrl-C once ``at`` bytes are done."""

    def progress(done: int, total: int) -> None:
        assert total == expected
        if done >= at:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("dst_fmt", FORMATS)
def test_an_interrupted_conversion_resumes_where_it_stopped(
    tmp_path: Path, dst_fmt: DiskFormat
) -> None:
    size = 3 * GT_SPAN + 2 * MiB if dst_fmt == "vmdk" else 24 * MiB + 512
    src = spread(tmp_path, size)
    dst = tmp_path / f"out.{dst_fmt}"
    with pytest.raises(KeyboardInterrupt):
        convert(src, "raw", dst, dst_fmt, progress=interrupt_at(0.4 * size, 2 * size), **SMALL)
    part, journal = Path(f"{dst}.part"), Path(f"{dst}.part.journal")
    assert not dst.exists() and part.exists() and journal.exists()
    seen: list[int] = []
    result = convert(src, "raw", dst, dst_fmt, progress=lambda d, t: seen.append(d), **SMALL)
    assert 0 < result.resumed_from < 0.6 * size and seen[0] == result.resumed_from
    assert seen == sorted(seen) and seen[-1] == 2 * size
    assert identical(src, "raw", dst, dst_fmt) and leftovers(dst) == [dst]
    if dst_fmt in ("qcow2", "vmdk"):
        assert qemu_img("check", dst).returncode == 0


def test_a_changed_source_starts_over(tmp_path: Path) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.vhd"
    with pytest.raises(KeyboardInterrupt):
        convert(src, "raw", dst, "vhd", progress=interrupt_at(6 * MiB, 32 * MiB), **SMALL)
    with src.open("r+b") as f:
        f.seek(MiB)
        f.write(b"changed")
    os.utime(src, ns=(1, 1))
    result = convert(src, "raw", dst, "vhd", **SMALL)
    assert result.resumed_from == 0 and identical(src, "raw", dst, "vhd")


@pytest.mark.parametrize("dst_fmt", ["vmdk", "raw"])
def test_an_interruption_during_verification_only_verifies_again(
    tmp_path: Path, dst_fmt: DiskFormat
) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / f"out.{dst_fmt}"
    with pytest.raises(KeyboardInterrupt):
        convert(src, "raw", dst, dst_fmt, progress=interrupt_at(24 * MiB, 32 * MiB))
    assert json.loads(Path(f"{dst}.part.journal").read_text())["stage"] == "written"
    result = convert(src, "raw", dst, dst_fmt)
    assert result.resumed_from == 16 * MiB and result.verified
    assert identical(src, "raw", dst, dst_fmt) and leftovers(dst) == [dst]


def test_resume_false_starts_over(tmp_path: Path) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.raw"
    with pytest.raises(KeyboardInterrupt):
        convert(src, "raw", dst, "raw", progress=interrupt_at(6 * MiB, 32 * MiB), **SMALL)
    result = convert(src, "raw", dst, "raw", resume=False, **SMALL)
    assert result.resumed_from == 0 and identical(src, "raw", dst, "raw")


def test_a_failure_leaves_no_partial_output(tmp_path: Path, sources: dict[str, Path]) -> None:
    data = bytearray(sources["vmdk"].read_bytes())
    with VmdkReader.open(sources["vmdk"]) as reader:
        last = max(e.offset for e in reader.extents() if not e.zero)
        sector = reader._entry(last // (64 * 1024))
    data[sector * 512 + 12 + 30 : sector * 512 + 12 + 40] = b"\xff" * 10
    broken = tmp_path / "broken.vmdk"
    broken.write_bytes(bytes(data))
    for fmt in FORMATS:
        dst = tmp_path / f"out.{fmt}"
        with pytest.raises(CorruptImage, match="does not inflate"):
            convert(broken, "vmdk", dst, fmt)
        assert leftovers(dst) == []


def test_verification_catches_a_writer_that_got_it_wrong(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write = VhdWriter.write

    def wrong(self: VhdWriter, offset: int, data: bytes) -> None:
        if offset <= 4 * MiB + 600_000 < offset + len(data):
            data = data[:100] + b"!" + data[101:]
        write(self, offset, data)

    monkeypatch.setattr(VhdWriter, "write", wrong)
    dst = tmp_path / "out.vhd"
    with pytest.raises(OperationFailed, match=r"verification failed: .* bytes 0\.\.7341568"):
        convert(sources["raw"], "raw", dst, "vhd")
    assert leftovers(dst) == []


@pytest.mark.parametrize("dst_fmt", ["qcow2", "vhd", "vmdk"])
def test_a_finished_image_is_read_back_while_the_fsync_waits(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch, dst_fmt: str
) -> None:
    """The final fsync is held until the output has been opened for its read-back
    (or 5 s): a read-back that waited for the fsync would leave it at 5 s."""
    opened = threading.Event()
    held_for: list[float] = []
    real_open, real_fsync = convert_module.open_reader, os.fsync

    def open_reader(path: str | Path, fmt: DiskFormat | None = None) -> object:
        if str(path).endswith(".part"):
            opened.set()
        return real_open(path, fmt)

    def fsync(fd: int) -> None:
        if Path(f"/proc/self/fd/{fd}").readlink().name.endswith(".part"):
            started = time.monotonic()
            opened.wait(5)
            held_for.append(time.monotonic() - started)
        real_fsync(fd)

    monkeypatch.setattr(convert_module, "open_reader", open_reader)
    monkeypatch.setattr(convert_module.os, "fsync", fsync)
    dst = tmp_path / f"out.{dst_fmt}"
    convert(sources["raw"], "raw", dst, cast(DiskFormat, dst_fmt))
    assert held_for and max(held_for) < 5
    assert identical(sources["raw"], "raw", dst, dst_fmt)


def test_a_raw_output_is_read_back_segment_by_segment_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[tuple[int, bool]] = []
    finished = False
    upto, finish = convert_module._ReadBack.upto, RawWriter.finish

    def spy(self: convert_module._ReadBack, end: int) -> None:
        handed.append((end, finished))
        upto(self, end)

    def finishing(self: RawWriter) -> int:
        nonlocal finished
        finished = True
        return finish(self)

    monkeypatch.setattr(convert_module._ReadBack, "upto", spy)
    monkeypatch.setattr(RawWriter, "finish", finishing)
    src = spread(tmp_path, 16 * MiB)
    seen: list[int] = []
    result = convert(
        src, "raw", tmp_path / "out.raw", "raw", progress=lambda d, t: seen.append(d), **SMALL
    )
    assert result.verified and identical(src, "raw", tmp_path / "out.raw", "raw")
    during = [end for end, after in handed if not after]
    assert during == [0, 4 * MiB, 8 * MiB, 12 * MiB, 16 * MiB]
    assert seen == sorted(seen) and seen[-1] == 32 * MiB


def wrong_raw_writer(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """RawWriter with the byte at ``at`` changed on its way out."""
    write = RawWriter.write

    def wrong(self: RawWriter, offset: int, data: bytes) -> None:
        if offset <= at < offset + len(data):
            data = data[: at - offset] + bytes([data[at - offset] ^ 1]) + data[at - offset + 1 :]
        write(self, offset, data)

    monkeypatch.setattr(RawWriter, "write", wrong)


@pytest.mark.parametrize(
    ("segment", "at", "where"),
    [
        (64 * MiB, 4 * MiB + 600_000, f"0..{SIZE}"),
        (4 * MiB, 8 * MiB + 100_000, "8388608..12582912"),
    ],
)
def test_the_read_back_of_a_raw_output_catches_wrong_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment: int, at: int, where: str
) -> None:
    wrong_raw_writer(monkeypatch, at)
    src = make_raw(tmp_path / "in.raw") if segment > SIZE else spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.raw"
    with pytest.raises(OperationFailed, match=rf"verification failed: .* bytes {where} is not"):
        convert(src, "raw", dst, "raw", segment=segment)
    assert leftovers(dst) == []


def test_a_raw_write_below_what_was_read_back_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that also writes where it should not, in a segment read back
    already: the write is noticed, that part read again, and the output refused."""
    finish, again = RawWriter.finish, convert_module._ReadBack.again
    asked: list[int] = []

    def scribbling(self: RawWriter) -> int:
        self._out.seek(MiB + 7)
        self._out.write(b"!")
        return finish(self)

    def spy(self: convert_module._ReadBack, at: int) -> None:
        asked.append(at)
        again(self, at)

    monkeypatch.setattr(RawWriter, "finish", scribbling)
    monkeypatch.setattr(convert_module._ReadBack, "again", spy)
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.raw"
    with pytest.raises(OperationFailed, match=r"bytes 0\.\.4194304 is not what"):
        convert(src, "raw", dst, "raw", **SMALL)
    assert asked == [MiB + 7] and leftovers(dst) == []


def test_a_raw_output_of_the_wrong_length_is_refused(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    finish = RawWriter.finish

    def short(self: RawWriter) -> int:
        size = finish(self)
        self._out.truncate(size - 512)
        return size

    monkeypatch.setattr(RawWriter, "finish", short)
    dst = tmp_path / "out.raw"
    with pytest.raises(
        OperationFailed, match=f"reads as {SIZE - 512} bytes, the source has {SIZE}"
    ):
        convert(sources["raw"], "raw", dst, "raw")
    assert leftovers(dst) == []


def test_a_resumed_raw_conversion_reads_back_what_the_first_run_wrote(tmp_path: Path) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.raw"
    with pytest.raises(KeyboardInterrupt):
        convert(src, "raw", dst, "raw", progress=interrupt_at(10 * MiB, 32 * MiB), **SMALL)
    journal = json.loads(Path(f"{dst}.part.journal").read_text())
    assert journal["checkpoint"]["virtual"] >= 4 * MiB
    with Path(f"{dst}.part").open("r+b") as f:  # damaged between the two runs
        f.seek(4096 + 10)
        byte = f.read(1)
        f.seek(4096 + 10)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(OperationFailed, match=r"bytes 0\.\.4194304 is not what"):
        convert(src, "raw", dst, "raw", **SMALL)
    assert leftovers(dst) == []


def test_a_second_conversion_to_the_same_place_is_refused(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    dst = tmp_path / "out.raw"
    part = Path(f"{dst}.part")
    with part.open("wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another conversion is writing"):
            convert(sources["raw"], "raw", dst, "raw")
    assert not dst.exists()


def test_the_estimate_bounds_what_is_written(tmp_path: Path, sources: dict[str, Path]) -> None:
    for fmt in FORMATS:
        out = tmp_path / f"e.{fmt}"
        convert(sources["raw"], "raw", out, fmt)
        with RawReader(sources["raw"]) as reader:
            estimate = estimate_output(fmt, SIZE, reader.allocation())
        assert out.stat().st_blocks * 512 <= estimate, fmt


def test_writers_go_into_a_window_of_another_file(tmp_path: Path) -> None:
    """What an OVA/XVA writer does: the image is a member of a bigger file."""
    data = content(Path())
    formats: tuple[DiskFormat, ...] = ("raw", "vhd", "vmdk", "qcow2")
    for fmt in formats:
        out = io.BytesIO()
        writer = open_writer(out, fmt, SIZE)
        for at in range(0, SIZE, CHUNK):
            piece = data[at : at + CHUNK]
            if any(piece):
                writer.write(at, piece)
        size = writer.finish()
        assert size == len(out.getvalue())
        out.seek(0)
        if fmt == "qcow2":
            image = tmp_path / "window.qcow2"
            image.write_bytes(out.getvalue())
            with closing(Qcow2Reader(image)) as qcow2:
                assert qcow2.read(0, SIZE) == data
            assert qemu_img("check", image).returncode == 0
        elif fmt in ("vhd", "vmdk"):
            assert {"vhd": VhdReader, "vmdk": VmdkReader}[fmt](out).read(0, SIZE) == data
        else:
            assert out.getvalue() == data


@st.composite
def disks(draw: st.DrawFn) -> tuple[int, list[tuple[int, bytes]]]:
    size = draw(st.integers(1, 6 * 2048)) * 512
    runs = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 300_000)), max_size=6))
    return size, [(at, os.urandom(min(n, size - at))) for at, n in runs]


def materialise(size: int, runs: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(size)
    for at, data in runs:
        out[at : at + len(data)] = data
    return bytes(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disk=disks(), cuts=st.lists(st.integers(0, 6 * MiB), max_size=12), mark=st.randoms())
def test_the_digest_depends_on_the_content_only(
    disk: tuple[int, list[tuple[int, bytes]]], cuts: list[int], mark: random.Random
) -> None:
    size, runs = disk
    data = materialise(size, runs)
    whole = ContentDigest(size, CHUNK * 2, worker=False)
    whole.data(0, data)
    pieces = ContentDigest(size, CHUNK * 2)
    points = sorted({0, size, *(c for c in cuts if c < size)})
    for lo, hi in itertools.pairwise(points):
        piece = data[lo:hi]
        if not any(piece) and mark.random() < 0.5:
            pieces.zero(lo, hi - lo)
        else:
            pieces.data(lo, piece)
    assert pieces.segments == whole.segments and pieces.hexdigest() == whole.hexdigest()
    pieces.close()
    if any(data):
        changed = bytearray(data)
        changed[data.index(next(b for b in data if b))] ^= 1
        other = ContentDigest(size, worker=False)
        other.data(0, bytes(changed))
        assert other.hexdigest() != whole.hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disk=disks())
def test_our_formats_round_trip_any_content(disk: tuple[int, list[tuple[int, bytes]]]) -> None:
    size, runs = disk
    data = materialise(size, runs)
    vhd = io.BytesIO()
    writer = VhdWriter(vhd, size)
    for at in range(0, size, CHUNK):
        if any(data[at : at + CHUNK]):
            writer.write(at, data[at : at + CHUNK])
    writer.finish()
    vhd_reader = VhdReader(vhd)
    vmdk = io.BytesIO()
    vmdk_writer = VmdkWriter(vmdk, size, threads=1)
    for ext in vhd_reader.extents():
        if not ext.zero:
            vmdk_writer.write(ext.offset, vhd_reader.read(ext.offset, ext.length))
    vmdk_writer.finish()
    assert VmdkReader(vmdk).read(0, size) == data
    stored = struct.unpack(">I", vhd.getvalue()[1536:1540])[0]
    assert (stored == 0xFFFFFFFF) == (not any(data[: min(size, vhd_module.BLOCK)]))


KILLED_CHILD = """
import os, signal, sys
from xenkit.motion.disk.convert import convert

def progress(done, total):
    if done >= 0.4 * total / 2:
        os.kill(os.getpid(), signal.SIGTERM)

convert(sys.argv[1], "raw", sys.argv[2], sys.argv[3], progress=progress,
        segment=4 << 20, checkpoint_every=1)
"""


def qemu_nbd_serving(path: Path) -> list[int]:
    """Any qemu-nbd (ours or orphaned) whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-nbd" in cmdline and str(path).encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("dst_fmt", ["raw", "qcow2"])
def test_a_sigterm_keeps_what_was_checkpointed(tmp_path: Path, dst_fmt: DiskFormat) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / f"out.{dst_fmt}"
    before = set(Path(tempfile.gettempdir()).glob("xenkit-nbd-*"))
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(src), str(dst), dst_fmt],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGTERM, child.stderr
    assert Path(f"{dst}.part").exists() and Path(f"{dst}.part.journal").exists()
    deadline = time.monotonic() + 10
    while qemu_nbd_serving(Path(f"{dst}.part")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert qemu_nbd_serving(Path(f"{dst}.part")) == []
    assert set(Path(tempfile.gettempdir()).glob("xenkit-nbd-*")) <= before
    result = convert(src, "raw", dst, dst_fmt, **SMALL)
    assert result.resumed_from > 0 and identical(src, "raw", dst, dst_fmt)
    assert leftovers(dst) == [dst]


def test_sha256_can_be_asked_for_and_a_resume_keeps_to_it(tmp_path: Path) -> None:
    src = spread(tmp_path, 16 * MiB)
    dst = tmp_path / "out.vhd"
    with pytest.raises(KeyboardInterrupt):
        convert(
            src,
            "raw",
            dst,
            "vhd",
            progress=interrupt_at(8 * MiB, 32 * MiB),
            algorithm="sha256",
            **SMALL,
        )
    journal = json.loads(Path(f"{dst}.part.journal").read_text())
    assert journal["algorithm"] == "sha256" and all(
        len(d) == 64 for d in journal["segments"].values()
    )
    result = convert(src, "raw", dst, "vhd", algorithm="sha256", **SMALL)
    assert result.resumed_from > 0 and len(result.digest) == 64
    with pytest.raises(UsageError, match="unknown digest algorithm"):
        convert(src, "raw", tmp_path / "x.raw", "raw", algorithm="crc-nonsense")
    assert leftovers(tmp_path / "x.raw") == []
