"""OVA and directory-OVF packages: writing one from a VmSpec and disk readers,
reading one into a VmSpec with its disks handed to the caller.

Writing, in one pass, with no disk copied to a temporary file. The members
must be ``.ovf``, ``.mf``, then the disks, but the ``.ovf`` names each disk
file's size and the ``.mf`` holds every digest, and neither is known before
the disks are written. So:

1. a draft envelope is made with every file size written as 20 nines, the
   widest a size can be; the real one can only be shorter. The manifest's
   length is known from the member names alone;
2. room for both headers and both, padded to 512 bytes, is left at the start;
3. each disk is written after it: a placeholder header, then the image through
   the disk writer into the archive itself, digested as it goes by; then the
   header is rewritten with the size;
4. the end-of-archive blocks;
5. the room is filled: the real ``.ovf`` is padded with trailing blanks (XML
   allows white space after the root) to exactly the draft's padded length,
   so the ``.mf`` lands where room was left, and ends flush with the first
   disk's header.

The archive is written as ``<out>.part`` and renamed when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Protocol, cast
from urllib.parse import unquote

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.motion.disk.base import DiskReader, DiskWriter, Progress, no_progress
from xenkit.motion.model import DiskFormat, DiskRef, Losses, VmSpec
from xenkit.motion.ovf import manifest, tarfmt, vocab
from xenkit.motion.ovf.envelope import OvfFile, OvfVersion, envelope_xml
from xenkit.motion.ovf.manifest import Digest
from xenkit.motion.ovf.reader import OvfFileRef, parse_envelope
from xenkit.motion.ovf.streams import CHUNK, MemberSink, MemberSource

WriterFactory = Callable[[BinaryIO, DiskFormat, int], DiskWriter]
_WIDEST_SIZE = 10**20 - 1


class DiskSink(Protocol):
    """Told a disk of the package and a stream of its image (None: a blank
    disk of ``disk.virtual_size`` bytes to create); returns where the caller
    put it — its ``path``, ``format`` and ``virtual_size`` are taken."""

    def __call__(self, disk: DiskRef, stream: BinaryIO | None) -> DiskRef: ...


@dataclass(frozen=True)
class PackageMember:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class _Planned:
    disk: DiskRef
    reader: DiskReader
    member: str
    format: DiskFormat
    format_uri: str
    populated: int


def _default_writer_factory() -> WriterFactory:
    try:
        module = importlib.import_module("xenkit.motion.disk.convert")
    except ImportError:
        raise OperationFailed(
            "no disk writers: xenkit.motion.disk.convert is missing",
            hint="this xenkit is incomplete; reinstall it",
        ) from None
    return cast(WriterFactory, module.open_writer)


def _member_base(out_path: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", out_path.stem)[:60].strip("._")
    return base or "vm"


def write_ova(
    spec: VmSpec,
    disks: Sequence[tuple[DiskRef, DiskReader]],
    out_path: Path,
    *,
    disk_format: DiskFormat = "vmdk",
    version: OvfVersion = "1.0",
    losses: Losses,
    progress: Progress = no_progress,
    open_writer: WriterFactory | None = None,
) -> list[PackageMember]:
    """Write ``spec`` as an OVA whose disks are read from ``disks`` (matched to
    ``spec.disks`` by vdev; CD images go in raw, as ISO) and converted to
    ``disk_format`` (streamOptimized VMDK by default, which VMware and
    VirtualBox import), VHD or qcow2. The readers are left open. Returns the
    members written, in order."""
    factory = open_writer or _default_writer_factory()
    base = _member_base(out_path)
    planned = _plan(spec, disks, base, disk_format)
    ovf_name, mf_name = f"{base}.ovf", f"{base}.mf"
    draft = envelope_xml(spec, _files(planned, None), version=version, losses=losses)
    ovf_room = tarfmt.padded(len(draft))
    mf_size = manifest.manifest_length([ovf_name] + [p.member for p in planned])
    room = tarfmt.BLOCK + ovf_room + tarfmt.BLOCK + tarfmt.padded(mf_size)
    part = out_path.with_name(out_path.name + ".part")
    mtime = int(time.time())
    try:
        with part.open("w+b") as out:
            members = _write_disks(out, room, planned, factory, mtime, progress)
            final = envelope_xml(spec, _files(planned, members), version=version, losses=Losses())
            if len(final) > ovf_room:
                raise OperationFailed(
                    f"the envelope grew from {len(draft)} to {len(final)} bytes",
                    hint="a bug in xenkit's OVA writer; nothing was written",
                )
            ovf = final + b" " * (ovf_room - len(final))
            ovf_member = PackageMember(ovf_name, len(ovf), _sha256(ovf))
            mf = manifest.manifest_text([(m.name, m.sha256) for m in (ovf_member, *members)])
            mf_member = PackageMember(mf_name, len(mf), _sha256(mf))
            out.seek(0)
            out.write(tarfmt.header(ovf_name, len(ovf), mtime) + ovf)
            out.write(tarfmt.header(mf_name, len(mf), mtime) + mf)
            out.write(bytes(tarfmt.padding(len(mf))))
            if out.tell() != room:
                raise OperationFailed(
                    f"the .ovf and .mf took {out.tell()} bytes, not {room}",
                    hint="a bug in xenkit's OVA writer; nothing was written",
                )
            out.flush()
            os.fsync(out.fileno())
        part.replace(out_path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return [ovf_member, mf_member, *members]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plan(
    spec: VmSpec,
    disks: Sequence[tuple[DiskRef, DiskReader]],
    base: str,
    disk_format: DiskFormat,
) -> list[_Planned]:
    if disk_format not in vocab.FORMAT_URIS:
        raise UsageError(f"disk format {disk_format!r}", hint="use vmdk, vhd, qcow2 or raw")
    readers: dict[str, DiskReader] = {}
    for disk, reader in disks:
        if disk.vdev in readers:
            raise UsageError(f"two images for disk {disk.vdev}")
        readers[disk.vdev] = reader
    unknown = set(readers) - {d.vdev for d in spec.disks}
    if unknown:
        raise UsageError(f"images for disks the VM does not have: {', '.join(sorted(unknown))}")
    planned = []
    for n, disk in enumerate(spec.disks, 1):
        image = readers.get(disk.vdev)
        if image is None:
            continue
        if disk.cdrom:
            fmt: DiskFormat = "raw"
            member, uri = f"{base}-cd{n}.iso", vocab.ISO_URI
        else:
            fmt = disk_format
            member = f"{base}-disk{n}.{vocab.FILE_EXTENSIONS[disk_format]}"
            uri = vocab.FORMAT_URIS[disk_format]
        populated = sum(e.length for e in image.extents() if not e.zero)
        planned.append(_Planned(disk, image, member, fmt, uri, populated))
    return planned


def _files(planned: list[_Planned], members: list[PackageMember] | None) -> list[OvfFile]:
    return [
        OvfFile(
            vdev=p.disk.vdev,
            href=p.member,
            size=_WIDEST_SIZE if members is None else members[i].size,
            capacity=p.reader.virtual_size,
            format_uri=p.format_uri,
            populated_size=p.populated,
        )
        for i, p in enumerate(planned)
    ]


def _write_disks(
    out: BinaryIO,
    start: int,
    planned: list[_Planned],
    factory: WriterFactory,
    mtime: int,
    progress: Progress,
) -> list[PackageMember]:
    total = sum(p.reader.virtual_size for p in planned)
    done = 0
    members = []
    pos = start
    for p in planned:
        out.seek(pos)
        out.write(tarfmt.header(p.member, 0, mtime))
        sink = MemberSink(out, pos + tarfmt.BLOCK)
        writer = factory(cast(BinaryIO, sink), p.format, p.reader.virtual_size)
        for extent in p.reader.extents():
            if not extent.zero:
                offset = extent.offset
                while offset < extent.end:
                    n = min(4 * CHUNK, extent.end - offset)
                    writer.write(offset, p.reader.read(offset, n))
                    offset += n
                    progress(done + offset, total)
            progress(done + extent.end, total)
        size, digest = sink.close_member(writer.finish())
        done += p.reader.virtual_size
        out.seek(pos)
        out.write(tarfmt.header(p.member, size, mtime))
        pos += tarfmt.BLOCK + tarfmt.padded(size)
        out.seek(pos - tarfmt.padding(size))
        out.write(bytes(tarfmt.padding(size)))
        members.append(PackageMember(p.member, size, digest))
    out.seek(pos)
    end = pos + len(tarfmt.END_OF_ARCHIVE)
    out.write(tarfmt.END_OF_ARCHIVE + bytes(-end % tarfmt.RECORD))
    return members


# Reading


@dataclass(frozen=True)
class _Member:
    name: str
    offset: int
    size: int


class _Package(Protocol):
    """What reading needs of an OVA or of a directory holding an OVF."""

    source: str

    def open(self, name: str) -> tuple[BinaryIO, int, int] | None: ...

    def missing(self, name: str) -> UsageError: ...


class _Ova:
    def __init__(self, path: Path, f: BinaryIO) -> None:
        self.source = str(path)
        self._f = f
        self.members, self.truncated = _scan_tar(f, self.source)
        self._by_name = {m.name: m for m in self.members}

    def open(self, name: str) -> tuple[BinaryIO, int, int] | None:
        m = self._by_name.get(_norm(name)) or self._by_name.get(_norm(unquote(name)))
        return None if m is None else (self._f, m.offset, m.size)

    def missing(self, name: str) -> UsageError:
        held = ", ".join(m.name for m in self.members) or "nothing"
        if self.truncated:
            return UsageError(
                f"{self.source}: truncated OVA: {name!r} is missing (the archive ends without "
                f"its end-of-archive blocks after {held})",
                hint="the OVA was cut short; fetch or export it again",
            )
        return UsageError(
            f"{self.source}: the OVF names {name!r} but the OVA holds only {held}",
            hint="the package is incomplete; export it again",
        )


class _Directory:
    def __init__(self, ovf_path: Path, stack: ExitStack) -> None:
        self.source = str(ovf_path)
        self._dir = ovf_path.parent
        self._stack = stack

    def open(self, name: str) -> tuple[BinaryIO, int, int] | None:
        if "://" in name or name.startswith("file:"):
            raise UsageError(
                f"{self.source}: file {name!r} is a URL", hint="download it next to the .ovf first"
            )
        path = self._dir / name
        if not path.is_file():
            path = self._dir / unquote(name)
        if not path.is_file():
            return None
        f = self._stack.enter_context(path.open("rb"))
        return f, 0, path.stat().st_size

    def missing(self, name: str) -> UsageError:
        return UsageError(
            f"{self.source}: the OVF names {name!r}, which is not in {self._dir}",
            hint="copy the OVF's disk files next to it",
        )


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _scan_tar(f: BinaryIO, source: str) -> tuple[list[_Member], bool]:
    """The regular members, and whether the archive looks cut short (no end
    blocks). A member running past the end of the file is refused here."""
    file_size = os.fstat(f.fileno()).st_size
    if file_size < tarfmt.BLOCK:
        raise UsageError(
            f"{source}: truncated OVA: {file_size} bytes, less than one tar header",
            hint="the OVA was cut short; fetch or export it again",
        )
    members: list[_Member] = []
    end = 0
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                end = info.offset_data + tarfmt.padded(info.size)
                if not info.isreg():
                    continue
                if info.offset_data + info.size > file_size:
                    missing = info.offset_data + info.size - file_size
                    raise UsageError(
                        f"{source}: truncated OVA: member {info.name!r} needs {info.size} bytes "
                        f"from offset {info.offset_data}; the file ends {missing} bytes short",
                        hint="the OVA was cut short; fetch or export it again",
                    )
                members.append(_Member(_norm(info.name), info.offset_data, info.size))
    except tarfile.TarError as e:
        raise UsageError(
            f"{source}: not a tar archive, so not an OVA ({e})",
            hint="an OVA is a tar of the .ovf, .mf and disk files",
        ) from None
    return members, file_size < end + tarfmt.BLOCK


def read_ova(
    path: Path,
    *,
    sink_for: DiskSink,
    losses: Losses,
    progress: Progress = no_progress,
    system: str | None = None,
) -> VmSpec:
    """The VM in the OVA at ``path``; each disk image is handed to ``sink_for``
    as a stream of the tar member (gzip-decompressed when the OVF says so)
    and checked against the manifest once the sink returns."""
    with ExitStack() as stack:
        f = stack.enter_context(path.open("rb"))
        package = _Ova(path, f)
        ovfs = [m for m in package.members if m.name.lower().endswith(".ovf")]
        if not ovfs:
            held = ", ".join(m.name for m in package.members) or "nothing"
            raise UsageError(
                f"{path}: no .ovf member (the archive holds {held})"
                + (": truncated OVA" if package.truncated else ""),
                hint="an OVA starts with its .ovf; fetch or export it again",
            )
        if len(ovfs) > 1:
            losses.lost(ovfs[1].name, f"a second envelope; {ovfs[0].name} is read")
        ovf = ovfs[0]
        stem = ovf.name[: -len(".ovf")]
        mfs = [m for m in package.members if m.name.lower().endswith(".mf")]
        mf = next((m for m in mfs if m.name[: -len(".mf")] == stem), mfs[0] if mfs else None)
        for m in package.members:
            if m.name.lower().endswith(".cert"):
                losses.lost(m.name, "the package's signature is not checked")
        listing = None if mf is None else (mf.name, _read_all(package, mf.name))
        return _import(package, ovf.name, listing, sink_for, losses, progress, system)


def read_ovf(
    path: Path,
    *,
    sink_for: DiskSink,
    losses: Losses,
    progress: Progress = no_progress,
    system: str | None = None,
) -> VmSpec:
    """The VM of the ``.ovf`` at ``path``, its ``.mf`` and disk files beside it
    (hrefs are relative to its directory); disks handed over as by
    :func:`read_ova`."""
    with ExitStack() as stack:
        package = _Directory(path, stack)
        mf = path.with_suffix(".mf")
        listing = (mf.name, mf.read_bytes()) if mf.is_file() else None
        return _import(package, path.name, listing, sink_for, losses, progress, system)


def _read_all(package: _Package, name: str) -> bytes:
    opened = package.open(name)
    if opened is None:
        raise package.missing(name)
    f, start, size = opened
    f.seek(start)
    return f.read(size)


def _import(
    package: _Package,
    ovf_name: str,
    listing: tuple[str, bytes] | None,
    sink_for: DiskSink,
    losses: Losses,
    progress: Progress,
    system: str | None,
) -> VmSpec:
    source = package.source
    digests: dict[str, Digest] = {}
    if listing is None:
        losses.lost("manifest", "the package has no .mf: its files are not verified")
    else:
        digests = manifest.parse_manifest(listing[1], listing[0], losses)
    with _source(package, ovf_name, digests, listing is not None, losses) as stream:
        ovf_bytes = stream.read()
        stream.verify()
    spec, files = parse_envelope(ovf_bytes, losses=losses, system=system, source=source)
    opened = []
    for ref in files:
        member = package.open(ref.href)
        if member is None:
            raise package.missing(ref.href)
        opened.append((ref, member))
    total = sum(size for _, (_, _, size) in opened)
    done = [0]

    def digested(n: int) -> None:
        done[0] += n
        progress(done[0], total)

    replaced: dict[str, DiskRef] = {}
    for ref, (_, _, size) in opened:
        if ref.size is not None and ref.size != size:
            losses.approximated(
                f"File[id={ref.file_id}]", f"ovf:size {ref.size} but {ref.href} has {size} bytes"
            )
        disk = next(d for d in spec.disks if d.path == ref.href)
        with _source(package, ref.href, digests, listing is not None, losses, digested) as stream:
            readable = _decompressed(stream, ref)
            replaced[ref.href] = sink_for(disk, readable)
            stream.verify()
    disks = tuple(_placed(d, replaced, sink_for) for d in spec.disks)
    return replace(spec, disks=disks)


@contextmanager
def _source(
    package: _Package,
    name: str,
    digests: dict[str, Digest],
    have_manifest: bool,
    losses: Losses,
    on_digested: Callable[[int], None] | None = None,
) -> Iterator[MemberSource]:
    opened = package.open(name)
    if opened is None:
        raise package.missing(name)
    f, start, size = opened
    digest = digests.get(_norm(name))
    if digest is None and have_manifest:
        losses.lost(name, "not listed in the manifest: not verified")
    stream = MemberSource(
        f, start, size, name=name, source=package.source, digest=digest, on_digested=on_digested
    )
    try:
        yield stream
    finally:
        stream.close()


def _decompressed(stream: MemberSource, ref: OvfFileRef) -> BinaryIO:
    if ref.compression == "gzip":
        return cast(BinaryIO, gzip.GzipFile(fileobj=io.BufferedReader(stream), mode="rb"))
    return cast(BinaryIO, stream)


def _placed(disk: DiskRef, replaced: dict[str, DiskRef], sink_for: DiskSink) -> DiskRef:
    if disk.path:
        new = replaced[disk.path]
    elif not disk.cdrom and disk.virtual_size > 0:
        new = sink_for(disk, None)
    else:
        return disk
    return replace(
        disk, path=new.path, format=new.format, virtual_size=new.virtual_size or disk.virtual_size
    )
