"""Storage migration: ``xl migrate`` for a domain whose disks are local images.

xl migrate moves memory and expects the destination to see the same disks.
Here the destination gets its own copy, made while the guest runs:

1. the destination creates an empty image at each disk's path and serves it
   over NBD (``qemu-nbd``, which exits when its one client goes);
2. the domain's QEMU mirrors each disk into it (``blockdev-mirror``, sync full)
   until READY: from then on the copy follows the guest's writes;
3. ``xl migrate`` moves the domain through a relay (``relay.py``) that holds the
   stream at the instant the guest is suspended; there each mirror is cancelled
   softly (QEMU first copies what is still dirty: the copy now equals the image)
   and the NBD servers close, before libxl on the destination opens the images;
4. the domain runs on the destination; the images here stay (reported).

A failure before the hand-over leaves the domain running here and removes what
was made on the destination; after it, xl resumes the domain here on its own
images, which the mirrors never changed.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.host.qmp import Qmp, QmpError
from xenkit.snapshot.dom0 import Dom0, DomainView, wait_for_job
from xenkit.snapshot.engine import SnapshotRefused, top_nodes
from xenkit.snapshot.store import DEFAULT_ROOT, SnapshotStore, write_atomic

MIGRATE_ROOT = Path("/var/lib/xenkit/migrate")
DEFAULT_NBD_PORT = 10809
SSH = ("ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15")
#: Room the destination keeps free beyond the images' allocated size.
HEADROOM = 64 << 20

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class MirrorDisk:
    vdev: str
    path: str
    format: str
    virtual_size: int
    allocated: int
    port: int

    @property
    def job(self) -> str:
        return f"xk-mirror-{self.vdev}"

    @property
    def nbd_node(self) -> str:
        return f"xk-nbd-{self.vdev}"


@dataclass(frozen=True)
class Plan:
    """What the relay needs at the hand-over; written to ``plan.json``."""

    domid: int
    name: str
    uuid: str
    dest: str
    dest_address: str
    disks: tuple[MirrorDisk, ...]
    directory: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        disks = tuple(MirrorDisk(**d) for d in data["disks"])
        return cls(**{**data, "disks": disks})

    @property
    def pid_files(self) -> list[str]:
        return [f"/run/xenkit-nbd-{self.uuid}-{d.vdev}.pid" for d in self.disks]

    @property
    def handover_file(self) -> Path:
        return Path(self.directory) / "handover.json"


def ssh(dest: str, script: str) -> list[str]:
    return [*SSH, dest, "sh", "-c", shlex.quote(script)]


class StorageMigration:
    def __init__(self, dom0: Dom0 | None = None, *, root: Path = MIGRATE_ROOT) -> None:
        self.dom0 = dom0 or Dom0()
        self.root = root

    # -- planning --------------------------------------------------------------

    def plan(self, view: DomainView, dest: str, port: int) -> Plan:
        try:
            address = socket.gethostbyname(dest)
        except OSError as exc:
            raise UsageError(
                f"cannot resolve the destination {dest!r}: {exc}",
                hint="give a host name this dom0 resolves (or its address)",
            ) from None
        if not view.disks:
            raise SnapshotRefused(f"domain {view.name} has no disk to move")
        disks = []
        for i, disk in enumerate(view.disks):
            if disk.backend != "qdisk" or disk.format not in ("qcow2", "raw"):
                raise SnapshotRefused(
                    f"disk {disk.vdev} of {view.name} ({disk.backend}, {disk.format}: "
                    f"{disk.path}) is not a qcow2 or raw image served by QEMU",
                    hint="xenkit migrate copies qdisk images; shared storage needs only xl migrate",
                )
            info = self.dom0.run(
                ["qemu-img", "info", "-U", "--backing-chain", "--output=json", disk.path],
                timeout=120,
            )
            chain = json.loads(info.stdout)
            disks.append(
                MirrorDisk(
                    vdev=disk.vdev,
                    path=disk.path,
                    format=disk.format,
                    virtual_size=int(chain[0]["virtual-size"]),
                    allocated=sum(int(c.get("actual-size", 0)) for c in chain),
                    port=port + i,
                )
            )
        directory = self.root / view.uuid
        return Plan(
            domid=view.domid,
            name=view.name,
            uuid=view.uuid,
            dest=dest,
            dest_address=address,
            disks=tuple(disks),
            directory=str(directory),
        )

    # -- the whole move ---------------------------------------------------------

    def migrate(
        self,
        ref: str,
        dest: str,
        *,
        port: int = DEFAULT_NBD_PORT,
        relay: Sequence[str],
        progress: Progress | None = None,
        snapshots_root: Path = DEFAULT_ROOT,
    ) -> dict[str, Any]:
        """Move running domain ``ref`` and its disks to ``dest``. ``relay`` is the
        command xl runs instead of ssh (this archive's ``migrate-relay``)."""
        report = progress or (lambda stage, detail: None)
        view = self.dom0.domain(ref)
        if view is None:
            raise UsageError(f"no running domain {ref!r}", hint="xl list shows the running domains")
        store = SnapshotStore(view.uuid, snapshots_root, label=view.name)
        with store.locked():
            self.dom0.refuse_if_jobs(
                view,
                doing="migrating",
                hint="wait for it to finish (or xenkit snapshot verify --repair) first",
            )
            plan = self.plan(view, dest, port)
            directory = Path(plan.directory)
            directory.mkdir(parents=True, exist_ok=True)
            plan.handover_file.unlink(missing_ok=True)
            (directory / "plan.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
            start = time.monotonic()
            report("prepare", {"dest": dest, "disks": [d.vdev for d in plan.disks]})
            self._prepare_destination(plan)
            try:
                self._start_mirrors(plan, report)
                report("memory", {})
                migrate_done = self.dom0.run(
                    ["xl", "migrate", "-s", shlex.join([*relay, str(directory / "plan.json")]),
                     str(plan.domid), dest],
                    timeout=7200,
                    check=False,
                )  # fmt: skip
            except BaseException:
                self._abandon(plan)
                raise
            if migrate_done.returncode != 0:
                self._abandon(plan)
                tail = migrate_done.stderr.strip().splitlines()[-4:]
                here = self.dom0.domain(str(plan.domid)) is not None
                state = self._state(plan.domid) if here else ""
                if here and ("s" in state or "p" in state):
                    hint = (
                        f"the domain is still here but xl could not resume it (xl list state "
                        f"{state}); its disks here are whole and nothing is left on {dest}: "
                        f"xl destroy {plan.name}, then start it again from its config"
                    )
                elif here:
                    hint = f"the domain runs on here on its own disks; nothing is left on {dest}"
                elif self._triple_faulted(plan.domid):
                    hint = (
                        "the guest itself crashed during the move (xl dmesg: "
                        f"d{plan.domid}v0 Triple fault); nothing is left on {dest}"
                    )
                else:
                    hint = f"the domain is not running here: see xl list on {dest}"
                raise OperationFailed(
                    f"xl migrate of {plan.name} to {dest} failed: {' / '.join(tail)}", hint=hint
                )
            try:
                handover = json.loads(plan.handover_file.read_text())
            except (OSError, ValueError):
                handover = {"seconds": None}
            shutil.rmtree(directory, ignore_errors=True)
            snapshots = len(store.names())
        report("done", {})
        return {
            "domain": plan.name,
            "dest": dest,
            "seconds": time.monotonic() - start,
            "handover_seconds": handover["seconds"],
            "disks": [
                {"vdev": d.vdev, "path": d.path, "bytes": d.virtual_size} for d in plan.disks
            ],
            "left_here": [d.path for d in plan.disks],
            "snapshots_left_here": snapshots,
        }

    def _state(self, domid: int) -> str:
        """xl's state letters for ``domid`` ("r-----", "---s--"), "" if it cannot say."""
        listed = self.dom0.run(["xl", "list", str(domid)], timeout=60, check=False)
        rows = listed.stdout.splitlines()[1:] if listed.returncode == 0 else []
        fields = rows[0].split() if rows else []
        return fields[4] if len(fields) >= 6 else ""

    def _triple_faulted(self, domid: int) -> bool:
        log = self.dom0.run(["xl", "dmesg"], timeout=60, check=False).stdout
        return f"d{domid}v0 Triple fault" in log

    # -- the destination ---------------------------------------------------------

    def _prepare_destination(self, plan: Plan) -> None:
        """Empty images at the same paths, each served by its own ``qemu-nbd``; all of
        them or (after a failure) none."""
        lines = ["set -u", "made=''", 'cleanup() { for f in $made; do rm -f "$f"; done; }']
        for d, pid_file in zip(plan.disks, plan.pid_files, strict=True):
            path, parent = shlex.quote(d.path), shlex.quote(str(Path(d.path).parent))
            need = (d.allocated + HEADROOM) // 1024
            lines += [
                f"if [ -e {path} ]; then echo {shlex.quote(f'{d.path} already exists')} >&2;"
                " cleanup; exit 3; fi",
                f"mkdir -p {parent} || {{ cleanup; exit 1; }}",
                f"free=$(df -Pk {parent} | awk 'NR==2 {{print $4}}')",
                f'if [ "$free" -lt {need} ]; then echo "{d.path}: $free KiB free in'
                f' {parent}, {need} KiB needed" >&2; cleanup; exit 4; fi',
                f"qemu-img create -q -f {d.format} {path} {d.virtual_size} >&2"
                " || { cleanup; exit 1; }",
                f'made="$made {d.path}"',
                f"qemu-nbd --fork --pid-file={pid_file} --bind={plan.dest_address}"
                f" --port={d.port} --export-name={d.vdev} --format={d.format}"
                f" --cache=writeback {path} >&2 || {{ cleanup; exit 5; }}",
            ]
        done = self.dom0.run(ssh(plan.dest, "\n".join(lines)), timeout=300, check=False)
        if done.returncode != 0:
            self._stop_servers(plan)
            message = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
            if done.returncode == 3:
                raise UsageError(
                    f"{plan.dest} already has {message[0].removesuffix(' already exists')}",
                    hint="xenkit migrate copies the disks and never overwrites; for shared "
                    "storage use xl migrate",
                )
            if done.returncode == 4:
                raise OperationFailed(
                    f"not enough space on {plan.dest}: {message[0]}",
                    hint="free space there (nothing was started)",
                )
            raise OperationFailed(
                f"cannot prepare {plan.dest} for the disks ({done.returncode}): {message[0]}",
                hint="check ssh to it, qemu-img and qemu-nbd there, and the NBD ports "
                f"({plan.disks[0].port}…)",
            )

    def _stop_servers(self, plan: Plan) -> None:
        files = " ".join(shlex.quote(f) for f in plan.pid_files)
        script = (
            f'for f in {files}; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null;'
            ' rm -f "$f"; done; true'
        )
        self.dom0.run(ssh(plan.dest, script), timeout=120, check=False)

    def _abandon(self, plan: Plan) -> None:
        """Stop the mirrors here and remove what the destination got, unless the domain
        runs there after all."""
        with (
            contextlib.suppress(OperationFailed, OSError),
            self.dom0.qmp(plan.domid, timeout=30) as qmp,
        ):
            for d in plan.disks:
                with contextlib.suppress(QmpError):
                    qmp.execute("block-job-cancel", {"device": d.job, "force": True})
                with contextlib.suppress(OperationFailed):
                    wait_for_job(qmp, d.job, want="concluded", timeout=60)
                with contextlib.suppress(QmpError):
                    qmp.execute("job-dismiss", {"id": d.job})
                with contextlib.suppress(QmpError):
                    qmp.execute("blockdev-del", {"node-name": d.nbd_node})
        self._stop_servers(plan)
        names = " ".join(shlex.quote(n) for n in (plan.name, f"{plan.name}--incoming"))
        paths = " ".join(shlex.quote(d.path) for d in plan.disks)
        script = (
            f'for n in {names}; do xl domid "$n" >/dev/null 2>&1 && exit 0; done; '
            f"sleep 0.2; rm -f {paths}"
        )
        self.dom0.run(ssh(plan.dest, script), timeout=120, check=False)

    # -- the mirrors ---------------------------------------------------------------

    def _start_mirrors(self, plan: Plan, report: Progress) -> None:
        with self.dom0.qmp(plan.domid, timeout=120) as qmp:
            tops = top_nodes(qmp)
            # The guest is paused while the jobs start: without it Debian 12's QEMU
            # (7.2) died in most lab moves of a writing guest, during blockdev-mirror
            # or soon after (QMP connection reset; "segfault at 0" in dmesg); with
            # it, in none. The pause lasts as long as the two commands.
            self.dom0.pause(plan.domid)
            try:
                for d in plan.disks:
                    device = tops.get(d.path)
                    if device is None:
                        raise OperationFailed(f"the QEMU of {plan.name} has no node for {d.path}")
                    self._mirror(qmp, plan, d, device)
            finally:
                self.dom0.unpause(plan.domid)
            self._wait_ready(qmp, plan, report)

    @staticmethod
    def _mirror(qmp: Qmp, plan: Plan, d: MirrorDisk, device: str) -> None:
        server = {"type": "inet", "host": plan.dest_address, "port": str(d.port)}
        qmp.execute(
            "blockdev-add",
            {"driver": "nbd", "node-name": d.nbd_node, "server": server, "export": d.vdev},
        )
        # Background copy (not write-blocking): the soft cancel at the hand-over
        # copies what is still dirty, with the guest suspended.
        qmp.execute(
            "blockdev-mirror",
            {
                "job-id": d.job,
                "device": device,
                "target": d.nbd_node,
                "sync": "full",
                "auto-dismiss": False,
            },
        )

    def _wait_ready(self, qmp: Qmp, plan: Plan, report: Progress) -> None:
        wanted = {d.job for d in plan.disks}
        last = 0.0
        while True:
            jobs = {j["id"]: j for j in qmp.execute("query-jobs") if j["id"] in wanted}
            for job_id in wanted:
                job = jobs.get(job_id)
                if job is None or job.get("error") or job.get("status") == "concluded":
                    why = (job or {}).get("error", "it ended")
                    raise OperationFailed(
                        f"mirroring to {plan.dest} failed ({job_id}): {why}",
                        hint="the domain runs on here; check the network to the destination",
                    )
            done = sum(int(j.get("current-progress", 0)) for j in jobs.values())
            total = sum(int(j.get("total-progress", 0)) for j in jobs.values())
            if all(j.get("status") == "ready" for j in jobs.values()):
                report("mirror", {"done": done, "total": total, "ready": True})
                return
            if time.monotonic() - last > 1.0:
                report("mirror", {"done": done, "total": total, "ready": False})
                last = time.monotonic()
            time.sleep(0.1)


def hand_over(plan: Plan, dom0: Dom0 | None = None) -> float:
    """At the guest's last instant here: finish every mirror (the copies now equal the
    images) and wait until the destination's NBD servers have closed them. Its time."""
    dom0 = dom0 or Dom0()
    start = time.monotonic()
    with dom0.qmp(plan.domid, timeout=120) as qmp:
        for d in plan.disks:
            qmp.execute("block-job-cancel", {"device": d.job})
        for d in plan.disks:
            wait_for_job(qmp, d.job, want="concluded", timeout=600)
            qmp.execute("job-dismiss", {"id": d.job})
            qmp.execute("blockdev-del", {"node-name": d.nbd_node})
    files = " ".join(shlex.quote(f) for f in plan.pid_files)
    # qemu-nbd exits (flushing) once its client has gone; wait for that, briefly.
    script = (
        f'for f in {files}; do p=$(cat "$f" 2>/dev/null) || continue; i=0; '
        'while kill -0 "$p" 2>/dev/null; do i=$((i+1)); '
        'if [ $i -gt 600 ]; then echo "qemu-nbd $p did not exit" >&2; exit 1; fi; '
        'sleep 0.05; done; rm -f "$f"; done'
    )
    dom0.run(ssh(plan.dest, script), timeout=120)
    seconds = time.monotonic() - start
    write_atomic(plan.handover_file, json.dumps({"seconds": seconds, "at": time.time()}))
    return seconds
