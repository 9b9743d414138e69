"""Each motion direction as one whole job: files in, files out, nothing half-written.

A job reads its source into a :class:`VmSpec`, writes every output beside its final
name (``NAME.part``) and renames them all only when everything is written and
flushed, so a failure, a ``--strict`` loss or Ctrl-C leaves no output behind. What
could not be carried is in the result's ``losses``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

from xenkit.config import ConfigError, load_config
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import (
    CHUNK,
    DiskReader,
    DiskWriter,
    Extent,
    Progress,
    no_progress,
)
from xenkit.motion.disk.convert import copy, disk_free, estimate_output, open_reader, open_writer
from xenkit.motion.disk.vhd import VhdReader
from xenkit.motion.disk.vmdk import VmdkReader
from xenkit.motion.model import DiskFormat, DiskRef, Losses, VmSpec
from xenkit.motion.xl import spec_from_xl, xl_text

OutFormat = Literal["raw", "qcow2", "vhd", "vmdk"]
EXTENSIONS: dict[str, str] = {"raw": "img", "qcow2": "qcow2", "vhd": "vhd", "vmdk": "vmdk"}


@dataclass
class MotionResult:
    direction: str
    name: str
    outputs: list[str]
    losses: Losses
    seconds: float
    bytes_written: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "name": self.name,
            "outputs": self.outputs,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "losses": self.losses.to_json(),
            "notes": self.notes,
        }


# -- the pieces every job uses -------------------------------------------------------


def read_xl(cfg: Path, losses: Losses) -> VmSpec:
    """The VM of an xl.cfg, with each disk's virtual size read from its image."""
    if not cfg.is_file():
        raise UsageError(f"{cfg} is not a file", hint="give the path of an xl domain config")
    try:
        config = load_config(str(cfg))
    except ConfigError as exc:
        raise UsageError(f"{cfg}: {exc}", hint="check it with: xenkit config check") from exc
    spec = spec_from_xl(config, base=cfg.resolve().parent, losses=losses)
    disks = []
    for d in spec.disks:
        if d.cdrom or not d.path:
            disks.append(d)
            continue
        with closing(open_reader(d.path, d.format)) as reader:
            disks.append(dataclasses.replace(d, virtual_size=reader.virtual_size))
    return dataclasses.replace(spec, disks=tuple(disks))


@contextlib.contextmanager
def closing(reader: DiskReader) -> Iterator[DiskReader]:
    try:
        yield reader
    finally:
        reader.close()


@contextlib.contextmanager
def disk_readers(spec: VmSpec) -> Iterator[list[tuple[DiskRef, DiskReader]]]:
    """Readers of the spec's disks that have an image (not empty CD drives)."""
    opened: list[tuple[DiskRef, DiskReader]] = []
    try:
        for d in spec.disks:
            if d.path and not (d.cdrom and not Path(d.path).exists()):
                opened.append((d, open_reader(d.path, d.format)))
        yield opened
    finally:
        for _, reader in opened:
            reader.close()


def check_space(directory: Path, needed: int, what: str) -> None:
    free = disk_free(directory)
    if needed > free:
        raise UsageError(
            f"{what} needs {_mib(needed)} and {directory} has {_mib(free)} free",
            hint="free some space there, or write somewhere else",
        )


def needed_bytes(readers: Sequence[tuple[DiskRef, DiskReader]], fmt: DiskFormat) -> int:
    return sum(estimate_output(fmt, r.virtual_size, iter(r.extents())) for _, r in readers)


class Outputs:
    """The files a job writes: each as ``.part`` until ``commit`` renames them all."""

    def __init__(self) -> None:
        self.parts: dict[Path, Path] = {}

    def new(self, final: Path) -> Path:
        if os.path.lexists(final) or final in self.parts:
            raise UsageError(
                f"{final} already exists",
                hint="motion never overwrites: remove it, or choose another place",
            )
        part = final.with_name(final.name + ".part")
        part.unlink(missing_ok=True)
        self.parts[final] = part
        return part

    def commit(self) -> list[str]:
        for final, part in self.parts.items():
            part.replace(final)
        done = [str(p) for p in self.parts]
        self.parts = {}
        return done

    def abort(self) -> None:
        for part in self.parts.values():
            part.unlink(missing_ok=True)
        self.parts = {}

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class FileDisk:
    """A DiskWriter into a new file, flushed to the disk when finished."""

    def __init__(self, path: Path, fmt: DiskFormat, virtual_size: int) -> None:
        self.path = path
        self._file: BinaryIO = path.open("w+b")
        self._writer = open_writer(self._file, fmt, virtual_size, name=path.name)

    def write(self, offset: int, data: bytes) -> None:
        self._writer.write(offset, data)

    def finish(self) -> int:
        size = self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return size


def write_config(outs: Outputs, directory: Path, spec: VmSpec, source: str) -> Path:
    cfg = directory / f"{spec.name}.cfg"
    part = outs.new(cfg)
    part.write_text(xl_text(spec, comment=f"written by xenkit motion from {source}"))
    return cfg


def _out_dir(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory", hint="give a directory for --out")
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()  # xl reads relative targets from its own cwd


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _fsync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


# -- XVA ---------------------------------------------------------------------------


def to_xva(
    cfg: Path,
    out: Path,
    *,
    checksum: Literal["sha1", "xxhash"] = "sha1",
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    from xenkit.motion.xva import write_xva

    start = time.monotonic()
    losses = Losses(strict=strict)
    spec = read_xl(cfg, losses)
    with disk_readers(spec) as readers, Outputs() as outs:
        part = outs.new(out)
        check_space(out.parent, needed_bytes(readers, "raw"), f"the XVA of {spec.name}")
        data = [r for d, r in readers if not d.cdrom]
        with part.open("wb") as f:
            size = write_xva(spec, data, f, checksum=checksum, losses=losses, progress=progress)
            _fsync(f)
        done = outs.commit()
    return MotionResult("to-xva", spec.name, done, losses, time.monotonic() - start, size)


def from_xva(
    src: Path,
    out_dir: Path,
    *,
    disk_format: OutFormat = "raw",
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    from xenkit.motion.xva import read_xva

    start = time.monotonic()
    losses = Losses(strict=strict)
    directory = _out_dir(out_dir)
    _readable(src)
    with Outputs() as outs:

        def place(d: DiskRef) -> DiskRef:
            final = directory / f"{d.vdev}.{EXTENSIONS[disk_format]}"
            return dataclasses.replace(d, path=str(final), format=disk_format)

        def sink_for(d: DiskRef) -> DiskWriter:
            return FileDisk(outs.new(Path(d.path)), disk_format, d.virtual_size)

        with src.open("rb") as f:
            spec = read_xva(f, sink_for=sink_for, losses=losses, progress=progress, place=place)
        write_config(outs, directory, spec, str(src))
        done = outs.commit()
    return MotionResult("from-xva", spec.name, done, losses, time.monotonic() - start)


def _readable(src: Path) -> None:
    if not src.is_file():
        raise UsageError(f"{src} is not a file", hint="check the path")


# -- OVF / OVA ------------------------------------------------------------------------


def to_ova(
    cfg: Path,
    out: Path,
    *,
    disk_format: Literal["vmdk", "vhd", "qcow2"] = "vmdk",
    version: Literal["1.0", "2.0"] = "1.0",
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    from xenkit.motion.ovf import write_ova

    start = time.monotonic()
    losses = Losses(strict=strict)
    spec = read_xl(cfg, losses)
    if os.path.lexists(out):
        raise UsageError(f"{out} already exists", hint="motion never overwrites: remove it first")
    with disk_readers(spec) as readers:
        check_space(out.parent, needed_bytes(readers, disk_format), f"the OVA of {spec.name}")
        members = write_ova(
            spec, readers, out, disk_format=disk_format, version=version, losses=losses,
            progress=progress,
        )  # fmt: skip
    size = out.stat().st_size
    result = MotionResult("to-ova", spec.name, [str(out)], losses, time.monotonic() - start, size)
    result.notes = [f"member {m.name}: {m.size} bytes" for m in members]
    return result


def from_ova(
    src: Path,
    out_dir: Path,
    *,
    disk_format: OutFormat = "raw",
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    """An OVA (a tar) or an OVF (its disks beside it) into an xl.cfg and disk images."""
    from xenkit.motion.ovf import read_ova, read_ovf

    start = time.monotonic()
    losses = Losses(strict=strict)
    directory = _out_dir(out_dir)
    _readable(src)
    package = tarlike(src)
    with Outputs() as outs:

        def sink(disk: DiskRef, stream: BinaryIO | None) -> DiskRef:
            final = directory / f"{disk.vdev}.{EXTENSIONS[disk_format]}"
            part = outs.new(final)
            reader = _stream_reader(disk, stream)
            size = reader.virtual_size if reader is not None else disk.virtual_size
            writer = FileDisk(part, disk_format, size)
            try:
                if reader is not None:
                    copy(reader, writer, progress=progress)
            finally:
                writer.finish()
                if reader is not None:
                    reader.close()
            return dataclasses.replace(disk, path=str(final), format=disk_format, virtual_size=size)

        read = read_ova if package else read_ovf
        spec = read(src, sink_for=sink, losses=losses, progress=progress)
        write_config(outs, directory, spec, str(src))
        done = outs.commit()
    direction = "from-ova" if package else "from-ovf"
    return MotionResult(direction, spec.name, done, losses, time.monotonic() - start)


def tarlike(path: Path) -> bool:
    """An OVA is a tar (``ustar`` at byte 257); an OVF is XML."""
    with path.open("rb") as f:
        head = f.read(512)
    return head[257:262] == b"ustar"


def _stream_reader(disk: DiskRef, stream: BinaryIO | None) -> DiskReader | None:
    if stream is None:
        return None
    name = f"{disk.path} in the package"
    if disk.format == "vmdk":
        return VmdkReader(stream, name=name)
    if disk.format == "vhd":
        return VhdReader(stream, name=name)
    if disk.format == "raw":
        return StreamRawReader(stream)
    if disk.format == "qcow2":
        return _qcow2_member(stream, name)
    raise UsageError(
        f"{disk.path}: {disk.format} disks inside a package are not read here",
        hint="extract it, then convert it with qemu-img convert",
    )


def _qcow2_member(stream: BinaryIO, name: str) -> DiskReader:
    """A qcow2 member read where it is, when xenkit's own reader can read it (what
    xenkit and qemu-img write); else through qemu, from a scratch copy."""
    from xenkit.motion.disk.qemu import NeedsQemu, Qcow2Reader

    try:
        return Qcow2Reader(stream, name=name)
    except NeedsQemu:
        return Qcow2FromStream(stream)


class Qcow2FromStream:
    """A qcow2 member that only qemu can read (compressed with zstd, say): qemu
    reads images from files, so the member is copied to a scratch file first (as
    large as the member, not as the disk)."""

    def __init__(self, stream: BinaryIO) -> None:
        import tempfile

        from xenkit.motion.disk.qemu import open_qcow2

        fd, name = tempfile.mkstemp(prefix="xenkit-ova-", suffix=".qcow2")
        self._scratch = Path(name)
        with os.fdopen(fd, "wb") as f:
            stream.seek(0)
            while chunk := stream.read(CHUNK):
                f.write(chunk)
        self._reader = open_qcow2(self._scratch)

    @property
    def virtual_size(self) -> int:
        return self._reader.virtual_size

    def extents(self) -> Iterator[Any]:
        return self._reader.extents()

    def read(self, offset: int, length: int) -> bytes:
        return self._reader.read(offset, length)

    def close(self) -> None:
        self._reader.close()
        self._scratch.unlink(missing_ok=True)


class StreamRawReader:
    """A raw image in a seekable stream (a tar member): all data, zeros found by
    reading, since a member has no holes to ask about."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._size = stream.seek(0, os.SEEK_END)

    @property
    def virtual_size(self) -> int:
        return self._size

    def extents(self) -> Iterator[Extent]:
        if self._size:
            yield Extent(0, self._size, False)

    def read(self, offset: int, length: int) -> bytes:
        self._stream.seek(offset)
        return self._stream.read(length)

    def close(self) -> None:
        """The stream belongs to the package reader."""


def check_output_format(fmt: str) -> OutFormat:
    if fmt not in EXTENSIONS:
        raise UsageError(f"unknown disk format {fmt!r}", hint="use raw, qcow2, vhd or vmdk")
    return fmt  # type: ignore[return-value]


# -- XenAPI ----------------------------------------------------------------------------


def to_xapi(
    cfg: Path,
    pool: str,
    *,
    username: str | None,
    password: str | None,
    sr: str | None = None,
    networks: Sequence[str] = (),
    upload: Literal["auto", "raw", "vhd"] = "auto",
    verify_tls: bool = True,
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    from xenkit.motion.xapi import Credentials, PoolTarget
    from xenkit.motion.xapi import to_xapi as create_in_pool

    start = time.monotonic()
    losses = Losses(strict=strict)
    spec = read_xl(cfg, losses)
    target = PoolTarget(pool, Credentials.resolve(username, password), verify_tls=verify_tls)
    done = create_in_pool(
        spec, target, open_disk=lambda d: open_reader(d.path, d.format), sr=sr,
        networks=networks, upload=upload, losses=losses, progress=progress,
    )  # fmt: skip
    result = MotionResult("to-xapi", spec.name, [f"VM {done.vm_uuid}"], losses,
                          time.monotonic() - start)  # fmt: skip
    result.outputs += [f"VDI {uuid} ({vdev})" for vdev, uuid in done.vdis.items()]
    result.notes = [*done.warnings, f"SR {done.sr.name_label} ({done.sr.uuid})"]
    return result


def from_xapi(
    vm: str,
    pool: str,
    out_dir: Path,
    *,
    username: str | None,
    password: str | None,
    disk_format: OutFormat = "raw",
    force: bool = False,
    verify_tls: bool = True,
    strict: bool = False,
    progress: Progress = no_progress,
) -> MotionResult:
    """The pool exports raw or VHD; a qcow2 is made from the raw export, then it goes."""
    from xenkit.motion.disk.convert import convert
    from xenkit.motion.xapi import Credentials, PoolTarget
    from xenkit.motion.xapi import from_xapi as export_from_pool

    start = time.monotonic()
    losses = Losses(strict=strict)
    directory = _out_dir(out_dir)
    target = PoolTarget(pool, Credentials.resolve(username, password), verify_tls=verify_tls)
    wire: Literal["raw", "vhd"] = "vhd" if disk_format == "vhd" else "raw"
    done = export_from_pool(
        vm, target, directory, disk_format=wire, open_writer=open_writer, force=force,
        losses=losses, progress=progress,
    )  # fmt: skip
    outputs = [str(done.config), *map(str, done.disks.values())]
    if disk_format == "qcow2":
        outputs = [str(done.config)]
        spec = done.spec
        disks = []
        for d in spec.disks:
            raw = done.disks.get(d.vdev)
            if raw is None:
                disks.append(d)
                continue
            qcow2 = raw.with_suffix(".qcow2")
            convert(raw, "raw", qcow2, "qcow2", progress=progress)
            raw.unlink()
            outputs.append(str(qcow2))
            disks.append(dataclasses.replace(d, path=str(qcow2), format="qcow2"))
        spec = dataclasses.replace(spec, disks=tuple(disks))
        done.config.write_text(xl_text(spec, comment=f"written by xenkit motion from {pool}"))
    result = MotionResult("from-xapi", done.spec.name, outputs, losses, time.monotonic() - start)
    result.notes = list(done.warnings)
    return result
