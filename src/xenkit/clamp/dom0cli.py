"""``xenkit-dom0.pyz clamp ...``: the clamp's commands, run in dom0.

``run`` is the daemon itself (foreground: systemd's ``ExecStart``, or what
``set`` starts detached). The others print one JSON document (the control
side's ``xenkit clamp`` renders it), except ``watch``, which prints a line per
period, and ``systemd-unit`` and ``thermald-conf`` without ``--json``. An error is
``{"error": {...}, "exit_code": N}`` with the exit code of its kind. The renderers
here (:func:`status_lines`, :func:`watch_line`) are shared with the control side,
so both print the same.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xenkit.core.errors import UsageError, XenkitError

# Each command imports only what it runs (see xenkit.snapshot.dom0cli): the daemon's
# modules load in the commands, not when the zipapp parses its arguments.

UNIT_NAME = "xenkit-clamp.service"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--lib-dir", type=Path, default=None, help=argparse.SUPPRESS)


def _settings_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The daemon's settings; ``set`` leaves them None, to tell given from defaulted."""

    def d(value: object) -> object:
        return value if defaults else None

    p.add_argument("--period", type=float, default=d(1.0), help="control period, s (1)")
    p.add_argument("--pool", type=int, default=d(0), help="the cpupool to clamp (0)")
    p.add_argument(
        "--exempt-dom0",
        dest="exempt_dom0",
        action="store_true",
        default=d(True),
        help="leave dom0 uncapped (the default)",
    )
    p.add_argument("--no-exempt-dom0", dest="exempt_dom0", action="store_false", default=d(True))
    p.add_argument(
        "--exempt", action="append", default=None, metavar="DOMAIN", help="leave it uncapped"
    )
    p.add_argument("--max-idle", type=int, default=d(50), help="highest target, % (50)")
    p.add_argument("--kp", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ki", type=float, default=None, help=argparse.SUPPRESS)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("clamp", help="the host-wide idle floor (JSON out)")
    ops = p.add_subparsers(dest="op", required=True)
    run = ops.add_parser("run", help="the controller, in the foreground")
    run.add_argument("--target", type=int, default=0, help="% idle to hold (0: not yet)")
    _settings_options(run, defaults=True)
    _common(run)
    st = ops.add_parser("set", help="hold PCT % idle (starts the controller if needed)")
    st.add_argument("target", type=int)
    st.add_argument("--timeout", type=float, default=30.0)
    _settings_options(st, defaults=False)
    _common(st)
    off = ops.add_parser("off", help="stop the controller; every cap goes back")
    off.add_argument("--timeout", type=float, default=15.0)
    _common(off)
    status = ops.add_parser("status", help="target, achieved idle, caps, and why")
    status.add_argument("--text", action="store_true", help="xl-style text, not JSON")
    _common(status)
    watch = ops.add_parser("watch", help="a line per control period")
    watch.add_argument("--count", type=int, default=0, help="stop after N lines (0: never)")
    watch.add_argument("--json", action="store_true", help="JSON lines")
    _common(watch)
    m = ops.add_parser("measure", help="the pool's idle over 1 s windows, from getcpuinfo")
    m.add_argument("--seconds", type=int, default=10)
    m.add_argument("--window", type=float, default=1.0)
    m.add_argument(
        "--after",
        type=float,
        default=0.0,
        help="wait this long before the first window (the command's own start is dom0 "
        "load, which a running clamp answers)",
    )
    m.add_argument("--pool", type=int, default=0)
    _common(m)
    unit = ops.add_parser("systemd-unit", help=f"print {UNIT_NAME}")
    unit.add_argument("--json", action="store_true")
    conf = ops.add_parser("thermald-conf", help="print a thermal-conf.xml that drives the clamp")
    conf.add_argument("--sensor", type=Path, required=True, help="a file of millidegrees C")
    conf.add_argument("--trip", type=float, default=85.0, help="clamp above this, C (85)")
    conf.add_argument("--step", type=int, default=5, help="% idle per step (5)")
    conf.add_argument(
        "--max-state", type=int, default=None, help="highest target (the running clamp's max_idle)"
    )
    conf.add_argument("--json", action="store_true")
    _common(conf)


def run(args: argparse.Namespace) -> int:
    try:
        if args.op == "run":
            return _run(args)
        if args.op == "watch":
            return _watch(args)
        if args.op == "systemd-unit":
            text = systemd_unit()
            print(json.dumps({"unit": text, "name": UNIT_NAME}) if args.json else text, end="")
            if args.json:
                print()
            return 0
        if args.op == "thermald-conf":
            data = thermald_conf(args)
            print(json.dumps(data) if args.json else data["conf"], end="\n" if args.json else "")
            return 0
        if args.op == "status" and args.text:
            from xenkit.clamp.daemon import status
            from xenkit.clamp.xenctl import XcControl

            print("\n".join(status_lines(status(XcControl, _paths(args)))))
            return 0
        print(json.dumps(_dispatch(args), sort_keys=True))
    except XenkitError as exc:
        return _print_error(exc)
    return 0


def _paths(args: argparse.Namespace) -> Any:
    from xenkit.clamp.daemon import LIB_DIR, RUN_DIR, ClampPaths

    return ClampPaths(args.run_dir or RUN_DIR, args.lib_dir or LIB_DIR)


def _settings(args: argparse.Namespace, target: int) -> Any:
    from xenkit.clamp.controller import Tuning
    from xenkit.clamp.daemon import Settings

    base = Settings()
    return Settings(
        target=target,
        period=base.period if args.period is None else args.period,
        pool=base.pool if args.pool is None else args.pool,
        exempt_dom0=base.exempt_dom0 if args.exempt_dom0 is None else args.exempt_dom0,
        exempt=tuple(args.exempt or ()),
        max_idle=base.max_idle if args.max_idle is None else args.max_idle,
        kp=Tuning.kp if args.kp is None else args.kp,
        ki=Tuning.ki if args.ki is None else args.ki,
    )


def _run(args: argparse.Namespace) -> int:
    from xenkit.clamp.daemon import record_failure, serve
    from xenkit.clamp.xenctl import XcControl

    paths = _paths(args)
    try:
        settings = _settings(args, args.target)
        xen = XcControl()
    except XenkitError as exc:
        paths.run.mkdir(parents=True, exist_ok=True)
        record_failure(paths, exc)
        print(
            f"clamp: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), file=sys.stderr
        )
        return exc.exit_code
    return serve(xen, settings, paths)


def _dispatch(args: argparse.Namespace) -> dict[str, Any]:
    from xenkit.clamp import daemon
    from xenkit.clamp.xenctl import XcControl

    paths = _paths(args)
    if args.op == "status":
        return daemon.status(XcControl, paths)
    if args.op == "off":
        return daemon.stop(XcControl, paths, timeout=args.timeout)
    if args.op == "measure":
        return measure(XcControl(), args.pool, args.seconds, args.window, after=args.after)
    return _set(args, paths)


def _set(args: argparse.Namespace, paths: Any) -> dict[str, Any]:
    from xenkit.clamp import daemon
    from xenkit.clamp.controller import check_target
    from xenkit.clamp.xenctl import XcControl

    max_idle = args.max_idle if args.max_idle is not None else 50
    check_target(args.target, max_idle)
    with daemon.cli_lock(paths):
        pid = daemon.running_pid(paths)
        if pid is not None:
            _refuse_changed_settings(args, paths)
            state = daemon.request_target(paths, args.target, timeout=args.timeout)
            return {"started": False, "pid": pid, "target": args.target, "state": state}
        settings = _settings(args, args.target)
        xen = XcControl()
        repaired = daemon.repair_if_dead(lambda: xen, paths)
        if args.target == 0:
            return {
                "started": False,
                "pid": None,
                "target": 0,
                "note": "the clamp is not running: nothing to stop",
                "repaired": [asdict(r) for r in repaired],
            }
        preflight(xen, settings)
        state = daemon.spawn(settings, paths, timeout=args.timeout)
        return {"started": True, "pid": state["pid"], "target": args.target, "state": state}


def preflight(xen: Any, settings: Any) -> None:
    """Refuse what the daemon could not do, before starting it: a pool without caps, or
    one with no domain to cap."""
    from xenkit.clamp.xenctl import check_scheduler

    info = xen.pool(settings.pool)
    check_scheduler(info)
    in_pool = [d for d in xen.domains() if d.pool == settings.pool and not d.ending]
    exempt = set(settings.exempt)
    capped = [
        d
        for d in in_pool
        if not (d.domid == 0 and settings.exempt_dom0)
        and str(d.domid) not in exempt
        and (not exempt or xen.name(d.domid) not in exempt)
    ]
    if not capped:
        names = ", ".join(sorted(xen.name(d.domid) for d in in_pool)) or "nothing"
        raise UsageError(
            f"no domains to cap in cpupool {settings.pool}: only {names} (exempt)",
            hint="start the guests first (the clamp caps domains other than dom0); or "
            "--no-exempt-dom0 to cap dom0 too (never below 25% of a pCPU)",
        )


def _refuse_changed_settings(args: argparse.Namespace, paths: Any) -> None:
    from xenkit.clamp.journal import read_json

    state = read_json(paths.state)
    running = state.get("settings", {}) if isinstance(state, dict) else {}
    asked = {
        "period": args.period,
        "pool": args.pool,
        "exempt_dom0": args.exempt_dom0,
        "max_idle": args.max_idle,
        "kp": args.kp,
        "ki": args.ki,
    }
    if args.exempt:
        asked["exempt"] = list(args.exempt)
    differ = [k for k, v in asked.items() if v is not None and k in running and running[k] != v]
    if differ:
        shown = ", ".join(f"{k}={running[k]}" for k in differ)
        raise UsageError(
            f"the clamp runs with {shown}; only its target changes while it runs",
            hint="stop it (clamp off) and set again with the new settings",
        )


def measure(
    xen: Any, pool: int, seconds: int, window: float = 1.0, *, after: float = 0.0
) -> dict[str, Any]:
    """The pool's idle in consecutive windows and each domain's use, from Xen's own
    counters (what the lab tests judge the clamp by, independently of its daemon)."""
    from xenkit.clamp.xenctl import CAPPABLE, DomainGone, PoolInfo

    if not 1 <= seconds <= 600 or not 0.1 <= window <= 60:
        raise UsageError("measure --seconds must be 1-600 and --window 0.1-60")
    if not 0 <= after <= 600:
        raise UsageError(f"measure --after must be 0-600 seconds, not {after}")
    time.sleep(after)
    info: PoolInfo = xen.pool(pool)
    cpus = info.cpus
    windows: list[float] = []
    start = time.monotonic()
    first_idle = idle = xen.idle_ns()
    first_doms = {d.domid: d for d in xen.domains()}
    at = start
    while at - start < seconds - 1e-6:
        time.sleep(max(0.0, start + (len(windows) + 1) * window - time.monotonic()))
        now = time.monotonic()
        fresh = xen.idle_ns()
        spent = sum(max(0, fresh[c] - idle[c]) for c in cpus if c in fresh and c in idle)
        windows.append(100.0 * spent / (len(cpus) * (now - at) * 1e9))
        idle, at = fresh, now
    total = at - start
    spent = sum(max(0, idle[c] - first_idle[c]) for c in cpus if c in idle and c in first_idle)
    domains = []
    for d in xen.domains():
        before = first_doms.get(d.domid)
        if d.pool != pool or before is None or before.uuid != d.uuid:
            continue
        try:
            p = xen.sched_get(d.domid, info.scheduler) if info.scheduler in CAPPABLE else None
        except DomainGone:
            continue
        domains.append(
            {
                "domid": d.domid,
                "name": xen.name(d.domid),
                "vcpus": d.vcpus,
                "weight": p.weight if p else None,
                "cap": p.cap if p else None,
                "busy": 100.0 * (d.cpu_ns - before.cpu_ns) / (total * 1e9),
            }
        )
    return {
        "pool": pool,
        "scheduler": info.scheduler,
        "pcpus": len(cpus),
        "seconds": total,
        "window": window,
        "windows": windows,
        "idle": 100.0 * spent / (len(cpus) * total * 1e9),
        "domains": domains,
    }


def _watch(args: argparse.Namespace) -> int:
    from xenkit.clamp.daemon import running_pid
    from xenkit.clamp.journal import read_json

    paths = _paths(args)
    last: int | None = None
    printed = 0
    if not args.json:
        print(watch_header(), flush=True)
    while args.count <= 0 or printed < args.count:
        state = read_json(paths.state)
        if running_pid(paths) is None:
            if printed == 0:
                raise UsageError("the clamp is not running", hint="start it: clamp set PCT")
            return 0
        rows = state.get("history", []) if isinstance(state, dict) else []
        names = {str(d["domid"]): d["name"] for d in (state or {}).get("domains", [])}
        last = _follow_from(rows, last)
        for row in rows:
            if row["seq"] <= last:
                continue
            last = row["seq"]
            print(json.dumps(row, sort_keys=True) if args.json else watch_line(row, names))
            printed += 1
            if args.count and printed >= args.count:
                break
        sys.stdout.flush()
        period = float(((state or {}).get("settings") or {}).get("period", 1.0))
        time.sleep(max(0.05, period / 2))
    return 0


def _follow_from(rows: list[dict[str, Any]], last: int | None) -> int:
    """The seq after which ``watch`` prints: at first, the period before the latest,
    so that it starts now (as vmstat does), not with the 120 periods kept."""
    if last is not None:
        return last
    return int(rows[-1]["seq"]) - 1 if rows else -1


def systemd_unit() -> str:
    import pkgutil

    data = pkgutil.get_data("xenkit.clamp", UNIT_NAME)
    if data is None:
        raise UsageError(f"{UNIT_NAME} is missing from this build")
    return data.decode()


def thermald_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The config, once its sensor is known to read: thermald drops a sensor it
    cannot read without a word, and then never clamps."""
    from xenkit.clamp.controller import DEFAULT_MAX_IDLE, MAX_IDLE_LIMIT
    from xenkit.clamp.cooling import thermald_conf as conf

    sensor: Path = args.sensor
    where = "a thermal zone's temp (/sys/class/thermal/thermal_zoneN/temp), hwmon's temp1_input,"
    hint = f"give {where} or a file a script keeps up to date (millidegrees C, as 85000)"
    try:
        int(sensor.read_text().strip())
    except OSError as exc:
        raise UsageError(f"cannot read the sensor {sensor}: {exc.strerror}", hint=hint) from exc
    except ValueError as exc:
        raise UsageError(f"{sensor} does not hold a temperature", hint=hint) from exc
    paths = _paths(args)
    max_state = args.max_state
    if max_state is None:
        from xenkit.clamp.daemon import running_pid
        from xenkit.clamp.journal import read_json

        state = read_json(paths.state) if running_pid(paths) is not None else None
        running = state.get("max_idle") if isinstance(state, dict) else None
        max_state = int(running) if running is not None else DEFAULT_MAX_IDLE
    if not 1 <= max_state <= MAX_IDLE_LIMIT:
        raise UsageError(
            f"--max-state {max_state} is out of range", hint=f"give 1-{MAX_IDLE_LIMIT} (% idle)"
        )
    if not 1 <= args.step <= max_state:
        raise UsageError(f"--step {args.step} is out of range", hint=f"give 1-{max_state}")
    if not 0 < args.trip < 150:
        raise UsageError(f"--trip {args.trip} C is not a temperature to clamp at", hint="0-150")
    device = paths.cooling
    text = conf(device, sensor, trip_c=args.trip, step=args.step, max_state=max_state)
    return {"conf": text, "device": str(device), "sensor": str(sensor), "max_state": max_state}


def _print_error(exc: XenkitError) -> int:
    error = {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    print(json.dumps({"error": error, "exit_code": exc.exit_code}))
    return exc.exit_code


# -- rendering, shared with the control side's xenkit clamp --------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def status_lines(state: dict[str, Any]) -> list[str]:
    """``xenkit clamp status`` for people: a header, an xl-style table, the reasons."""
    lines: list[str] = []
    if not state.get("running"):
        lines.append("clamp: not running")
        for r in state.get("repaired") or []:
            lines.append(f"  dom{r['domid']} {r['name']}: {r['action']} cap {r['cap']}")
        lines += [f"why: {r['text']}" for r in state.get("reasons", [])[1:]]
        return lines
    s = state.get("settings") or {}
    lines.append(
        f"clamp: {state.get('phase')}, target {state.get('target')}% idle "
        f"(max {state.get('max_idle')}), cpupool {state.get('pool')} "
        f"({state.get('scheduler')}, {state.get('pcpus')} pCPUs), period {s.get('period', 1):g} s, "
        f"pid {state.get('pid')}"
    )
    if "idle_1s" in state:
        lines.append(
            f"idle:  {_pct(state.get('idle_1s'))}% last period, "
            f"{_pct(state.get('idle_10s'))}% last 10 s"
        )
    c = state.get("controller")
    if c:
        fair = state.get("fairness") or {}
        jain_text = f", Jain {fair['jain']:.3f} over {fair['domains']}" if fair.get("jain") else ""
        lines.append(
            f"budget {_pct(c.get('budget'))}% of one pCPU ({c.get('limit')}), error "
            f"{_pct(c.get('error_pp'), 2)} pp{jain_text}"
        )
    domains = state.get("domains") or []
    if domains:
        lines.append("")
        lines.append(
            f"{'Name':<24} {'ID':>5} {'VCPUs':>5} {'Weight':>6} {'Cap':>5} {'UserCap':>7} "
            f"{'Busy%':>6} {'Busy10s':>7} {'Share':>6} {'Expect':>6}"
        )
        for d in domains:
            share = "-" if d.get("share_10s") is None else f"{100 * d['share_10s']:.1f}%"
            expect = "-" if d.get("expected") is None else f"{100 * d['expected']:.1f}%"
            user = "-" if d.get("user_cap") is None else str(d["user_cap"])
            note = "exempt" if d.get("exempt") else ("held" if d.get("held") else "")
            lines.append(
                f"{d['name'][:24]:<24} {d['domid']:>5} {d['vcpus']:>5} {d['weight']:>6} "
                f"{d['cap']:>5} {user:>7} {_pct(d.get('busy')):>6} {_pct(d.get('busy_10s')):>7} "
                f"{share:>6} {expect:>6}  {note}".rstrip()
            )
    reasons = state.get("reasons") or []
    if reasons:
        lines.append("")
        lines += [f"why: {r['text']}" for r in reasons]
    return lines


def watch_header() -> str:
    return (
        f"{'Time':>8} {'Target':>6} {'Idle':>6} {'Idle10':>6} {'Budget':>7} {'Limit':<9} "
        f"{'Exempt':>6}  Caps"
    )


def watch_line(row: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """One period as ``watch`` prints it; ``names`` (domid -> name) label the caps."""
    names = names or {}
    clock = time.strftime("%H:%M:%S", time.localtime(float(row.get("time", 0))))
    caps = " ".join(
        f"{names.get(k, 'dom' + k)}:{v}"
        for k, v in sorted(row.get("caps", {}).items(), key=lambda kv: int(kv[0]))
    )
    why = f"  ({', '.join(row['reasons'])})" if row.get("reasons") else ""
    return (
        f"{clock:>8} {row.get('target', 0):>6} {_pct(row.get('idle')):>6} "
        f"{_pct(row.get('idle_10s')):>6} {_pct(row.get('budget')):>7} "
        f"{row.get('limit', ''):<9} {_pct(row.get('exempt_busy')):>6}  {caps}{why}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xenkit-dom0.pyz")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
