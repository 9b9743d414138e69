"""``xenkit clamp``: a host-wide idle floor, on the default lab or ``--host``.

The controller runs in dom0 (``xenkit-dom0.pyz clamp ...``); these commands send
it the request and render its JSON answer, with the same xl-style text the
dom0 side prints (``xenkit.clamp.dom0cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from xenkit.clamp.controller import DEFAULT_MAX_IDLE, MAX_IDLE_LIMIT, check_target
from xenkit.clamp.dom0cli import status_lines, watch_header, watch_line
from xenkit.cli.lab_cmds import _Progress
from xenkit.cli.output import Output, json_option
from xenkit.cli.snapshot_cmds import Dom0Error, host_option
from xenkit.host.host import Host


def _open(out: Output, host_spec: str | None) -> Host:
    with _Progress(out, "reaching the host") as progress:
        return Host.open(host_spec, progress=progress)


def call_dom0(host: Host, args: Sequence[str], timeout: float) -> Any:
    """Run ``clamp ARGS`` in dom0; its JSON answer, or its error raised here."""
    data = host.run_dom0_json(["clamp", *args], timeout=timeout)
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        raise Dom0Error(str(err["message"]), err.get("hint"), int(data.get("exit_code", 1)))
    return data


def _print_lines(c: Console, lines: Sequence[str]) -> None:
    for line in lines:
        c.print(escape(line))


@click.group()
def clamp() -> None:
    """A host-wide minimum idle (PowerClamp-like), through credit/credit2 caps."""


@clamp.command("set")
@click.argument("target", type=int, metavar="PCT")
@click.option("--period", type=float, help="Control period in seconds (default 1).")
@click.option("--pool", type=int, help="The cpupool to clamp (default 0).")
@click.option(
    "--exempt-dom0/--no-exempt-dom0",
    default=None,
    help="Leave dom0 uncapped (default: exempt; it runs the backends and the clamp).",
)
@click.option("--exempt", "exempt", multiple=True, metavar="DOMAIN", help="Also leave uncapped.")
@click.option(
    "--max-idle",
    type=click.IntRange(1, MAX_IDLE_LIMIT),
    help=f"Highest target accepted (default {DEFAULT_MAX_IDLE}, as powerclamp).",
)
@host_option
@json_option
@click.pass_obj
def set_(
    out: Output,
    target: int,
    period: float | None,
    pool: int | None,
    exempt_dom0: bool | None,
    exempt: tuple[str, ...],
    max_idle: int | None,
    host_spec: str | None,
) -> None:
    """Hold PCT % of the pool's pCPU time idle (0 stops clamping); starts the controller
    in dom0 if it is not running, else changes its target."""
    check_target(target, max_idle or DEFAULT_MAX_IDLE)
    args = ["set", str(target)]
    args += ["--period", f"{period:g}"] if period is not None else []
    args += ["--pool", str(pool)] if pool is not None else []
    if exempt_dom0 is not None:
        args.append("--exempt-dom0" if exempt_dom0 else "--no-exempt-dom0")
    for e in exempt:
        args += ["--exempt", e]
    args += ["--max-idle", str(max_idle)] if max_idle is not None else []
    data = call_dom0(_open(out, host_spec), args, timeout=90)

    def render(c: Console) -> None:
        if data.get("note"):
            c.print(escape(data["note"]))
            return
        how = "started" if data["started"] else "retargeted"
        c.print(f"clamp {how} (pid {data['pid']}): target {target}% idle")

    out.emit(data, render)


@clamp.command("off")
@host_option
@json_option
@click.pass_obj
def off(out: Output, host_spec: str | None) -> None:
    """Stop the controller; every domain gets its own cap back."""
    data = call_dom0(_open(out, host_spec), ["off"], timeout=60)

    def render(c: Console) -> None:
        if not data["stopped"] and not data["restored"]:
            c.print("clamp was not running")
            return
        stopped = f"clamp stopped (pid {data['pid']})" if data["stopped"] else "clamp repaired"
        c.print(stopped + (", killed after its time-out" if data["killed"] else ""))
        for r in data["restored"]:
            c.print(
                escape(f"  {r['name'] or 'dom' + str(r['domid'])}: {r['action']} cap {r['cap']}")
            )

    out.emit(data, render)


@clamp.command("status")
@host_option
@json_option
@click.pass_obj
def status(out: Output, host_spec: str | None) -> None:
    """Target, achieved idle (last period, last 10 s), caps, weights, use, and why the
    idle differs from the target."""
    data = call_dom0(_open(out, host_spec), ["status"], timeout=60)
    out.emit(data, lambda c: _print_lines(c, status_lines(data)))


@clamp.command("watch")
@click.option("--count", type=int, default=0, help="Stop after N periods (default: never).")
@host_option
@json_option
@click.pass_obj
def watch(out: Output, count: int, host_spec: str | None) -> None:
    """A line per control period, as xl-style columns (JSON lines with --json)."""
    import json
    import sys

    host = _open(out, host_spec)
    data = call_dom0(host, ["status"], timeout=30)
    if not data.get("running"):
        raise Dom0Error("the clamp is not running", "start it: xenkit clamp set PCT", 2)
    names = _names(data)
    if not out.as_json:
        out.console.print(escape(watch_header()))
    # One dom0 process follows the state file for the whole run: asking for
    # ``status`` each period is load on the exempt dom0 the clamp has to answer.
    argv = ["clamp", "watch", "--json", *(["--count", str(count)] if count > 0 else [])]
    for line in host.follow_dom0(argv):
        row = json.loads(line)
        if "error" in row:  # it stopped between the status and the watch
            err = row["error"]
            raise Dom0Error(str(err["message"]), err.get("hint"), int(row.get("exit_code", 1)))
        if not set(row.get("caps", {})) <= set(names):  # a domain came
            names = _names(call_dom0(host, ["status"], timeout=30))
        if out.as_json:
            sys.stdout.write(json.dumps(row, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            out.console.print(escape(watch_line(row, names)))


def _names(state: dict[str, Any]) -> dict[str, str]:
    return {str(d["domid"]): d["name"] for d in state.get("domains", [])}


@clamp.command("systemd-unit")
@host_option
@json_option
@click.pass_obj
def systemd_unit(out: Output, host_spec: str | None) -> None:
    """Print the systemd unit that runs the controller in dom0 (see its comments)."""
    data = call_dom0(_open(out, host_spec), ["systemd-unit", "--json"], timeout=60)
    out.emit(data, lambda c: c.out(data["unit"], end="", highlight=False))


@clamp.command("thermald-conf")
@click.option("--sensor", required=True, help="In dom0: a file of millidegrees C (thermal, hwmon).")
@click.option("--trip", type=float, default=85.0, show_default=True, help="Clamp above this, C.")
@click.option("--step", type=int, default=5, show_default=True, help="% idle per step.")
@click.option("--max-state", type=int, help="Highest target [default: the clamp's max_idle].")
@host_option
@json_option
@click.pass_obj
def thermald_conf(out: Output, sensor: str, trip: float, step: int, max_state: int | None,
                  host_spec: str | None) -> None:  # fmt: skip
    """Print a thermal-conf.xml with which thermald, in dom0, drives the clamp."""
    argv = ["thermald-conf", "--json", "--sensor", sensor, "--trip", str(trip), "--step", str(step)]
    if max_state is not None:
        argv += ["--max-state", str(max_state)]
    data = call_dom0(_open(out, host_spec), argv, timeout=60)
    out.emit(data, lambda c: c.out(data["conf"], end="", highlight=False))
