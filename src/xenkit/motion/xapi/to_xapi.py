"""to-xapi: create a VM in a pool from a VmSpec and stream its disks into an SR.

Everything that can be checked is checked before the first object is created:
the mapping (``--strict`` stops here), the disks (opened, sized), the SR (found,
able to take VDIs, with room for what will be written) and a network for every
vif. Then VM, VDIs, VBDs and VIFs are created and the disks uploaded; if any step
fails, or the user interrupts, every object created so far is destroyed again
and the error says so, so a failed run leaves nothing in the pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from xenkit.core.errors import UsageError, XenkitError
from xenkit.motion.disk.base import DiskReader, Progress, no_progress
from xenkit.motion.model import DiskRef, Losses, VmSpec
from xenkit.motion.xapi.http import HttpOptions
from xenkit.motion.xapi.pool import (
    NetworkInfo,
    NetworkMap,
    SrInfo,
    choose_networks,
    find_sr,
    gib,
    pool_networks,
)
from xenkit.motion.xapi.records import (
    boot_disk_index,
    userdevices,
    vbd_record,
    vdi_record,
    vif_record,
    vm_record_from_spec,
)
from xenkit.motion.xapi.session import Credentials, XapiRecord, XapiRefused, XapiSession
from xenkit.motion.xapi.streams import (
    VHD_BLOCK,
    UploadFormat,
    allocated_bytes,
    body_for,
    vhd_possible,
)
from xenkit.motion.xapi.transfer import OffsetProgress, import_vdi

OpenDisk = Callable[[DiskRef], DiskReader]
Notify = Callable[[str], None]
UploadChoice = Literal["auto", "raw", "vhd"]


def _quiet(message: str) -> None:
    """The default: nobody is told."""


@dataclass(frozen=True)
class PoolTarget:
    """How to reach a pool master: its URL and a login."""

    url: str
    credentials: Credentials
    verify_tls: bool = True
    timeout: float = 120.0

    def session(self) -> XapiSession:
        return XapiSession(
            self.url, self.credentials, verify_tls=self.verify_tls, timeout=self.timeout
        )


@dataclass
class Upload:
    """One disk to create and fill: ``need`` is what it takes from the SR."""

    index: int
    disk: DiskRef
    reader: DiskReader
    fmt: UploadFormat
    need: int = 0


@dataclass
class ToXapiResult:
    vm_ref: str
    vm_uuid: str
    sr: SrInfo
    record: XapiRecord
    vdis: dict[str, str] = field(default_factory=dict)
    """vdev -> uuid of the VDI created for it."""
    losses: Losses = field(default_factory=Losses)
    warnings: list[str] = field(default_factory=list)


class RolledBack(XenkitError):
    """to-xapi failed after creating objects; ``left`` lists those it could not
    destroy again (empty when the pool is as it was). The exit code is the cause's."""

    def __init__(self, cause: XenkitError, destroyed: list[str], left: list[str]) -> None:
        hint: str | None
        if left:
            what = "could not remove " + ", ".join(left)
            hint = "remove them by hand (xe vm-destroy / xe vdi-destroy uuid=...)"
        else:
            what = "removed everything it had created (" + ", ".join(destroyed) + ")"
            hint = cause.hint
        super().__init__(f"{cause.message}\nto-xapi {what}", hint=hint)
        self.exit_code = cause.exit_code
        self.cause = cause
        self.destroyed = destroyed
        self.left = left


def upload_need(reader: DiskReader, fmt: UploadFormat, sr: SrInfo) -> int:
    """What a disk takes from the SR: all of it on thick (LVM) SRs, else its data;
    plus the VHD metadata file-based SRs keep (a bitmap per 2 MiB, the BAT)."""
    size = reader.virtual_size
    data = size if sr.thick or fmt == "raw" else allocated_bytes(reader)
    blocks = -(-size // VHD_BLOCK)
    return data + blocks * 516 + 3 * 512


def choose_format(choice: UploadChoice, virtual_size: int) -> UploadFormat:
    if choice == "auto":
        return "vhd" if vhd_possible(virtual_size) else "raw"
    if choice == "vhd" and not vhd_possible(virtual_size):
        raise UsageError(
            f"a {gib(virtual_size)} disk cannot be uploaded as VHD (at most 2040 GiB, whole "
            "sectors)",
            hint="upload it raw",
        )
    return choice


def to_xapi(
    spec: VmSpec,
    target: PoolTarget,
    *,
    open_disk: OpenDisk,
    sr: str | None = None,
    networks: Sequence[str] = (),
    upload: UploadChoice = "auto",
    losses: Losses | None = None,
    progress: Progress = no_progress,
    notify: Notify = _quiet,
    http: HttpOptions | None = None,
) -> ToXapiResult:
    """Create ``spec`` as a halted VM in the pool; ``open_disk`` opens each disk's image.

    ``sr`` is a uuid or name-label (None: the pool's default SR); ``networks``
    are ``--network`` values (see :class:`NetworkMap`). ``progress`` counts the
    bytes of all disks together.
    """
    losses = losses if losses is not None else Losses()
    record = vm_record_from_spec(spec, losses)
    numbers = userdevices(spec.disks, losses)
    for disk in spec.disks:
        if disk.cdrom and disk.path:
            losses.lost(
                f"disk {disk.vdev}",
                "the CD image is not uploaded: the VM gets an empty CD drive; insert an ISO "
                "from an ISO SR",
            )
    mapping = NetworkMap.parse(networks)
    options = http or HttpOptions(verify_tls=target.verify_tls, timeout=target.timeout)
    warnings: list[str] = []
    if spec.guest_type == "pv":
        warnings.append(
            "XCP-ng 8.1 and later (and XenServer 8) do not run PV guests: convert the guest to "
            "HVM or PVH if the pool refuses to start it"
        )
    readers: list[DiskReader] = []
    try:
        plans: list[Upload] = []
        for i, disk in enumerate(spec.disks):
            if disk.cdrom:
                continue
            reader = open_disk(disk)
            readers.append(reader)
            if reader.virtual_size <= 0:
                raise UsageError(f"disk {disk.vdev} ({disk.path}) is empty")
            plans.append(Upload(i, disk, reader, choose_format(upload, reader.virtual_size)))
        with target.session() as session:
            found = find_sr(session, sr)
            for plan in plans:
                plan.need = upload_need(plan.reader, plan.fmt, found)
            _check_space(found, plans)
            chosen = choose_networks(spec.nics, pool_networks(session), mapping)
            if session.call("VM.get_by_name_label", spec.name):
                warnings.append(f"the pool already has a VM named {spec.name!r}")
            notify(f"into {found}, {gib(found.free)} free")
            creator = _Creator(session, notify)
            try:
                result = creator.build(spec, record, found, plans, numbers, chosen)
                _upload_all(session, creator, plans, progress, notify, options)
            except BaseException as e:
                created_any = creator.created_any
                destroyed, left = creator.rollback()
                if isinstance(e, XenkitError) and created_any:
                    raise RolledBack(e, destroyed, left) from e
                raise
            result.losses = losses
            result.warnings = warnings
            return result
    finally:
        for reader in readers:
            with contextlib.suppress(Exception):
                reader.close()


def _check_space(sr: SrInfo, plans: Sequence[Upload]) -> None:
    need = sum(p.need for p in plans)
    if sr.physical_size <= 0 or need <= sr.free:
        return
    raise XapiRefused(
        "SR_FULL",
        [str(need), str(sr.free)],
        f"{sr} has {gib(sr.free)} free; the disks need {gib(need)}",
        hint="free space on the SR, or choose another with --sr",
    )


class _Creator:
    """Creates the pool objects and remembers them, newest last, to undo them."""

    def __init__(self, session: XapiSession, notify: Notify) -> None:
        self.session = session
        self.notify = notify
        self.created: list[tuple[str, str, str]] = []
        self.vdis: dict[int, str] = {}

    @property
    def created_any(self) -> bool:
        return bool(self.created)

    def create(self, cls: str, record: XapiRecord, label: str) -> str:
        ref = str(self.session.call(f"{cls}.create", record))
        self.created.append((cls, ref, label))
        return ref

    def build(
        self,
        spec: VmSpec,
        record: XapiRecord,
        sr: SrInfo,
        plans: Sequence[Upload],
        numbers: Sequence[int],
        networks: Sequence[NetworkInfo],
    ) -> ToXapiResult:
        vm = self.create("VM", record, f"VM {spec.name!r}")
        vm_uuid = str(self.session.call("VM.get_uuid", vm))
        self.notify(f"created VM {spec.name!r} ({vm_uuid})")
        result = ToXapiResult(vm, vm_uuid, sr, record)
        boot = boot_disk_index(spec.disks)
        by_index = {p.index: p for p in plans}
        for i, disk in enumerate(spec.disks):
            vdi: str | None = None
            plan = by_index.get(i)
            if plan is not None:
                name = f"{spec.name} {disk.vdev}"
                vdi = self.create(
                    "VDI",
                    vdi_record(disk, sr.ref, name=name, virtual_size=plan.reader.virtual_size),
                    f"VDI {disk.vdev}",
                )
                self.vdis[i] = vdi
                result.vdis[disk.vdev] = str(self.session.call("VDI.get_uuid", vdi))
            self.create(
                "VBD",
                vbd_record(disk, vm, vdi, userdevice=numbers[i], bootable=i == boot),
                f"VBD {disk.vdev}",
            )
        for device, (nic, network) in enumerate(zip(spec.nics, networks, strict=True)):
            self.create(
                "VIF",
                vif_record(nic, vm, network.ref, device=device, mtu=network.mtu),
                f"VIF {device} on {network.name_label!r}",
            )
        return result

    def rollback(self) -> tuple[list[str], list[str]]:
        destroyed: list[str] = []
        left: list[str] = []
        for cls, ref, label in reversed(self.created):
            try:
                self.session.call(f"{cls}.destroy", ref)
                destroyed.append(label)
            except XenkitError as e:
                left.append(f"{label} ({ref}: {e.message})")
        self.created.clear()
        if destroyed:
            self.notify("rolled back: destroyed " + ", ".join(destroyed))
        return destroyed, left


def _upload_all(
    session: XapiSession,
    creator: _Creator,
    plans: Sequence[Upload],
    progress: Progress,
    notify: Notify,
    options: HttpOptions,
) -> None:
    total = sum(p.reader.virtual_size for p in plans)
    base = 0
    for plan in plans:
        size = plan.reader.virtual_size
        notify(f"uploading {plan.disk.vdev}: {gib(size)} as {plan.fmt}")
        body = body_for(plan.reader, plan.fmt)
        import_vdi(
            session,
            creator.vdis[plan.index],
            body,
            plan.fmt,
            label=f"{plan.disk.vdev} ({plan.disk.path})",
            progress=OffsetProgress(progress, base, total),
            options=options,
        )
        base += size
    progress(total, total)
