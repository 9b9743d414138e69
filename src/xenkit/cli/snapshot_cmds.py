"""``xenkit snapshot``: snapshots of running xl domains, on the default lab or ``--host``.

The engine runs in dom0 (``xenkit-dom0.pyz snapshot ...``); these commands
send it the request and render its JSON answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xenkit.cli.lab_cmds import _Progress
from xenkit.cli.output import Output, json_option
from xenkit.core.errors import XenkitError
from xenkit.host.host import Host

F = TypeVar("F", bound=Callable[..., Any])


class Dom0Error(XenkitError):
    """An error the engine in dom0 reported, with its exit code."""

    def __init__(self, message: str, hint: str | None, exit_code: int) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def host_option(f: F) -> F:
    return click.option(
        "--host",
        "host_spec",
        metavar="HOST",
        help="lab:NAME or ssh://user@host (default: the default lab, booted if needed)",
    )(f)


def call_dom0(out: Output, host_spec: str | None, args: Sequence[str], timeout: float) -> Any:
    """Run ``snapshot ARGS`` in dom0; its JSON answer, or its error raised here."""
    with _Progress(out, "reaching the host") as progress:
        host = Host.open(host_spec, progress=progress)
    data = host.run_dom0_json(["snapshot", *args], timeout=timeout)
    if "error" in data:
        err = data["error"]
        raise Dom0Error(str(err["message"]), err.get("hint"), int(data.get("exit_code", 1)))
    return data


def _held(s: dict[str, Any]) -> str:
    """How long the guest was held: its I/O only (qdisk disks, the vCPUs ran on), or
    the whole domain (a checkpoint, or blkback disks sharing the instant)."""
    ms = f"{(s.get('paused_seconds') or 0) * 1000:.0f} ms"
    whole = s["kind"] == "checkpoint" or any(d["kind"] == "lvm" for d in s["disks"])
    return f"domain paused {ms}" if whole else f"disk I/O held {ms}"


@click.group()
def snapshot() -> None:
    """Snapshots of running domains: disks (internal, external, LVM) and checkpoints."""


@snapshot.command("create")
@click.argument("domain")
@click.argument("name", required=False)
@click.option("--disk-only", is_flag=True, help="Disks only; without it, memory too.")
@click.option("--internal", "mode", flag_value="internal", help="Tags inside qcow2 images.")
@click.option("--external", "mode", flag_value="external", help="New qcow2 overlays (default).")
@click.option("--disk", "disks", multiple=True, metavar="VDEV", help="Only these disks.")
@click.option("--description", default="", help="Free text kept with the snapshot.")
@host_option
@json_option
@click.pass_obj
def create(
    out: Output,
    domain: str,
    name: str | None,
    disk_only: bool,
    mode: str | None,
    disks: tuple[str, ...],
    description: str,
    host_spec: str | None,
) -> None:
    """Snapshot running DOMAIN as NAME (default: snap-DATE-TIME)."""
    args = ["create", domain, *([name] if name else [])]
    args += ["--disk-only"] if disk_only else []
    args += ["--mode", mode] if mode else []
    for d in disks:
        args += ["--disk", d]
    args += ["--description", description] if description else []
    data = call_dom0(out, host_spec, args, timeout=3600)
    s = data["snapshot"]

    def render(c: Console) -> None:
        kinds = ", ".join(f"{d['vdev']} {d['kind']}" for d in s["disks"])
        c.print(
            f"snapshot {escape(s['name'])} of {escape(s['domain_name'])}: {s['kind']} "
            f"({kinds}); {_held(s)}, {data['seconds']:.1f} s in all"
        )

    out.emit(data, render)


@snapshot.command("list")
@click.argument("domain")
@click.option("--tree", is_flag=True, help="Each snapshot under its parent.")
@host_option
@json_option
@click.pass_obj
def list_(out: Output, domain: str, tree: bool, host_spec: str | None) -> None:
    """The snapshots of DOMAIN (running, or known by its snapshots); * marks the current.

    Descriptions are in ``info`` and in ``--json``."""
    data = call_dom0(out, host_spec, ["list", domain], timeout=120)

    def render(c: Console) -> None:
        if not data["snapshots"]:
            c.print(f"domain {escape(domain)} has no snapshots")
            return
        if tree:
            for line in data["tree"]:
                c.print(escape(line))
            return
        t = Table(box=None, pad_edge=False)
        for col in ("NAME", "KIND", "DISKS", "CREATED (UTC)", "PARENT"):
            t.add_column(col, no_wrap=True)
        for s in data["snapshots"]:
            mark = " *" if s["current"] else ""
            disks = " ".join(f"{d['vdev']}:{d['kind'][:3]}" for d in s["disks"])
            t.add_row(
                escape(s["name"] + mark),
                s["kind"] if s["state"] == "complete" else f"{s['kind']} (unfinished)",
                disks,
                s["created_iso"][5:16].replace("T", " "),
                escape(s["parent"] or "-"),
            )
        c.print(t)

    out.emit(data, render)


@snapshot.command("info")
@click.argument("domain")
@click.argument("name")
@host_option
@json_option
@click.pass_obj
def info(out: Output, domain: str, name: str, host_spec: str | None) -> None:
    """Everything recorded about snapshot NAME of DOMAIN."""
    data = call_dom0(out, host_spec, ["info", domain, name], timeout=120)
    s = data["snapshot"]

    def render(c: Console) -> None:
        c.print(f"name:        {escape(s['name'])}{' (current)' if s['current'] else ''}")
        c.print(f"domain:      {escape(s['domain_name'])} ({s['domain_uuid']})")
        c.print(f"kind:        {s['kind']}{'' if s['state'] == 'complete' else ', unfinished'}")
        c.print(f"created:     {s['created_iso']}")
        c.print(f"parent:      {escape(s['parent'] or '-')}")
        c.print(f"children:    {escape(', '.join(s['children']) or '-')}")
        if s.get("paused_seconds") is not None:
            c.print(f"held:        {_held(s)}")
        if s["memory"]:
            c.print(f"memory:      {escape(s['memory'])}")
        for d in s["disks"]:
            where = (d["tag"] and f"tag in {d['image']}") or d["image"]
            if d["kind"] == "external":
                where = f"{d['image']} (overlay {d['overlay']})"
            c.print(f"disk {d['vdev']}:   {d['kind']}, {escape(where)}")
        if s["description"]:
            c.print(f"description: {escape(s['description'])}")

    out.emit(data, render)


@snapshot.command("revert")
@click.argument("domain")
@click.argument("name")
@host_option
@json_option
@click.pass_obj
def revert(out: Output, domain: str, name: str, host_spec: str | None) -> None:
    """Return DOMAIN to NAME: a checkpoint resumes running; disk-only boots on its disks."""
    data = call_dom0(out, host_spec, ["revert", domain, name], timeout=3600)
    s = data["snapshot"]
    how = "restored, running" if s["kind"] == "checkpoint" else "started on its disks"
    out.emit(
        data,
        lambda c: c.print(
            f"{escape(s['domain_name'])} reverted to {escape(name)} ({how}) "
            f"in {data['seconds']:.1f} s"
        ),
    )


@snapshot.command("delete")
@click.argument("domain")
@click.argument("name")
@host_option
@json_option
@click.pass_obj
def delete(out: Output, domain: str, name: str, host_spec: str | None) -> None:
    """Delete snapshot NAME; external overlays are merged, no other snapshot changes."""
    data = call_dom0(out, host_spec, ["delete", domain, name], timeout=7200)
    out.emit(data, lambda c: c.print(f"deleted snapshot {escape(name)} in {data['seconds']:.1f} s"))


@snapshot.command("verify")
@click.argument("domain")
@click.option("--repair", is_flag=True, help="Fix what can be fixed.")
@host_option
@json_option
@click.pass_obj
def verify(out: Output, domain: str, repair: bool, host_spec: str | None) -> int:
    """Check DOMAIN's snapshot records against its images (exit 1 if anything is left)."""
    args = ["verify", domain, *(["--repair"] if repair else [])]
    data = call_dom0(out, host_spec, args, timeout=600)

    def render(c: Console) -> None:
        for p in data["problems"]:
            state = "repaired" if p["repaired"] else "repairable" if p["repairable"] else "explain"
            who = f"{p['snapshot']}: " if p["snapshot"] else ""
            c.print(f"{state:10} {escape(who + p['message'])}")
        verdict = "ok" if data["ok"] else "problems left (see above)"
        c.print(f"{data['checked']} snapshots checked: {verdict}")

    out.emit(data, render)
    return 0 if data["ok"] else 1


@click.command("save")
@click.argument("domain")
@click.argument("file")
@click.option("--keep-running", is_flag=True, help="Leave the domain running (xl save -c).")
@host_option
@json_option
@click.pass_obj
def save(out: Output, domain: str, file: str, keep_running: bool, host_spec: str | None) -> None:
    """xl save with the disks: DOMAIN's memory to FILE (in dom0), its disks snapshotted at
    that moment; the domain stops, as with xl save, unless --keep-running."""
    args = ["save", domain, file, *(["--keep-running"] if keep_running else [])]
    data = call_dom0(out, host_spec, args, timeout=3600)
    s = data["snapshot"]
    after = "still running" if keep_running else "stopped"
    out.emit(
        data,
        lambda c: c.print(
            f"saved {escape(s['domain_name'])} to {escape(file)} with its disks "
            f"(snapshot {escape(s['name'])}); {after}; {data['seconds']:.1f} s"
        ),
    )


@click.command("restore")
@click.argument("file")
@host_option
@json_option
@click.pass_obj
def restore(out: Output, file: str, host_spec: str | None) -> None:
    """Bring back what xenkit save wrote to FILE: the memory and the disks of that moment."""
    data = call_dom0(out, host_spec, ["restore", file], timeout=3600)
    s = data["snapshot"]
    out.emit(
        data,
        lambda c: c.print(
            f"restored {escape(s['domain_name'])} from {escape(file)}, running, "
            f"in {data['seconds']:.1f} s"
        ),
    )
