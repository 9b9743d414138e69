"""The host as the snapshot engine sees it from dom0: commands, QMP, libxl's records.

Standard library only: this runs on the Xen host, inside the dom0 zipapp.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.host.qmp import QMP_SOCKET, Qmp
from xenkit.host.xenstore import NoEntry, XenStore, XenStoreError
from xenkit.snapshot.model import Disk

#: libxl keeps its JSON record of each domain's configuration here.
USERDATA = "/var/lib/xen/userdata-d.{domid}.{uuid}.libxl-json"


class CommandError(OperationFailed):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(
            f"{argv[0]} {' '.join(argv[1:3])} failed ({returncode}): {' / '.join(tail)}"
        )
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class DomainView:
    """A running domain: ids and libxl's record of its configuration."""

    domid: int
    name: str
    uuid: str
    config: Mapping[str, Any]
    disks: tuple[Disk, ...]

    def disk(self, vdev: str) -> Disk:
        for d in self.disks:
            if d.vdev == vdev:
                return d
        raise UsageError(
            f"domain {self.name} has no disk {vdev}",
            hint=f"its disks: {', '.join(d.vdev for d in self.disks) or 'none'}",
        )


def disks_of(config: Mapping[str, Any]) -> tuple[Disk, ...]:
    found = []
    for d in config.get("disks", []) or []:
        if d.get("is_cdrom"):
            continue
        found.append(
            Disk(
                vdev=str(d.get("vdev", "")),
                backend=str(d.get("backend", "unknown")),
                format=str(d.get("format", "raw")),
                path=str(d.get("pdev_path", "")),
                readwrite=bool(d.get("readwrite", 1)),
            )
        )
    return tuple(found)


class Dom0:
    """Runs what the engine needs on this host."""

    def __init__(self) -> None:
        self._xs: XenStore | None = None

    def run(
        self, argv: Sequence[str], *, timeout: float = 600.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise OperationFailed(
                f"{argv[0]} is not installed on this host", hint="is this a Xen dom0?"
            ) from None
        except subprocess.TimeoutExpired:
            raise OperationFailed(
                f"{' '.join(argv[:3])} did not finish within {timeout:g} s"
            ) from None
        if check and done.returncode != 0:
            raise CommandError(argv, done.returncode, done.stderr)
        return done

    def qmp(self, domid: int, *, timeout: float = 60.0) -> Qmp:
        return Qmp(
            QMP_SOCKET.format(domid=domid),
            timeout=timeout,
            connect_timeout=30.0,
            what=f"the QEMU of domain {domid}",
        )

    # -- domains -----------------------------------------------------------

    def domain(self, ref: str, *, exact: bool = False) -> DomainView | None:
        """The running domain ``ref`` (name or domid), or None if there is none.

        Read where ``xl list -l`` reads it (xenstore, and libxl's record of the
        domain's configuration), without starting xl: that costs a quarter of a
        second in an emulated dom0. ``xl list -l`` answers when the record is not
        there or not readable, and when ``exact`` asks for what libxl adds to the
        record at run time (the scheduler's weight and cap): a configuration that
        a snapshot keeps."""
        view = None if exact else self._from_records(ref)
        if view is None:
            view = self._from_xl(ref)
        if view is None:
            return None
        domid = view.domid
        return replace(view, disks=tuple(self._with_backend(domid, d) for d in view.disks))

    def _from_records(self, ref: str) -> DomainView | None:
        try:
            xs = self.xenstore()
            if ref.isdigit():
                domid = int(ref)
                if self.xs_read(f"/local/domain/{domid}/name") is None:
                    return None
            else:
                ids = [d for d in xs.directory("/local/domain") if d.isdigit() and d != "0"]
                named = [int(d) for d in ids if self.xs_read(f"/local/domain/{d}/name") == ref]
                if len(named) != 1:  # none, or one of them dying: xl sorts it out
                    return None
                (domid,) = named
            uuid = (self.xs_read(f"/local/domain/{domid}/vm") or "").rpartition("/")[2]
            record = Path(USERDATA.format(domid=domid, uuid=uuid)).read_bytes()
            config = json.loads(record.rstrip(b"\0"))
            return DomainView(
                domid=domid,
                name=str(config["c_info"]["name"]),
                uuid=str(config["c_info"]["uuid"]),
                config=config,
                disks=disks_of(config),
            )
        except (NoEntry, XenStoreError, OSError, ValueError, KeyError, TypeError):
            return None

    def _from_xl(self, ref: str) -> DomainView | None:
        done = self.run(["xl", "list", "-l", ref], check=False, timeout=60)
        if done.returncode != 0:
            return None
        try:
            row = json.loads(done.stdout)[0]
            config = row["config"]
            return DomainView(
                domid=int(row["domid"]),
                name=str(config["c_info"]["name"]),
                uuid=str(config["c_info"]["uuid"]),
                config=config,
                disks=disks_of(config),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise OperationFailed(f"xl list -l {ref} gave an unexpected answer: {exc}") from exc

    def _with_backend(self, domid: int, disk: Disk) -> Disk:
        """libxl records no backend when the config left the choice to it: the
        backend's xenstore path says which one it took."""
        if disk.backend in ("qdisk", "phy", "tap"):
            return disk
        path = self._backend_path(domid, disk.vdev) or ""
        if "/backend/qdisk/" in path:
            return replace(disk, backend="qdisk")
        if "/backend/vbd/" in path:
            return replace(disk, backend="phy")
        return disk

    def refuse_if_jobs(self, view: DomainView, *, doing: str, hint: str) -> None:
        """A block job (a merge, a mirror) owns nodes of the chain until it ends, so
        nothing else may change the domain's disks meanwhile."""
        with self.qmp(view.domid) as qmp:
            jobs = qmp.execute("query-jobs")
        if jobs:
            raise OperationFailed(
                f"domain {view.name} has a block job running ({jobs[0].get('id')}); not {doing}",
                hint=hint,
            )

    def pause(self, domid: int) -> None:
        self.run(["xl", "pause", str(domid)], timeout=60)

    def unpause(self, domid: int) -> None:
        self.run(["xl", "unpause", str(domid)], timeout=60)

    def destroy(self, domid: int) -> None:
        self.run(["xl", "destroy", str(domid)], timeout=120)

    def create(self, cfg_path: Path) -> None:
        self.run(["xl", "create", str(cfg_path)], timeout=300)

    def save_paused(self, domid: int, path: Path) -> None:
        """``xl save -p``: memory and device state to ``path``; the domain is left paused
        exactly where the file has it (suspend, save, pause, resume as cancelled)."""
        self.run(["xl", "save", "-p", str(domid), str(path)], timeout=1800)

    def restore(self, cfg_path: Path, memory: Path) -> None:
        self.run(["xl", "restore", str(cfg_path), str(memory)], timeout=1800)

    # -- libxl's records of a running domain's disks ---------------------------

    def point_disk_at(self, view: DomainView, vdev: str, path: str, fmt: str) -> None:
        """Make libxl's records of disk ``vdev`` name ``path``: the backend's xenstore
        ``params`` and the stored domain configuration that ``xl save``, ``migrate``
        and a reboot start from."""
        backend = self._backend_path(view.domid, vdev)
        if backend is not None:
            params = self.xs_read(f"{backend}/params") or ""
            prefix, sep, _ = params.partition(":")
            value = (
                f"{fmt}:{path}"
                if sep and prefix in ("qcow2", "raw", "qcow", "vhd", "aio")
                else path
            )
            self.xenstore().write(f"{backend}/params", value)
        userdata = Path(USERDATA.format(domid=view.domid, uuid=view.uuid))
        try:
            # libxl writes the JSON as a C string, its NUL included.
            record = json.loads(userdata.read_bytes().rstrip(b"\0"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise OperationFailed(
                f"cannot read libxl's record of domain {view.name} ({userdata}): {exc}",
                hint="xl save, migrate and reboot would still use the old image",
            ) from exc
        for disk in record.get("disks", []) or []:
            if disk.get("vdev") == vdev:
                disk["pdev_path"] = path
                disk["format"] = fmt
        tmp = userdata.with_name(f".{userdata.name}.xenkit")
        tmp.write_bytes(json.dumps(record, indent=4).encode() + b"\n\0")
        tmp.chmod(0o600)
        tmp.replace(userdata)

    def _backend_path(self, domid: int, vdev: str) -> str | None:
        base = f"/local/domain/{domid}/device/vbd"
        try:
            devids = self.xenstore().directory(base)
        except XenStoreError:
            return None
        for devid in devids:
            path = self.xs_read(f"{base}/{devid}/backend")
            if path and self.xs_read(f"{path}/dev") == vdev:
                return path
        return None

    def xenstore(self) -> XenStore:
        """One connection to xenstored for the whole command (a ``xenstore-read``
        process per key costs a fork and an exec each in an emulated dom0)."""
        if self._xs is None:
            self._xs = XenStore()
        return self._xs

    def xs_read(self, path: str) -> str | None:
        try:
            return self.xenstore().read(path)
        except NoEntry:
            return None

    # -- images ------------------------------------------------------------

    def image_info(self, path: str) -> dict[str, Any]:
        done = self.run(["qemu-img", "info", "-U", "--output=json", path], timeout=120)
        info: dict[str, Any] = json.loads(done.stdout)
        return info

    def backing_of(self, path: str) -> str | None:
        """The backing file of a qcow2 image, read from its header (a merge asks this
        of every candidate file; starting qemu-img for each costs more than the
        merge itself on a small chain). Anything but qcow2 has no backing here."""
        return qcow2_backing(path)

    def internal_tags(self, path: str) -> list[str]:
        info = self.image_info(path)
        return [str(s.get("name")) for s in info.get("snapshots", []) or []]


_QCOW2_MAGIC = b"QFI\xfb"


def qcow2_backing(path: str) -> str | None:
    """The backing file named in a qcow2 header, made absolute against the image's
    directory as QEMU does; None for no backing or not a qcow2 image."""
    try:
        with Path(path).open("rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
                return None
            offset = int.from_bytes(header[8:16], "big")
            size = int.from_bytes(header[16:20], "big")
            if offset == 0 or size == 0 or size > 1023:
                return None
            f.seek(offset)
            name = f.read(size).decode("utf-8", "replace")
    except OSError:
        return None
    if name.startswith("/") or ":" in name.split("/", 1)[0]:
        return name
    return str(Path(path).parent / name)


def wait_for_job(qmp: Qmp, job_id: str, *, want: str, timeout: float) -> None:
    """Wait until a block job reaches ``want`` (``ready``, or ``concluded``/gone): asked
    once, then again at each of its events (a poll every 50 ms cost a QMP round trip
    each, and up to 50 ms late at every step)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        jobs = {j["id"]: j for j in qmp.execute("query-jobs")}
        job = jobs.get(job_id)
        if job is None:
            failed = _job_error([*qmp.events, *seen], job_id)
            if failed:
                raise OperationFailed(f"block job {job_id} failed: {failed}")
            if want == "concluded":
                return
            raise OperationFailed(f"block job {job_id} vanished before it was {want}")
        status = job.get("status")
        if job.get("error"):
            raise OperationFailed(f"block job {job_id} failed: {job['error']}")
        if status == want or (want == "concluded" and status in ("concluded", "null")):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OperationFailed(
                f"block job {job_id} is still {status} after {timeout:g} s",
                hint="the job keeps running in QEMU; xenkit snapshot verify reports it",
            )
        event = qmp.wait_event(lambda e: _about(e, job_id), timeout=min(remaining, 5.0))
        if event is not None:
            seen.append(event)


def _about(event: Mapping[str, Any], job_id: str) -> bool:
    data = event.get("data") or {}
    return job_id in (data.get("id"), data.get("device"))


def _job_error(events: Sequence[Mapping[str, Any]], job_id: str) -> str | None:
    """The error a finished (and dismissed) job reported in its completion event."""
    for event in events:
        if event.get("event") in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
            data = event.get("data") or {}
            if data.get("device") == job_id and data.get("error"):
                return str(data["error"])
    return None
