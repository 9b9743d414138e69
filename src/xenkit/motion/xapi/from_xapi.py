"""from-xapi: an xl.cfg and disk images from a VM in a pool.

The disks are read while the VM is as it is, with no snapshot. A running VM
keeps writing while its disks are copied, which gives an image no filesystem
promises to mount, so a Running or Paused VM is refused unless ``force``; then
the copy is made anyway, with a warning. Files are written under ``.part``
names and renamed only when every disk and the config are complete, so a
failed export leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import DiskWriter, Progress, no_progress
from xenkit.motion.model import DiskFormat, DiskRef, Losses, VmSpec
from xenkit.motion.xapi.http import HttpOptions
from xenkit.motion.xapi.pool import find_vm
from xenkit.motion.xapi.records import spec_from_vm_record
from xenkit.motion.xapi.session import XapiRecord, XapiSession, is_null
from xenkit.motion.xapi.to_xapi import Notify, PoolTarget
from xenkit.motion.xapi.transfer import OffsetProgress, export_raw, export_vhd
from xenkit.motion.xl import xl_text

OutFormat = Literal["raw", "qcow2", "vhd"]
WriterFactory = Callable[[BinaryIO, DiskFormat, int], DiskWriter]
"""Opens a DiskWriter of a format into ``out`` for a disk of ``virtual_size`` bytes."""

EXTENSIONS: dict[str, str] = {"raw": "img", "qcow2": "qcow2", "vhd": "vhd"}


def _quiet(message: str) -> None:
    """The default: nobody is told."""


@dataclass
class FromXapiResult:
    config: Path
    spec: VmSpec
    power_state: str
    disks: dict[str, Path] = field(default_factory=dict)
    losses: Losses = field(default_factory=Losses)
    warnings: list[str] = field(default_factory=list)


def file_stem(name: str, fallback: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or fallback


def from_xapi(
    vm: str,
    target: PoolTarget,
    out_dir: Path,
    *,
    disk_format: OutFormat = "raw",
    open_writer: WriterFactory | None = None,
    force: bool = False,
    overwrite: bool = False,
    losses: Losses | None = None,
    progress: Progress = no_progress,
    notify: Notify = _quiet,
    http: HttpOptions | None = None,
) -> FromXapiResult:
    """Write ``<name>.cfg`` and ``<name>-<vdev>.<ext>`` for the VM into ``out_dir``.

    ``vm`` is a uuid or name-label. ``vhd`` images are the pool's own VHD
    export; ``raw`` and ``qcow2`` go through ``open_writer``.
    """
    if disk_format != "vhd" and open_writer is None:
        raise UsageError(f"no writer for {disk_format} images", hint="use --format vhd")
    losses = losses if losses is not None else Losses()
    options = http or HttpOptions(verify_tls=target.verify_tls, timeout=target.timeout)
    warnings: list[str] = []
    with target.session() as session:
        _, record = find_vm(session, vm)
        power = str(record.get("power_state", "Halted"))
        name = str(record.get("name_label") or record.get("uuid"))
        if power in ("Running", "Paused"):
            if not force:
                raise UsageError(
                    f"VM {name!r} is {power.lower()}: its disks would be copied while it "
                    "writes to them, and the copy need not mount",
                    hint="shut it down first (xe vm-shutdown), or pass --force to copy anyway",
                )
            warnings.append(f"VM {name!r} is {power.lower()}: the disk images are not consistent")
        elif power == "Suspended":
            warnings.append(f"VM {name!r} is suspended: its memory image stays in the pool")
        spec = _spec(session, record, losses)
        stem = file_stem(spec.name, str(record.get("uuid")))
        out = out_dir.resolve()
        config = out / f"{stem}.cfg"
        disks: dict[int, Path] = {}
        for i, disk in enumerate(spec.disks):
            if not disk.cdrom:
                disks[i] = out / f"{stem}-{disk.vdev}.{EXTENSIONS[disk_format]}"
        _check_free([config, *disks.values()], overwrite)
        out.mkdir(parents=True, exist_ok=True)
        final = _with_paths(spec, disks, disk_format)
        parts: list[Path] = []
        total = sum(final.disks[i].virtual_size for i in disks)
        base = 0
        try:
            for i, path in disks.items():
                disk = spec.disks[i]
                part = _part(path)
                parts.append(part)
                notify(f"downloading {disk.vdev} ({disk.label or disk.path}) to {path}")
                step = OffsetProgress(progress, base, total)
                _download(session, disk, part, disk_format, open_writer, step, options)
                base += disk.virtual_size
            part = _part(config)
            parts.append(part)
            part.write_text(xl_text(final, losses=losses), encoding="utf-8")
            for path in disks.values():
                _part(path).replace(path)
            part.replace(config)
        except BaseException:
            for part in parts:
                with contextlib.suppress(OSError):
                    part.unlink()
            raise
        progress(total, total)
    return FromXapiResult(
        config,
        final,
        power,
        {spec.disks[i].vdev: p for i, p in disks.items()},
        losses,
        warnings,
    )


def _spec(session: XapiSession, record: XapiRecord, losses: Losses) -> VmSpec:
    vbds = [session.call("VBD.get_record", r) for r in record.get("VBDs", [])]
    vdis: dict[str, XapiRecord] = {}
    for vbd in vbds:
        vdi = str(vbd.get("VDI", ""))
        if not is_null(vdi) and vbd.get("empty") is not True:
            vdis[vdi] = session.call("VDI.get_record", vdi)
    vifs = [session.call("VIF.get_record", r) for r in record.get("VIFs", [])]
    networks: dict[str, XapiRecord] = {}
    for vif in vifs:
        net = str(vif.get("network", ""))
        if not is_null(net) and net not in networks:
            networks[net] = session.call("network.get_record", net)
    return spec_from_vm_record(record, vbds, vdis, vifs, networks, losses)


def _with_paths(spec: VmSpec, paths: dict[int, Path], fmt: OutFormat) -> VmSpec:
    disks: list[DiskRef] = []
    for i, disk in enumerate(spec.disks):
        if i in paths:
            disk = dataclasses.replace(disk, path=str(paths[i]), format=fmt)
        disks.append(disk)
    return dataclasses.replace(spec, disks=tuple(disks))


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _check_free(paths: list[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UsageError(
            f"would overwrite {', '.join(existing)}",
            hint="choose another --out directory, or remove the files",
        )


def _download(
    session: XapiSession,
    disk: DiskRef,
    part: Path,
    fmt: OutFormat,
    open_writer: WriterFactory | None,
    progress: Progress,
    options: HttpOptions,
) -> None:
    label = f"{disk.vdev} ({disk.label or disk.path})"
    with part.open("wb") as out:
        if fmt == "vhd":
            export_vhd(
                session,
                disk.path,
                disk.virtual_size,
                out,
                label=label,
                progress=progress,
                options=options,
            )
            return
        assert open_writer is not None
        writer = open_writer(out, fmt, disk.virtual_size)
        export_raw(
            session,
            disk.path,
            disk.virtual_size,
            writer,
            label=label,
            progress=progress,
            options=options,
        )
