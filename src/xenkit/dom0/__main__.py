"""``python3 xenkit-dom0.pyz COMMAND``: the dom0 zipapp's entry point.

Commands:

``version``
    one JSON line: xenkit's version, the archive's source hash, Python's version.
``guest-exec DOMID [--timeout S] [--wait S]``
    runs the ``sh`` command read from stdin in a guest kit booted with
    ``xenkit.agent``, over its console; prints one JSON line, ``status`` and
    ``output`` (base64). ``--wait`` first waits up to S seconds for the agent.
``snapshot create|list|info|revert|delete|verify ...``
    the snapshot engine (``xenkit.snapshot``); one JSON document out.
``migrate DOMAIN DEST [--nbd-port P] [--progress-file F]``
    storage migration (``xenkit.snapshot.migrate``): the disks are mirrored to
    DEST over NBD, then ``xl migrate`` moves the domain; one JSON document out,
    progress as JSON lines on stderr (and in F).
``migrate-relay PLAN HOST COMMAND...``
    what ``migrate`` gives ``xl migrate -s``: ssh with the disks' hand-over.
``serve SOCKET [--idle S] [--detach]``
    the resident fork server (``xenkit.dom0.server``) that runs the commands
    above without starting Python again for each; ``Host.run_dom0`` uses it.
``clamp run|set|off|status|watch|measure|systemd-unit|thermald-conf ...``
    the host-wide idle floor (``xenkit.clamp``): ``set PCT`` starts (or
    retargets) the controller daemon, ``off`` stops it and gives every cap
    back; one JSON document out (``watch``: a line per period).
``selftest [--json]``
    imports every module in the archive and looks at the host (dom0?
    xenstored, xl, ``xen.lowlevel.xc``); exits 0 when the archive itself
    works, whatever the host lacks (those checks only inform).

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import xenkit
from xenkit.clamp import dom0cli as clamp_cli
from xenkit.core.errors import XenkitError
from xenkit.snapshot import dom0cli as snapshot_cli

#: Where Debian's (and most distributions') Xen keeps its Python bindings.
XEN_PYTHON_GLOBS = ("/usr/lib/xen-*/lib/python", "/usr/lib/xen/lib/python")
XENSTORED_SOCKETS = ("/run/xenstored/socket", "/var/run/xenstored/socket")
MIN_PYTHON = (3, 9)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    #: A required check failing means the archive does not work here.
    required: bool = False


def build_info() -> dict[str, str]:
    import pkgutil

    try:
        data = pkgutil.get_data("xenkit.dom0", "build.json")
    except OSError:
        data = None
    if not data:
        return {}
    info: dict[str, str] = json.loads(data)
    return info


def version() -> dict[str, str]:
    import platform

    info = build_info()
    return {
        "xenkit": xenkit.__version__,
        "build": info.get("source_hash", "unknown"),
        "python": platform.python_version(),
        "archive": str(Path(sys.argv[0]).resolve()) if sys.argv and sys.argv[0] else "",
    }


def _modules() -> list[str]:
    import pkgutil

    names = ["xenkit"]
    for info in pkgutil.walk_packages(xenkit.__path__, "xenkit."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def selftest() -> list[Check]:
    import importlib
    import platform
    import shutil

    checks = [
        Check(
            "python",
            sys.version_info[:2] >= MIN_PYTHON,
            f"{platform.python_version()} (needs {'.'.join(map(str, MIN_PYTHON))}+)",
            required=True,
        )
    ]
    for name in _modules():
        try:
            importlib.import_module(name)
            checks.append(Check(f"import {name}", True, "ok", required=True))
        except Exception as exc:
            checks.append(Check(f"import {name}", False, f"{type(exc).__name__}: {exc}", True))
    try:
        caps = Path("/proc/xen/capabilities").read_text().strip()
    except OSError as exc:
        caps = ""
        dom0 = Check("dom0", False, f"/proc/xen/capabilities: {exc.strerror}")
    else:
        dom0 = Check("dom0", "control_d" in caps, caps or "not dom0 (no control_d)")
    checks.append(dom0)
    socket = next((p for p in XENSTORED_SOCKETS if Path(p).exists()), None)
    checks.append(Check("xenstored", socket is not None, socket or "no xenstored socket"))
    xl = shutil.which("xl") or next(
        (p for p in ("/usr/sbin/xl", "/usr/local/sbin/xl") if Path(p).exists()), None
    )
    checks.append(Check("xl", xl is not None, xl or "xl not found"))
    checks.append(_xc_check())
    return checks


def _xc_check() -> Check:
    import importlib

    for pattern in XEN_PYTHON_GLOBS:
        for found in sorted(Path("/").glob(pattern.lstrip("/"))):
            path = str(found)
            if path not in sys.path:
                sys.path.append(path)
    try:
        module = importlib.import_module("xen.lowlevel.xc")
    except ImportError as exc:
        return Check("xen.lowlevel.xc", False, str(exc))
    return Check("xen.lowlevel.xc", True, getattr(module, "__file__", None) or "built in")


def _guest_exec(domid: int, command: str, timeout: float, wait: float) -> int:
    from xenkit.dom0 import console

    try:
        if wait > 0:
            console.wait_for_agent(domid, wait)
        result = console.guest_exec(domid, command, timeout=timeout)
    except XenkitError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint}))
        return exc.exit_code
    output = base64.b64encode(result.output).decode()
    print(json.dumps({"status": result.status, "output": output}))
    return 0


def _serve(path: str, idle: float, *, detach: bool) -> int:
    from xenkit.dom0 import server

    if detach:
        if os.fork() > 0:
            return 0
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    # What the commands import when they run, imported once here for every call.
    import xenkit.clamp.daemon
    import xenkit.clamp.xenctl
    import xenkit.dom0.console
    import xenkit.snapshot.engine
    import xenkit.snapshot.migrate
    import xenkit.snapshot.relay
    import xenkit.snapshot.verify  # noqa: F401

    return server.serve(path, main, idle=idle)


def main(argv: Sequence[str] | None = None) -> int:
    # The commands here read xl's and qemu-img's words, so they speak C; and argparse's
    # gettext then skips its search for message catalogs, which cost 7 ms a call
    # (0.3 s a command) in an emulated dom0.
    os.environ["LANGUAGE"] = "C"
    parser = argparse.ArgumentParser(prog="xenkit-dom0.pyz", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print versions as one JSON line")
    st = sub.add_parser("selftest", help="check the archive and the host")
    st.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    ge = sub.add_parser("guest-exec", help="run stdin's command in a guest, over its console")
    ge.add_argument("domid", type=int)
    ge.add_argument("--timeout", type=float, default=60.0)
    ge.add_argument("--wait", type=float, default=0.0)
    sv = sub.add_parser("serve", help="the resident fork server for these commands")
    sv.add_argument("socket")
    sv.add_argument("--idle", type=float, default=600.0)
    sv.add_argument("--detach", action="store_true")
    snapshot_cli.add_parser(sub)
    snapshot_cli.add_migrate_parsers(sub)
    clamp_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.socket, args.idle, detach=args.detach)
    if args.command == "snapshot":
        return snapshot_cli.run(args)
    if args.command in ("migrate", "migrate-relay"):
        return snapshot_cli.run_migrate(args)
    if args.command == "clamp":
        return clamp_cli.run(args)
    if args.command == "guest-exec":
        return _guest_exec(args.domid, sys.stdin.read(), args.timeout, args.wait)
    if args.command == "version":
        print(json.dumps(version(), sort_keys=True))
        return 0
    checks = selftest()
    ok = all(c.ok for c in checks if c.required)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, sort_keys=True))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "no  ")
            print(f"{mark} {c.name}: {c.detail}")
        print("selftest passed" if ok else "selftest FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
