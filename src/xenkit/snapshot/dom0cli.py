"""``xenkit-dom0.pyz snapshot ...`` and ``migrate``: the snapshot engine's commands and
storage migration, run in dom0.

Every command prints one JSON document (the control side's ``xenkit snapshot``
renders it); an error is ``{"error": {...}}`` with the exit code of its kind.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xenkit.core.errors import UsageError, XenkitError
from xenkit.snapshot.store import DEFAULT_ROOT, tree_lines

if TYPE_CHECKING:
    from xenkit.snapshot.engine import SnapshotEngine
    from xenkit.snapshot.model import Snapshot
# Each command imports only what it runs: a module costs tens of milliseconds to
# load in an emulated dom0, and every command starts a new Python.


def snapshot_json(s: Snapshot, current: str | None = None) -> dict[str, Any]:
    data = s.to_json()
    data.pop("config", None)
    extra = data.pop("extra", {})
    data["state"] = extra.get("state", "complete")
    data["kind"] = "disk-only" if s.disk_only else "checkpoint"
    data["current"] = s.name == current
    data["created_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.created))
    return data


def add_parser(sub: Any) -> None:
    p = sub.add_parser("snapshot", help="snapshots of running domains (JSON out)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)
    ops = p.add_subparsers(dest="op", required=True)
    c = ops.add_parser("create")
    c.add_argument("domain")
    c.add_argument("name", nargs="?")
    c.add_argument("--disk-only", action="store_true")
    c.add_argument("--mode", choices=("internal", "external"))
    c.add_argument("--disk", action="append", dest="disks")
    c.add_argument("--description", default="")
    sv = ops.add_parser("save")
    sv.add_argument("domain")
    sv.add_argument("file", type=Path)
    sv.add_argument("--keep-running", action="store_true")
    rs = ops.add_parser("restore")
    rs.add_argument("file", type=Path)
    for op in ("list", "verify"):
        q = ops.add_parser(op)
        q.add_argument("domain")
        if op == "verify":
            q.add_argument("--repair", action="store_true")
    for op in ("info", "revert", "delete"):
        q = ops.add_parser(op)
        q.add_argument("domain")
        q.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from xenkit.snapshot.engine import SnapshotEngine

    engine = SnapshotEngine(root=args.root)
    try:
        print(json.dumps(_dispatch(engine, args), sort_keys=True))
    except XenkitError as exc:
        return _print_error(exc)
    return 0


def _dispatch(engine: SnapshotEngine, args: argparse.Namespace) -> dict[str, Any]:
    if args.op == "create":
        start = time.monotonic()
        s = engine.create(
            args.domain,
            args.name,
            disk_only=args.disk_only,
            mode=args.mode,
            vdevs=args.disks,
            description=args.description,
        )
        return {"snapshot": snapshot_json(s, s.name), "seconds": time.monotonic() - start}
    if args.op in ("save", "restore"):
        start = time.monotonic()
        if args.op == "save":
            s = engine.save(args.domain, args.file, keep_running=args.keep_running)
        else:
            s = engine.restore(args.file)
        return {"snapshot": snapshot_json(s, s.name), "seconds": time.monotonic() - start}
    if args.op == "list":
        store, snaps, current = engine.snapshots(args.domain)
        return {
            "domain_uuid": store.domain_uuid,
            "current": current,
            "snapshots": [snapshot_json(s, current) for s in snaps],
            "tree": tree_lines(snaps, current),
        }
    if args.op == "info":
        store, _ = engine.store_for(args.domain)
        s = store.get(args.name)
        data = snapshot_json(s, store.current())
        data["config"] = s.config
        data["children"] = [c.name for c in store.children(s.name)]
        return {"snapshot": data}
    if args.op == "revert":
        start = time.monotonic()
        s = engine.revert(args.domain, args.name)
        return {
            "snapshot": snapshot_json(s, s.name),
            "seconds": time.monotonic() - start,
            "dropped": engine.last_dropped,
        }
    if args.op == "delete":
        start = time.monotonic()
        s = engine.delete(args.domain, args.name)
        return {"deleted": s.name, "seconds": time.monotonic() - start}
    from xenkit.snapshot.verify import verify

    report = verify(engine, args.domain, repair=args.repair)
    return report.to_json()


def add_migrate_parsers(sub: Any) -> None:
    m = sub.add_parser("migrate", help="move a running domain and its disks (JSON out)")
    m.add_argument("domain")
    m.add_argument("dest")
    m.add_argument("--nbd-port", type=int, help="first NBD port on DEST (default 10809)")
    m.add_argument("--progress-file", type=Path)
    r = sub.add_parser("migrate-relay", help="what xenkit migrate gives xl migrate -s")
    r.add_argument("plan", type=Path)
    r.add_argument("remote", nargs=argparse.REMAINDER)


def run_migrate(args: argparse.Namespace) -> int:
    from xenkit.snapshot.migrate import DEFAULT_NBD_PORT, StorageMigration
    from xenkit.snapshot.relay import relay

    if args.command == "migrate-relay":
        if len(args.remote) < 2:
            print("migrate-relay: want PLAN HOST COMMAND...", file=sys.stderr)
            return 2
        return relay(args.plan, args.remote)
    progress_file: Path | None = args.progress_file

    def progress(stage: str, detail: dict[str, Any]) -> None:
        line = json.dumps({"stage": stage, **detail, "at": time.time()})
        print(line, file=sys.stderr, flush=True)
        if progress_file is not None:
            tmp = progress_file.with_name(f".{progress_file.name}.tmp")
            tmp.write_text(line + "\n")
            tmp.replace(progress_file)

    me = [sys.executable, "-I", str(Path(sys.argv[0]).resolve()), "migrate-relay"]
    try:
        port = DEFAULT_NBD_PORT if args.nbd_port is None else args.nbd_port
        if not 1024 <= port <= 65535 - 16:
            raise UsageError(f"--nbd-port must be 1024-65519, not {port}")
        result = StorageMigration().migrate(
            args.domain, args.dest, port=port, relay=me, progress=progress
        )
    except XenkitError as exc:
        return _print_error(exc)
    print(json.dumps(result, sort_keys=True))
    return 0


def _print_error(exc: XenkitError) -> int:
    error = {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    print(json.dumps({"error": error, "exit_code": exc.exit_code}))
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xenkit-dom0.pyz")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
