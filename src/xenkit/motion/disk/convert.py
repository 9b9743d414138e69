"""Converting a disk image from one format to another, safely.

``convert`` writes ``<dst>.part``, never the destination itself, and keeps a
small journal beside it (``<dst>.part.journal``) at checkpoints, so a run that
was interrupted (Ctrl-C, SIGTERM, a crash) carries on from the last checkpoint
when started again on the same, unchanged source. When everything is written it
is fsynced, read back and compared with what was read from the source, and only
then linked into place: the destination either does not exist or is complete and
verified. Any failure removes the partial output; an interruption keeps it for
the next run.

A VHD, VMDK or qcow2 output is read back through the format's reader once it is
finished (their tables are written last), on a worker thread while the fsync
waits for the disk. A raw output's bytes are final once
written, so it is read back segment by segment on a worker thread while the copy
goes on, straight from the file (its holes are zeros, not read): by the time the
copy is done, so is most of the verification. A write below what was already
read back (a writer's bug) has that part read again at the end, and the output's
length is checked, so the comparison covers what the file finally holds.

The comparison is by digest, not byte for byte against the source (which would
read the source twice): a hash over the content's non-zero 1 MiB grains, each
with its index, one digest per 64 MiB segment. Zero grains hash to nothing, so
two images with the same content have the same digests whatever their
allocation, and a 2 TiB disk with 1 GiB of data costs 1 GiB of hashing; the
per-segment digests are what makes a resumed run verifiable (the journal keeps
those of the segments already written), and name where a mismatch is.

The hash is XXH3-128 unless asked otherwise (``algorithm="sha256"`` or any
hashlib name). Verification guards against a writer's bug and against what the
disk or the file system does to the bytes between the write and the read-back;
nobody chooses those bytes to collide, and for accidental differences a 128-bit
hash that passes SMHasher misses one in 2**128, as SHA-256 does for practical
purposes. At ~30 GB/s it costs nothing next to the copy, where SHA-256's ~2 GB/s
(with SHA-NI) would cost more than qemu-img takes for the whole conversion.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, Protocol, get_args

import xxhash

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.motion.disk.base import (
    CHUNK,
    Checkpoint,
    DiskReader,
    DiskWriter,
    Extent,
    MiB,
    Progress,
    ResumableWriter,
    is_zero,
    no_progress,
)
from xenkit.motion.disk.qcow2 import Qcow2Writer
from xenkit.motion.disk.qcow2 import output_size as qcow2_output_size
from xenkit.motion.disk.qemu import QemuReader, open_qcow2
from xenkit.motion.disk.raw import RawReader, RawWriter, allocated
from xenkit.motion.disk.vhd import BLOCK, COOKIE, VhdReader, VhdWriter
from xenkit.motion.disk.vmdk import GRAIN, GT_SPAN, MAGIC, VmdkReader, VmdkWriter
from xenkit.motion.model import DiskFormat

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

FORMATS: tuple[DiskFormat, ...] = get_args(DiskFormat)
SEGMENT = 64 * MiB
CHECKPOINT_EVERY = 256 * MiB
"""Data written between two checkpoints (each one fsyncs the output)."""
WRITEBACK_EVERY = 16 * MiB
"""Data written between two background ``fdatasync``s of the output."""
JOURNAL_VERSION = 1
DIGEST = "xxh3_128"

FreeSpace = Callable[[Path], int]
Stage = Literal["copy", "written"]


def detect_format(path: str | Path) -> DiskFormat:
    """The format of the image at ``path``, from its magic bytes (anything
    without one is raw)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(512)
            length = f.seek(0, os.SEEK_END)
            f.seek(max(length - 512, 0))
            tail = f.read(512)
    except FileNotFoundError as exc:
        raise UsageError(f"{path} does not exist", hint="check the image's path") from exc
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:4] in (MAGIC, b"COWD") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"vhdxfile":
        raise UsageError(
            f"{path} is a VHDX image, which xenkit does not convert",
            hint=f"turn it into a VHD or qcow2 first: qemu-img convert -O qcow2 {path} out.qcow2",
        )
    if COOKIE in (head[:8], tail[:8]):
        return "vhd"
    return "raw"


def open_reader(path: str | Path, fmt: DiskFormat | None = None) -> DiskReader:
    """A reader of the image at ``path`` (``fmt`` None: detected)."""
    fmt = detect_format(path) if fmt is None else fmt
    if fmt == "raw":
        return RawReader(path)
    if fmt == "vhd":
        return VhdReader.open(path)
    if fmt == "vmdk":
        if not Path(path).exists():
            raise UsageError(f"{path} does not exist", hint="check the image's path")
        with Path(path).open("rb") as f:
            sparse = f.read(4) == MAGIC
        return VmdkReader.open(path) if sparse else QemuReader(path, "vmdk")
    if fmt == "qcow2":
        return open_qcow2(path)
    raise UsageError(f"unknown disk format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")


def open_writer(
    out: BinaryIO, fmt: DiskFormat, virtual_size: int, *, name: str = "disk.vmdk"
) -> ResumableWriter:
    """A writer of ``fmt`` into ``out``, a seekable binary file (or a window in
    one, such as a tar member); ``name`` is the VMDK descriptor's extent name."""
    if fmt == "raw":
        return RawWriter(out, virtual_size)
    if fmt == "vhd":
        return VhdWriter(out, virtual_size)
    if fmt == "vmdk":
        return VmdkWriter(out, virtual_size, name=name)
    if fmt == "qcow2":
        return Qcow2Writer(out, virtual_size)
    raise UsageError(f"unknown disk format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")


def _resume_writer(
    out: BinaryIO, fmt: DiskFormat, virtual_size: int, checkpoint: Checkpoint
) -> ResumableWriter:
    if fmt == "raw":
        return RawWriter(out, virtual_size)
    if fmt == "vhd":
        return VhdWriter.resume(out, virtual_size, checkpoint)
    if fmt == "qcow2":
        return Qcow2Writer.resume(out, virtual_size, checkpoint)
    return VmdkWriter.resume(out, virtual_size, checkpoint)


class _Hasher(Protocol):
    def update(self, data: bytes | bytearray, /) -> None: ...

    def hexdigest(self) -> str: ...


def new_hash(algorithm: str, data: bytes = b"") -> _Hasher:
    """A hash object by name: ``xxh3_128`` (xxhash) or a hashlib algorithm."""
    if algorithm == "xxh3_128":
        return xxhash.xxh3_128(data)
    try:
        return hashlib.new(algorithm, data)
    except ValueError as exc:
        raise UsageError(
            f"unknown digest algorithm {algorithm!r}", hint="use xxh3_128 or sha256"
        ) from exc


class ContentDigest:
    """Digests of a disk's content per ``segment``, fed in increasing order.

    The content is cut into ``CHUNK`` grains; a grain that is not all zeros adds
    its index and bytes to its segment's hash. Segments with no such grain have
    no digest. A slow hash (SHA-256) runs on a worker thread (hashlib lets go of
    the GIL), beside the reads and writes; ``close`` stops it."""

    BACKLOG = 4

    def __init__(
        self,
        virtual_size: int,
        segment: int = SEGMENT,
        *,
        algorithm: str = DIGEST,
        start: int = 0,
        segments: Mapping[int, str] | None = None,
        worker: bool | None = None,
    ) -> None:
        if segment % CHUNK:
            raise ValueError(f"a segment of {segment} bytes is not whole grains of {CHUNK}")
        self.size = virtual_size
        self.segment = segment
        self.algorithm = algorithm
        self.pos = start
        self.data_bytes = 0
        self._segments: dict[int, str] = dict(segments or {})
        self._hash: _Hasher | None = None
        self._pending: bytearray | None = None
        new_hash(algorithm)
        if worker is None:
            worker = algorithm != "xxh3_128"
        self._worker = ThreadPoolExecutor(1, "digest") if worker else None
        self._backlog: deque[Future[None]] = deque()

    @property
    def segments(self) -> dict[int, str]:
        """The digests of the segments done so far, by index."""
        self._settle()
        return self._segments

    def _later(self, work: Callable[[], None]) -> None:
        if self._worker is None:
            work()
            return
        self._backlog.append(self._worker.submit(work))
        while len(self._backlog) > self.BACKLOG:
            self._backlog.popleft().result()

    def _settle(self) -> None:
        while self._backlog:
            self._backlog.popleft().result()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
        self._backlog.clear()

    def _expect(self, offset: int) -> None:
        if offset != self.pos:
            raise ValueError(f"content at {offset} given when {self.pos} is next")

    def zero(self, offset: int, length: int) -> None:
        self._expect(offset)
        end = offset + length
        while self.pos < end:
            if self._pending is None:
                self._advance(end)
                return
            grain_end = min((self.pos // CHUNK + 1) * CHUNK, self.size)
            self._advance(min(end, grain_end))

    def data(self, offset: int, data: bytes | bytearray) -> None:
        """Content at ``offset``; a ``bytearray`` may be reused once this returns
        only without a worker (``worker=False``, or xxh3)."""
        self._expect(offset)
        self.data_bytes += len(data)
        done = 0
        while done < len(data):
            start = self.pos // CHUNK * CHUNK
            grain_end = min(start + CHUNK, self.size)
            n = min(len(data) - done, grain_end - self.pos)
            whole = self._pending is None and self.pos == start and self.pos + n == grain_end
            piece = data if n == len(data) else data[done : done + n]
            if whole:
                self._grain(start // CHUNK, piece)
            elif self._pending is not None or not is_zero(piece):
                if self._pending is None:
                    self._pending = bytearray(grain_end - start)
                self._pending[self.pos - start : self.pos - start + n] = piece
            done += n
            self._advance(self.pos + n)

    def _advance(self, new: int) -> None:
        """Move to ``new``, closing the grain and the segments passed on the way."""
        if self._pending is not None:
            start = self.pos // CHUNK * CHUNK
            if new >= min(start + CHUNK, self.size):
                self._grain(start // CHUNK, bytes(self._pending))
                self._pending = None
        passed = new // self.segment > self.pos // self.segment or new >= self.size
        if passed and self._hash is not None:
            done, index = self._hash, self.pos // self.segment
            self._later(lambda: self._segments.__setitem__(index, done.hexdigest()))
            self._hash = None
        self.pos = new

    def _grain(self, index: int, data: bytes | bytearray) -> None:
        if is_zero(data):
            return
        if self._hash is None:
            self._hash = new_hash(self.algorithm)
        into = self._hash

        def update() -> None:
            into.update(struct.pack("<Q", index))
            into.update(data)

        self._later(update)

    def before(self, at: int) -> dict[int, str]:
        """The digests of the segments that end at or before ``at``."""
        return {k: v for k, v in self.segments.items() if (k + 1) * self.segment <= at}

    def hexdigest(self) -> str:
        """One digest of the whole content, its size included."""
        whole = new_hash(self.algorithm, f"{self.size}\n".encode())
        segments = self.segments
        for index in sorted(segments):
            whole.update(f"{index}:{segments[index]}\n".encode())
        return whole.hexdigest()


def copy(
    reader: DiskReader,
    writer: DiskWriter | None,
    *,
    progress: Progress = no_progress,
    start: int = 0,
    digest: ContentDigest | None = None,
    boundary: Callable[[int], None] | None = None,
    segment: int = SEGMENT,
) -> None:
    """Hand ``reader``'s content from ``start`` on to ``writer`` (None: only
    digest it), one ``CHUNK`` at a time, zeros skipped; ``boundary(at)`` is
    called at each multiple of ``segment`` once everything before it is given."""
    total = reader.virtual_size
    for ext in reader.extents():
        if ext.end <= start:
            continue
        pos = max(ext.offset, start)
        if ext.zero:
            last = ext.end // segment * segment
            if boundary is not None and last > pos:
                if digest is not None:
                    digest.zero(pos, last - pos)
                boundary(last)
                pos = last
            if digest is not None and ext.end > pos:
                digest.zero(pos, ext.end - pos)
            progress(ext.end, total)
            continue
        while pos < ext.end:
            end = min(ext.end, (pos // CHUNK + 1) * CHUNK)
            data = reader.read(pos, end - pos)
            if len(data) != end - pos:
                raise OperationFailed(
                    f"the source gave {len(data)} bytes at {pos}, not {end - pos}",
                    hint="the source image changed or is damaged",
                )
            if digest is not None:
                digest.data(pos, data)
            if writer is not None and not is_zero(data):
                writer.write(pos, data)
            pos = end
            progress(pos, total)
            if boundary is not None and pos % segment == 0:
                boundary(pos)


def estimate_output(fmt: DiskFormat, virtual_size: int, allocation: Iterator[Extent]) -> int:
    """An upper bound of the bytes a ``fmt`` image of this content takes: what
    the allocation touches in the format's units, plus its metadata (VMDK
    compression is not counted on)."""
    unit = {"raw": 4096, "vhd": BLOCK, "vmdk": GRAIN, "qcow2": 64 * 1024}[fmt]
    units, last = 0, -1
    for ext in allocation:
        if ext.zero or not ext.length:
            continue
        first, end = ext.offset // unit, (ext.end - 1) // unit
        units += end - max(first, last + 1) + 1 if end > last else 0
        last = max(last, end)
    if fmt == "raw":
        return min(units * unit, virtual_size)
    if fmt == "vhd":
        return VhdWriter.output_size(units, virtual_size)
    if fmt == "vmdk":
        tables = -(-virtual_size // GT_SPAN)
        return units * (GRAIN + 512) + tables * (4 * 512 + 512) + 4 * tables + 128 * 1024
    return qcow2_output_size(units, virtual_size)


def disk_free(directory: Path) -> int:
    """Bytes an unprivileged user can still write on ``directory``'s file system."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class SourceIdentity:
    """What says the source is the one a journal was written for."""

    path: str
    size: int
    mtime_ns: int
    format: str

    @classmethod
    def of(cls, path: Path, fmt: DiskFormat) -> SourceIdentity:
        st = path.stat()
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
        return cls(str(path.resolve()), size, st.st_mtime_ns, fmt)


@dataclass
class Journal:
    """What a resumed conversion needs: whose output this is, where the last
    checkpoint is, and the digests of the segments before it."""

    source: SourceIdentity
    dst_format: str
    virtual_size: int
    segment: int
    algorithm: str
    stage: Stage
    checkpoint: Checkpoint
    segments: dict[int, str] = field(default_factory=dict)
    version: int = JOURNAL_VERSION

    def save(self, path: Path) -> None:
        record = asdict(self)
        record["segments"] = {str(k): v for k, v in self.segments.items()}
        temp = path.with_name(path.name + ".new")
        with temp.open("w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """The journal at ``path``; None when there is none or it is unreadable
        (then the conversion starts over)."""
        try:
            record = json.loads(path.read_text())
            if record.get("version") != JOURNAL_VERSION:
                return None
            cp = record["checkpoint"]
            return cls(
                source=SourceIdentity(**record["source"]),
                dst_format=record["dst_format"],
                virtual_size=int(record["virtual_size"]),
                segment=int(record["segment"]),
                algorithm=record["algorithm"],
                stage=record["stage"],
                checkpoint=Checkpoint(int(cp["virtual"]), cp["size"], dict(cp["state"])),
                segments={int(k): str(v) for k, v in record["segments"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class ConvertResult:
    """A finished conversion: where, how big, and the content digest."""

    path: Path
    format: DiskFormat
    virtual_size: int
    size: int
    digest: str
    resumed_from: int
    verified: bool


def _part_paths(dst: Path) -> tuple[Path, Path]:
    part = dst.with_name(dst.name + ".part")
    return part, dst.with_name(dst.name + ".part.journal")


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".new").unlink(missing_ok=True)


def convert(
    src_path: str | Path,
    src_fmt: DiskFormat | None,
    dst_path: str | Path,
    dst_fmt: DiskFormat,
    *,
    progress: Progress = no_progress,
    resume: bool = True,
    verify: bool = True,
    free_space: FreeSpace = disk_free,
    segment: int = SEGMENT,
    checkpoint_every: int = CHECKPOINT_EVERY,
    algorithm: str = DIGEST,
) -> ConvertResult:
    """Convert the image at ``src_path`` into a new ``dst_fmt`` image at ``dst_path``.

    ``progress`` counts bytes of the virtual size copied plus, with ``verify``,
    bytes read back (so its total is twice the virtual size; a raw output is read
    back while it is written, the others after). ``resume``
    False starts over even when a matching journal is there. ``free_space``
    says how much room a directory has (replaceable for tests)."""
    src, dst = Path(src_path), Path(dst_path)
    if os.path.lexists(dst):
        raise UsageError(
            f"{dst} already exists",
            hint="a conversion never overwrites: remove it, or choose another destination",
        )
    if not dst.parent.is_dir():
        raise UsageError(f"{dst.parent} is not a directory", hint="create it first")
    if dst_fmt not in FORMATS:
        raise UsageError(f"unknown disk format {dst_fmt!r}", hint=f"use one of: {FORMATS}")
    src_fmt = detect_format(src) if src_fmt is None else src_fmt
    reader = open_reader(src, src_fmt)
    try:
        identity = SourceIdentity.of(src, src_fmt)
        return _Conversion(
            reader, identity, dst, dst_fmt, segment, checkpoint_every, algorithm
        ).run(progress=progress, resume=resume, verify=verify, free_space=free_space)
    finally:
        reader.close()


class _Conversion:
    """One run of ``convert``, from the lock on ``.part`` to the rename."""

    def __init__(
        self,
        reader: DiskReader,
        identity: SourceIdentity,
        dst: Path,
        fmt: DiskFormat,
        segment: int,
        checkpoint_every: int,
        algorithm: str,
    ) -> None:
        self.reader = reader
        self.identity = identity
        self.dst = dst
        self.fmt = fmt
        self.size = reader.virtual_size
        writer_unit = {"raw": 1, "vhd": BLOCK, "vmdk": GT_SPAN, "qcow2": 1}[fmt]
        self.segment = -(-max(segment, CHUNK) // writer_unit) * writer_unit
        self.segment = -(-self.segment // CHUNK) * CHUNK
        self.checkpoint_every = checkpoint_every
        self.algorithm = algorithm
        self.part, self.journal_path = _part_paths(dst)

    def _journal(self, stage: Stage, checkpoint: Checkpoint, segments: dict[int, str]) -> Journal:
        return Journal(
            source=self.identity,
            dst_format=self.fmt,
            virtual_size=self.size,
            segment=self.segment,
            algorithm=self.algorithm,
            stage=stage,
            checkpoint=checkpoint,
            segments=segments,
        )

    def _resumable(self, resume: bool) -> Journal | None:
        journal = Journal.load(self.journal_path) if resume else None
        if journal is None or not self.part.exists():
            return None
        expected = self._journal(journal.stage, journal.checkpoint, journal.segments)
        return journal if journal == expected else None

    def run(
        self, *, progress: Progress, resume: bool, verify: bool, free_space: FreeSpace
    ) -> ConvertResult:
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise UsageError(
                    f"another conversion is writing {self.part}",
                    hint="wait for it to finish, or stop it first",
                ) from exc
            journal = self._resumable(resume)
            if journal is None:
                if os.fstat(fd).st_size:  # ext4 flushes a file cut to 0 on close: only if needed
                    os.ftruncate(fd, 0)
                _remove(self.journal_path)
            try:
                self._check_space(journal, free_space)
            except UsageError:
                if journal is None:  # nothing of ours to keep for a later run
                    _remove(self.part)
                raise
            return self._write(fd, journal, progress, verify)
        finally:
            os.close(fd)

    def _check_space(self, journal: Journal | None, free_space: FreeSpace) -> None:
        allocation = getattr(self.reader, "allocation", self.reader.extents)
        need = estimate_output(self.fmt, self.size, allocation())
        if journal is not None:
            need = max(need - self.part.stat().st_size, 0) if journal.stage == "copy" else 0
        free = free_space(self.dst.parent)
        if need > free:
            raise UsageError(
                f"not enough space for {self.dst}: the {self.fmt} image needs up to "
                f"{_size(need)} ({need} bytes), {self.dst.parent} has {_size(free)} "
                f"({free} bytes) free",
                hint="free some space there, or convert onto another file system",
            )

    def _write(
        self, fd: int, journal: Journal | None, progress: Progress, verify: bool
    ) -> ConvertResult:
        total = self.size * (2 if verify else 1)
        start = 0 if journal is None else journal.checkpoint.virtual
        writer: ResumableWriter | None = None
        out: BinaryIO | None = None
        watched: _Watched | None = None
        readback: _ReadBack | None = None
        checking: ThreadPoolExecutor | None = None
        reading: Future[dict[int, str]] | None = None
        try:
            if verify and self.fmt == "raw":
                readback = _ReadBack(self.part, self.size, self.segment, self.algorithm)
            if journal is None or journal.stage == "copy":
                if journal is not None and journal.checkpoint.size is not None:
                    os.ftruncate(fd, journal.checkpoint.size)
                out, writer = self._writer(journal)
                watched = out if isinstance(out, _Watched) else None
                digest = ContentDigest(
                    self.size,
                    self.segment,
                    algorithm=self.algorithm,
                    start=start,
                    segments=None if journal is None else journal.segments,
                )
                progress(start, total)
                if readback is not None:
                    self._hand_over(readback, watched, start)  # what an earlier run wrote
                try:
                    self._copy(writer, out, fd, digest, start, progress, total, readback)
                    segments = digest.segments
                finally:
                    digest.close()
                writer.finish()
                if out is not None:
                    out.close()
                    out = None
                if readback is not None:
                    readback.upto(self.size)  # read on while the fsync waits for the disk
                    if watched is not None and watched.touched is not None:
                        readback.again(watched.touched)
                elif verify:
                    # Read the finished image back while the fsync waits for the disk:
                    # both see the same page cache, so the result is the same.
                    checking = ThreadPoolExecutor(1, "verify")
                    reading = checking.submit(self._read_back, progress, total)
                os.fsync(fd)
                done = Checkpoint(self.size, None)
                self._journal("written", done, segments).save(self.journal_path)
            else:
                segments = journal.segments
                progress(self.size, total)
                if readback is not None:
                    readback.upto(self.size)
            expected = ContentDigest(
                self.size, self.segment, algorithm=self.algorithm, segments=segments, worker=False
            )
            if readback is not None:
                got = readback.result(lambda done: progress(self.size + done, total))
                self._check_length(os.fstat(fd).st_size)
                self._compare(got, expected.segments)
            elif verify:
                got = self._read_back(progress, total) if reading is None else reading.result()
                self._compare(got, expected.segments)
            self._into_place()
        except _Kept:
            raise
        except Exception:
            if writer is not None:
                writer.close()
            if out is not None:
                out.close()
            _remove(self.part, self.journal_path)
            raise
        except BaseException:
            if writer is not None:
                writer.close()
            if out is not None:
                out.close()
            raise
        finally:
            if readback is not None:
                readback.close()
            if checking is not None:
                checking.shutdown(wait=True, cancel_futures=True)
        return ConvertResult(
            path=self.dst,
            format=self.fmt,
            virtual_size=self.size,
            size=self.dst.stat().st_size,
            digest=expected.hexdigest(),
            resumed_from=start,
            verified=verify,
        )

    def _writer(self, journal: Journal | None) -> tuple[BinaryIO, ResumableWriter]:
        raw = self.fmt == "raw"
        out: BinaryIO = _Watched(io.FileIO(self.part, "r+")) if raw else self.part.open("r+b")
        try:
            if journal is None:
                return out, open_writer(out, self.fmt, self.size, name=self.dst.name)
            out.seek(0, os.SEEK_END)
            return out, _resume_writer(out, self.fmt, self.size, journal.checkpoint)
        except BaseException:
            out.close()
            raise

    @staticmethod
    def _hand_over(readback: _ReadBack, watched: _Watched | None, at: int) -> None:
        """Have everything below ``at`` read back (it is all written), and any
        later write there noted."""
        if watched is not None:
            watched.flush()
            watched.sealed = max(watched.sealed, at)
        readback.upto(at)

    def _copy(
        self,
        writer: ResumableWriter,
        out: BinaryIO,
        fd: int,
        digest: ContentDigest,
        start: int,
        progress: Progress,
        overall: int,
        readback: _ReadBack | None = None,
    ) -> None:
        mark = flushed = digest.data_bytes
        writeback = ThreadPoolExecutor(1, "writeback")
        pending: Future[None] | None = None
        watched = out if isinstance(out, _Watched) else None

        def boundary(at: int) -> None:
            """Checkpoint now and then; hand each whole segment over to be read back."""
            nonlocal mark, flushed
            if at < self.size and digest.data_bytes - mark >= self.checkpoint_every:
                checkpoint = writer.checkpoint(at)
                out.flush()
                os.fsync(fd)
                self._journal("copy", checkpoint, digest.before(at)).save(self.journal_path)
                mark = flushed = digest.data_bytes
            if readback is not None:
                self._hand_over(readback, watched, at)

        def step(done: int, total: int) -> None:
            """Between checkpoints, have what was written go to disk on a worker
            (fdatasync) while the copy goes on, so the final fsync finds little."""
            nonlocal flushed, pending
            if digest.data_bytes - flushed >= WRITEBACK_EVERY and (
                pending is None or pending.done()
            ):
                out.flush()
                pending = writeback.submit(os.fdatasync, fd)
                flushed = digest.data_bytes
            progress(done if readback is None else done + readback.done, overall)

        try:
            copy(
                self.reader,
                writer,
                progress=step,
                start=start,
                digest=digest,
                boundary=boundary,
                segment=self.segment,
            )
        finally:
            writeback.shutdown(wait=True)

    def _check_length(self, length: int) -> None:
        if length != self.size and not (self.fmt == "qcow2" and 0 < length - self.size < 512):
            raise OperationFailed(
                f"verification failed: {self.part} reads as {length} bytes, "
                f"the source has {self.size}",
                hint="this is a bug in xenkit's writer; please report it",
            )

    def _compare(self, got: Mapping[int, str], expected: Mapping[int, str]) -> None:
        for index in sorted(set(got) | set(expected)):
            if got.get(index) != expected.get(index):
                lo, hi = index * self.segment, min((index + 1) * self.segment, self.size)
                raise OperationFailed(
                    f"verification failed: what {self.part} holds in bytes {lo}..{hi} is "
                    "not what was read from the source",
                    hint="the output was removed; check the destination disk for errors "
                    "and convert again (if it happens again, it is a bug in xenkit)",
                )

    def _read_back(self, progress: Progress, total: int) -> dict[int, str]:
        """The digests of the finished output, read back through its format's reader."""
        reader = open_reader(self.part, self.fmt)
        try:
            self._check_length(reader.virtual_size)
            got = ContentDigest(self.size, self.segment, algorithm=self.algorithm)
            try:
                copy(
                    _Clipped(reader, self.size),
                    None,
                    progress=lambda done, _: progress(self.size + done, total),
                    digest=got,
                )
                got.segments  # noqa: B018 (waits for the worker)
            finally:
                got.close()
        finally:
            reader.close()
        return got.segments

    def _into_place(self) -> None:
        """Link ``.part`` to the destination (which must still not exist), then
        drop ``.part`` and the journal."""
        try:
            os.link(self.part, self.dst)
        except FileExistsError as exc:
            raise _Kept(
                f"{self.dst} appeared while converting; the verified result stays in {self.part}",
                hint="remove the other file and run the same conversion again: it only renames",
            ) from exc
        except OSError:
            if os.path.lexists(self.dst):
                raise
            self.part.rename(self.dst)
        _remove(self.part, self.journal_path)
        dir_fd = os.open(self.dst.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _Kept(UsageError):
    """A refusal after which ``.part`` and its journal are kept."""


class _Clipped:
    """A reader seen only up to ``size`` (qemu rounds a qcow2 up to a sector)."""

    def __init__(self, reader: DiskReader, size: int) -> None:
        self._reader = reader
        self.virtual_size = size

    def extents(self) -> Iterator[Extent]:
        for ext in self._reader.extents():
            if ext.offset >= self.virtual_size:
                return
            yield Extent(ext.offset, min(ext.end, self.virtual_size) - ext.offset, ext.zero)

    def read(self, offset: int, length: int) -> bytes:
        return self._reader.read(offset, length)

    def close(self) -> None:
        self._reader.close()


class _Watched(io.BufferedRandom):
    """A raw output file that notes a write below ``sealed`` (what was handed
    over to be read back): ``touched`` is the lowest such offset."""

    sealed = 0
    touched: int | None = None

    def _note(self, at: int) -> None:
        if at < self.sealed:
            self.touched = at if self.touched is None else min(self.touched, at)

    def write(self, buffer: ReadableBuffer, /) -> int:
        self._note(self.tell())
        return super().write(buffer)

    def truncate(self, pos: int | None = None, /) -> int:
        self._note(self.tell() if pos is None else pos)
        return super().truncate(pos)


class _Stopped(Exception):
    """The read-back was closed before it was done."""


class _ReadBack:
    """A raw output read back on a worker thread, a range of whole segments at a
    time as ``upto`` hands them over, into per-segment digests (``result``).

    The file system's holes are zeros and are not read; every grain with data in
    it is read whole, once, into one reused buffer, and hashed as it is. Bytes
    past the file's end read as zeros: a raw writer's ``finish`` sets the length,
    which the caller checks."""

    def __init__(self, path: Path, size: int, segment: int, algorithm: str) -> None:
        self.size = size
        self.segment = segment
        self.algorithm = algorithm
        self.handed = 0
        """Everything below was handed over."""
        self.read = 0
        """Bytes read back (or known to be holes) by the worker."""
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._buffer = bytearray(CHUNK)
        self._stop = threading.Event()
        self._worker = ThreadPoolExecutor(1, "read-back")
        self._queue: deque[tuple[int, int, Future[dict[int, str]]]] = deque()
        self._segments: dict[int, str] = {}

    @property
    def done(self) -> int:
        """Bytes of the virtual size read back so far (for progress)."""
        return min(self.read, self.size)

    def upto(self, end: int) -> None:
        """Read back what is below ``end`` and not handed over yet."""
        if end > self.handed:
            self._submit(self.handed, end)
            self.handed = end
        self._collect(until=None)

    def again(self, at: int) -> None:
        """Read back again the segments from ``at``'s on (written after they were read)."""
        lo = at // self.segment * self.segment
        if lo < self.handed:
            self._submit(lo, self.handed)

    def result(self, progress: Callable[[int], None]) -> dict[int, str]:
        """The digests of the segments handed over, once they are read back;
        ``progress(done)`` now and then while waiting."""
        while self._queue:
            progress(self.done)
            self._collect(until=0.25)
        progress(self.done)
        return self._segments

    def close(self) -> None:
        self._stop.set()
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _submit(self, lo: int, hi: int) -> None:
        self._queue.append((lo, hi, self._worker.submit(self._digests, lo, hi)))

    def _collect(self, until: float | None) -> None:
        """Take in the ranges read back, in the order they were handed over
        (a range read again replaces what it covers); ``until`` seconds (None:
        not at all) to wait for the next one."""
        if until is not None and self._queue:
            wait([self._queue[0][2]], timeout=until, return_when=FIRST_COMPLETED)
        while self._queue and self._queue[0][2].done():
            lo, hi, future = self._queue.popleft()
            got = future.result()
            for index in range(lo // self.segment, -(-hi // self.segment)):
                self._segments.pop(index, None)
            self._segments.update(got)

    def _digests(self, lo: int, hi: int) -> dict[int, str]:
        """On the worker: the digests of the segments in ``[lo, hi)``."""
        digest = ContentDigest(
            self.size, self.segment, algorithm=self.algorithm, start=lo, worker=False
        )
        buffer, pos = self._buffer, lo
        for ext in allocated(self._fd, lo, hi):
            if ext.zero:
                continue
            grain = max(ext.offset // CHUNK * CHUNK, pos)
            while grain < ext.end:
                if self._stop.is_set():
                    raise _Stopped
                if grain > pos:
                    digest.zero(pos, grain - pos)
                end = min(grain + CHUNK, hi)
                piece = buffer if end - grain == CHUNK else bytearray(end - grain)
                self._fill(piece, grain)
                digest.data(grain, piece)
                self.read += end - pos
                pos = grain = end
        if pos < hi:
            digest.zero(pos, hi - pos)
            self.read += hi - pos
        return digest.segments

    def _fill(self, piece: bytearray, offset: int) -> None:
        """``piece`` from the file at ``offset``, zeros past its end."""
        got = 0
        with memoryview(piece) as view:
            while got < len(piece):
                n = os.preadv(self._fd, [view[got:]], offset + got)
                if n == 0:
                    view[got:] = bytes(len(piece) - got)
                    return
                got += n
