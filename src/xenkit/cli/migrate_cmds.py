"""``xenkit migrate DOMAIN DESTHOST``: move a running domain and its local disks.

The move runs in the source dom0 (``xenkit-dom0.pyz migrate``); this side starts
it and shows its progress, read from the file the engine keeps up to date.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import click
from rich.markup import escape

from xenkit.cli.lab_cmds import _Progress
from xenkit.cli.output import Output, json_option
from xenkit.cli.snapshot_cmds import Dom0Error, host_option
from xenkit.host.host import Host


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _describe(stage: dict[str, Any]) -> tuple[str, str]:
    name = str(stage.get("stage", ""))
    if name == "prepare":
        return "preparing the destination", f"images and NBD servers for {stage['disks']}"
    if name == "mirror":
        done, total = int(stage.get("done", 0)), int(stage.get("total", 0))
        if total == 0:
            return "mirroring the disks", "starting"
        return "mirroring the disks", f"{_mib(done)} of {_mib(total)} ({100 * done // total}%)"
    if name == "memory":
        return "moving the domain", "xl migrate (the disks follow every write)"
    return name, ""


@click.command("migrate")
@click.argument("domain")
@click.argument("desthost")
@click.option(
    "--nbd-port", type=int, default=10809, show_default=True, help="First NBD port on DESTHOST."
)
@host_option
@json_option
@click.pass_obj
def migrate(out: Output, domain: str, desthost: str, nbd_port: int, host_spec: str | None) -> None:
    """Move running DOMAIN and its local disk images to DESTHOST (a name or address the
    source dom0 reaches as root over ssh): the disks are mirrored there while the guest
    runs, then xl migrate moves it. The images here are kept."""
    with _Progress(out, "reaching the host") as progress:
        host = Host.open(host_spec, progress=progress)
    host.push_dom0()
    progress_file = f"/run/xenkit-migrate-{secrets.token_hex(4)}.json"
    args = ["migrate", domain, desthost, "--nbd-port", str(nbd_port)]
    answer: dict[str, Any] = {}

    def move() -> None:
        try:
            answer["data"] = host.run_dom0_json([*args, "--progress-file", progress_file],
                                                timeout=7200)  # fmt: skip
        except BaseException as exc:  # re-raised in the caller's thread
            answer["exc"] = exc

    worker = threading.Thread(target=move, daemon=True)
    with _Progress(out, f"migrating {domain} to {desthost}") as progress:
        worker.start()
        _follow(host_spec, progress_file, worker, progress)
    host.run(["rm", "-f", progress_file], timeout=30)
    if "exc" in answer:
        raise answer["exc"]
    data = answer["data"]
    if "error" in data:
        err = data["error"]
        raise Dom0Error(str(err["message"]), err.get("hint"), int(data.get("exit_code", 1)))

    def render(c: Any) -> None:
        size = sum(int(d["bytes"]) for d in data["disks"])
        handover = data["handover_seconds"]
        took = "n/a" if handover is None else f"{handover:.2f} s"
        c.print(
            f"migrated {escape(data['domain'])} to {escape(data['dest'])} with "
            f"{len(data['disks'])} disk(s), {_mib(size)}, in {data['seconds']:.1f} s "
            f"(disks handed over in {took})"
        )
        c.print(f"left here: {escape(', '.join(data['left_here']))}")
        if data["snapshots_left_here"]:
            c.print(
                f"[yellow]note:[/] {data['snapshots_left_here']} snapshot(s) of the domain "
                "stay on this host; the destination has the disks as they are now"
            )

    out.emit(data, render)


def _follow(
    host_spec: str | None, progress_file: str, worker: threading.Thread, progress: _Progress
) -> None:
    """Show the engine's stages until it is done; a second connection, so that the
    long command on the first does not hold these reads up."""
    seen = ""
    with Host.open(host_spec) as watcher:
        while worker.is_alive():
            worker.join(1.0)
            r = watcher.run(["cat", progress_file], timeout=30)
            if not r.ok or r.stdout == seen or not r.stdout.strip():
                continue
            seen = r.stdout
            try:
                stage = json.loads(r.stdout)
            except ValueError:
                continue
            if stage.get("stage") != "done":
                progress(*_describe(stage))
