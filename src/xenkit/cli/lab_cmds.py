"""``xenkit lab``: build, boot, reach, snapshot and stop Xen hosts in QEMU.

Every command names a lab (``default`` unless told); labs live in the XDG
state directory and outlive the command that booted them. A crash of the
lab's Xen or dom0 seen on its console, during any command, is reported as
``LabCrashed`` with the console lines that matter.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from xenkit.cli.output import Output, json_option
from xenkit.core.errors import OperationFailed, UsageError
from xenkit.lab import network
from xenkit.lab.console import ConsoleFault, ConsoleLog
from xenkit.lab.image import LabImage, build_image
from xenkit.lab.machine import (
    BOOT_TOOLS,
    BootOptions,
    LabCrashed,
    Machine,
    list_labs,
)
from xenkit.lab.paths import check_lab_name, state_root
from xenkit.lab.ssh import RunResult, make_identity
from xenkit.lab.tools import require

#: Labs already opened in this process, so repeated calls (tests, benchmarks, a
#: session) reuse their SSH session and agent connection.
_MACHINES: dict[tuple[Path, str], Machine] = {}

_XENSTORED = {"c": "xenstored", "ocaml": "oxenstored"}
#: xl info fields shown by ``status`` and ``up``, in this order.
_INFO_FIELDS = (
    "xen_version",
    "xen_scheduler",
    "nr_cpus",
    "total_memory",
    "free_memory",
    "virt_caps",
    "release",
)


def machine(name: str) -> Machine:
    check_lab_name(name)
    key = (state_root(), name)
    found = _MACHINES.get(key)
    if found is None:
        found = _MACHINES[key] = Machine(name, state_dir=key[0])
    return found


def existing(name: str) -> Machine:
    m = machine(name)
    if not m.exists():
        labs = ", ".join(x.name for x in list_labs()) or "none"
        raise UsageError(f"no lab named {name!r}", hint=f"labs here: {labs}; see xenkit lab list")
    return m


class _WithCommand(click.Command):
    """Takes everything after the first ``--`` as the command to run in dom0,
    untouched by option parsing (``xenkit lab exec -- ls --json`` passes ``--json`` on)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["lab_command"] = args[cut + 1 :]
            args = args[:cut]
        else:
            ctx.meta["lab_command"] = None
        return super().parse_args(ctx, args)


def _lab_command() -> list[str] | None:
    words: list[str] | None = click.get_current_context().meta.get("lab_command")
    return words


@contextlib.contextmanager
def watching(m: Machine, *, before: bool = True) -> Iterator[None]:
    """Report a crash of the lab (Xen panic, dom0 oops) instead of its symptom.

    A command that fails because the host went down gets its console lines
    as the error; a command that worked is still checked, since a crash may
    have happened while it ran.
    """
    if before and m.condition() == "crashed":
        m.check_crash()
    try:
        yield
    except LabCrashed:
        raise
    except OperationFailed as exc:
        fault = _crash_after_failure(m)
        if fault is not None:
            raise m.crash_error(fault) from exc
        raise
    m.check_crash()


def _crash_after_failure(m: Machine) -> ConsoleFault | None:
    fault = m.fault()
    if fault is not None:
        return fault
    if not m.is_running():
        return m.crash(wait=1.0)
    try:
        alive = m.ssh.master_alive()
    except (OperationFailed, UsageError):
        alive = False
    # A host that is going down prints its panic first; give the console a moment.
    return None if alive else m.crash(wait=10.0)


class _Progress:
    """Build and boot stages on stderr: a rich spinner on a terminal, lines otherwise."""

    def __init__(self, out: Output, title: str) -> None:
        self.out = out
        self.console = out.err_console
        self.title = title
        self.live = self.console.is_terminal and not out.as_json
        self.status: Status | None = None
        self.stage: str | None = None
        self.stage_start = time.monotonic()
        self.notes: list[str] = []

    def __enter__(self) -> _Progress:
        if self.live:
            self.status = self.console.status(escape(self.title))
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def __call__(self, stage: str, detail: str) -> None:
        now = time.monotonic()
        if stage in ("corrupt", "retry"):
            self.notes.append(detail)
            self.console.print(f"[yellow]warning:[/] {escape(detail)}")
            return
        quiet = stage in ("cached", "done", "ready")
        if self.status is not None:
            if self.stage is not None and stage != self.stage:
                took = now - self.stage_start
                self.console.print(f"  [green]✓[/] {escape(self.stage)} [dim]{took:.1f} s[/]")
            self.status.update(f"{escape(stage)}: {escape(detail)}")
        elif not self.out.as_json and not quiet and self.out.verbose:
            self.console.print(f"  {escape(stage)}: {escape(detail)}", soft_wrap=True)
        self.stage, self.stage_start = (None if quiet else stage), now


@click.group()
@json_option
def lab() -> None:
    """Xen hosts in QEMU: build the image, boot labs, reach and snapshot them.

    NAME is a lab's name (default: "default"); several labs run side by side.
    """


# -- build -----------------------------------------------------------------


def _image_json(image: LabImage) -> dict[str, object]:
    return {
        "key": image.key,
        "path": str(image.path),
        "cache_hit": image.cache_hit,
        "rebuilt_because": image.rebuilt_because,
        "xen_version": image.xen_version,
        "dom0_kernel": image.kernel_version,
        "guest_kernel": image.guest.kernel_version,
        "packages": len(image.packages),
        "build_timings": dict(image.timings),
    }


@lab.command()
@click.option("--refresh", is_flag=True, help="Fetch the package lists again (versions may move).")
@json_option
@click.pass_obj
def build(out: Output, refresh: bool) -> None:
    """Build the lab image from Debian packages (cached).

    A warm build, with nothing changed, only checks the cache entry.
    """
    start = time.monotonic()
    with _Progress(out, "building the lab image") as progress:
        image = build_image(refresh=refresh, progress=progress)
    elapsed = time.monotonic() - start
    data = {**_image_json(image), "seconds": round(elapsed, 3)}

    def render(console: Console) -> None:
        short = image.key[:12]
        if image.cache_hit:
            console.print(
                f"image {short} is cached: nothing to build ({elapsed:.2f} s)\n"
                f"  Xen {escape(image.xen_version)}, dom0 kernel {image.kernel_version}, "
                f"{len(image.packages)} packages\n  {escape(str(image.path))}"
            )
            return
        why = f" (the cached one was {image.rebuilt_because})" if image.rebuilt_because else ""
        console.print(f"built image {short} in {elapsed:.1f} s{escape(why)}")
        console.print(
            f"  Xen {escape(image.xen_version)}, dom0 kernel {image.kernel_version}, "
            f"{len(image.packages)} packages\n  {escape(str(image.path))}"
        )

    out.emit(data, render)


# -- up / down / destroy ---------------------------------------------------------


def _xl_info(text: str) -> dict[str, str]:
    """``key : value`` lines of ``xl info``."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            info.setdefault(key.strip(), value.strip())
    return info


def _summary(info: Mapping[str, str]) -> str:
    return (
        f"Xen {info.get('xen_version', '?')}, {info.get('xen_scheduler', '?')}, "
        f"{info.get('nr_cpus', '?')} CPUs, {info.get('total_memory', '?')} MiB"
    )


def _join_target(m: Machine, other_name: str) -> tuple[str, int]:
    """The network to put ``m`` on (the other lab's, or one named after it) and m's index."""
    if other_name == m.name:
        raise UsageError("a lab cannot join itself", hint="name another, running lab")
    other = machine(other_name)
    if other.condition() == "crashed":
        other.check_crash()
    if not other.is_running():
        raise UsageError(
            f"lab {other_name!r} is not running: there is nothing to join",
            hint=f"start it first: xenkit lab up {other_name}",
        )
    other.check_crash()
    st = other.state
    assert st is not None
    net = st.options.get("network")
    if not isinstance(net, str) or not net:
        net = other.name
        st.options["network"] = net
        st.write(other.paths.state)
    members = network.read_members(m.state_dir, net)
    return net, network.free_index([x for x in members if x.name != m.name])


def _trust(m: Machine, net: str) -> dict[str, Any]:
    """Make every running member trust the others for root SSH; check the segment.

    Returns what ``up`` reports about the network.
    """
    key = make_identity(network.network_dir(m.state_dir, net) / "id_ed25519")
    private, public = key.read_text(), key.with_name(key.name + ".pub").read_text()
    members = network.read_members(m.state_dir, net)
    peers: dict[str, tuple[str, str]] = {}
    for member in members:
        try:
            host_key = LabImage.load(Path(member.image)).host_key
        except OperationFailed:
            continue
        peers[member.name] = (network.dom0_address(member.index), host_key)
    script = network.trust_script(private, public, peers)
    for member in members:
        peer = machine(member.name)
        with watching(peer):
            peer.run(script, check=True, timeout=30)
    me = next(x for x in members if x.name == m.name)
    others = [x for x in members if x.name != m.name]
    reachable: dict[str, bool] = {}
    for other in others:
        addr = network.dom0_address(other.index)
        r = m.run(f"busybox ping -c 1 -W 2 {addr} || busybox ping -c 2 -W 3 {addr}", timeout=20)
        reachable[other.name] = r.ok
    return {
        "name": net,
        "address": network.dom0_address(me.index),
        "members": {x.name: network.dom0_address(x.index) for x in members},
        "reachable": reachable,
    }


@lab.command()
@click.argument("name", default="default")
@click.option("--cpus", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--memory", type=click.IntRange(768, 1 << 20), default=2048, show_default=True, metavar="MiB"
)
@click.option(
    "--scheduler", type=click.Choice(["credit", "credit2"]), default="credit", show_default=True
)
@click.option(
    "--xenstored", type=click.Choice(sorted(_XENSTORED)), default="ocaml", show_default=True
)
@click.option("--join", "join", metavar="OTHER", help="Put it on OTHER's private network.")
@click.option("--fresh", is_flag=True, help="Start from the image again (new disk, no snapshots).")
@click.option("--xen-arg", "xen_args", multiple=True, metavar="WORD", help="Add to Xen's cmdline.")
@click.option("--dom0-arg", "dom0_args", multiple=True, metavar="WORD", help="Add to dom0's.")
@click.option("--timeout", type=float, default=300.0, show_default=True, metavar="SECONDS")
@json_option
@click.pass_obj
def up(
    out: Output,
    name: str,
    cpus: int,
    memory: int,
    scheduler: str,
    xenstored: str,
    join: str | None,
    fresh: bool,
    xen_args: tuple[str, ...],
    dom0_args: tuple[str, ...],
    timeout: float,
) -> None:
    """Boot a lab; returns once its toolstack answers.

    "Ready" means xl info works in dom0 and SSH answers. With --join OTHER the
    lab joins OTHER's private network (192.0.2.0/24 on xenbr0).
    """
    start = time.monotonic()
    m = machine(name)
    if join is not None:
        check_lab_name(join)
    for program in BOOT_TOOLS:
        require(program)
    notes: list[str] = []
    if m.is_running():
        st = m.state
        assert st is not None
        up_for = m.uptime() or 0.0
        raise UsageError(
            f"lab {name!r} is already running "
            f"(up {_duration(up_for)}, ssh 127.0.0.1:{st.ssh_port})",
            hint=f"reach it with: xenkit lab ssh {name} (or xenkit lab exec {name} -- CMD); "
            f"xenkit lab down {name} stops it",
        )
    stale_fault = m.fault() if m.condition() in ("dead", "crashed") else None
    stale = m.clean_stale()
    if stale is not None:
        what = f": it had crashed ({stale_fault.title})" if stale_fault is not None else ""
        notes.append(f"cleaned up after the QEMU of lab {name} (pid {stale.pid}) that died{what}")
        if not m.paths.overlay.exists():
            notes.append("its disk was damaged and starts again from the image")
    net, index = (None, 1) if join is None else _join_target(m, join)
    options = BootOptions(
        memory_mib=memory,
        cpus=cpus,
        dom0_memory_mib=min(1024, memory // 2),
        scheduler=scheduler,
        xenstored=_XENSTORED[xenstored],  # type: ignore[arg-type]
        xen_args=xen_args,
        dom0_args=dom0_args,
        network=net,
        join_index=index,
    )
    for note in notes:
        out.err_console.print(f"[yellow]note:[/] {escape(note)}")
    with _Progress(out, f"booting lab {name}") as progress:
        image = build_image(progress=progress)
        if net is not None:
            network.ensure_switch(m.state_dir, net)
        with watching(m):
            m.boot(image, options, fresh=fresh, timeout=timeout, progress=progress)
            info = _xl_info(m.run(["cat", "/run/xenkit-xl-info"], timeout=30).stdout)
            joined = _trust(m, net) if net is not None else None
    elapsed = time.monotonic() - start
    st = m.state
    assert st is not None
    data: dict[str, object] = {
        "name": name,
        "state": "running",
        "seconds": round(elapsed, 3),
        "ssh_port": st.ssh_port,
        "image": image.key,
        "options": st.options,
        "xl_info": {k: info[k] for k in _INFO_FIELDS if k in info},
        "network": joined,
        "notes": notes,
    }

    def render(console: Console) -> None:
        console.print(
            f"lab [bold]{escape(name)}[/] is up in {elapsed:.1f} s: {escape(_summary(info))}; "
            f"ssh 127.0.0.1:{st.ssh_port} (xenkit lab ssh {escape(name)})"
        )
        if joined is not None:
            others = ", ".join(
                f"{n} {a}" + ("" if joined["reachable"].get(n) else " (no answer!)")
                for n, a in joined["members"].items()
                if n != name
            )
            console.print(
                f"  on network {escape(str(joined['name']))} as {joined['address']}; "
                f"members: {escape(others)}"
            )

    out.emit(data, render)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@lab.command()
@click.argument("name", default="default")
@json_option
@click.pass_obj
def down(out: Output, name: str) -> None:
    """Stop a lab cleanly; its disk and snapshots are kept.

    dom0 powers off, which powers the emulated host off.
    """
    m = existing(name)
    condition = m.condition()
    fault = m.fault() if condition == "crashed" else None
    start = time.monotonic()
    was_running = m.is_running()
    m.stop()
    elapsed = time.monotonic() - start
    data = {
        "name": name,
        "was": condition,
        "state": "stopped",
        "seconds": round(elapsed, 3),
        "crash": fault.title if fault else None,
    }

    def render(console: Console) -> None:
        if not was_running:
            extra = " (cleaned up after its dead QEMU)" if condition in ("dead", "crashed") else ""
            console.print(f"lab {escape(name)} was not running{extra}")
        else:
            crashed = f" (it had crashed: {fault.title})" if fault else ""
            console.print(
                f"lab {escape(name)} stopped in {elapsed:.1f} s{escape(crashed)}; its disk and "
                f"snapshots are kept (xenkit lab destroy {escape(name)} deletes them)"
            )

    out.emit(data, render)


@lab.command()
@click.argument("name", default="default")
@json_option
@click.pass_obj
def destroy(out: Output, name: str) -> None:
    """Stop a lab and delete it (state, disk overlay, snapshots)."""
    m = existing(name)
    root = m.paths.root
    m.destroy()
    _MACHINES.pop((m.state_dir, name), None)
    out.emit(
        {"name": name, "state": "absent", "removed": str(root)},
        lambda console: console.print(f"lab {escape(name)} destroyed: removed {escape(str(root))}"),
    )


# -- list / status ---------------------------------------------------------------


def _lab_row(m: Machine) -> dict[str, object]:
    st = m.state
    assert st is not None
    condition = m.condition()
    running = m.is_running()
    # A stopped lab is on no network (its next ``up`` says which, if any).
    net = st.options.get("network") if condition in ("running", "crashed") else None
    index = st.options.get("join_index", 1)
    uptime = m.uptime()
    fault = m.fault() if condition == "crashed" else None
    return {
        "name": m.name,
        "state": condition,
        "ssh_port": st.ssh_port if running else None,
        "pid": st.pid if running else None,
        "uptime": round(uptime, 1) if uptime is not None else None,
        "network": net,
        "address": network.dom0_address(index) if isinstance(index, int) else None,
        "snapshots": list(st.snapshots),
        "crash": fault.title if fault else None,
        "dir": str(m.paths.root),
    }


_STATE_STYLE = {"running": "green", "crashed": "bold red", "dead": "red", "stopped": "dim"}


@lab.command("list")
@json_option
@click.pass_obj
def list_(out: Output) -> None:
    """All labs here, with state, ports and uptime."""
    rows = [_lab_row(m) for m in list_labs()]

    def render(console: Console) -> None:
        if not rows:
            console.print(f"no labs in {escape(str(state_root()))} (xenkit lab up NAME boots one)")
            return
        table = Table(show_edge=False, header_style="bold", box=None, padding=(0, 1))
        for column in ("NAME", "STATE", "SSH", "UPTIME", "NETWORK", "SNAPSHOTS"):
            table.add_column(column)
        for r in rows:
            state = str(r["state"])
            if r["crash"]:
                state += f" ({r['crash']})"
            net = f"{r['network']} {r['address']}" if r["network"] else "-"
            snaps = r["snapshots"]
            assert isinstance(snaps, list)
            uptime = r["uptime"]
            table.add_row(
                escape(str(r["name"])),
                f"[{_STATE_STYLE.get(str(r['state']), '')}]{escape(state)}[/]",
                f"127.0.0.1:{r['ssh_port']}" if r["ssh_port"] else "-",
                _duration(float(uptime)) if isinstance(uptime, float) else "-",
                escape(net),
                escape(", ".join(snaps) or "-"),
            )
        console.print(table)

    out.emit({"labs": rows}, render)


def _domains(text: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) >= 6 and words[1].isdigit():
            rows.append(
                {
                    "name": words[0],
                    "id": int(words[1]),
                    "memory_mib": int(words[2]),
                    "vcpus": int(words[3]),
                    "state": words[4],
                    "cpu_seconds": float(words[5]),
                }
            )
    return rows


@lab.command()
@click.argument("name", default="default")
@json_option
@click.pass_obj
def status(out: Output, name: str) -> int:
    """Toolstack summary, domains and console faults of a lab.

    Shows the xl info summary and running domains of lab NAME; a crashed lab
    is reported as a crash, a stopped one exits 1.
    """
    m = existing(name)
    condition = m.condition()
    if condition == "crashed":
        m.check_crash()
    st = m.state
    assert st is not None
    if condition != "running":
        out.emit(
            {"name": name, "state": condition},
            lambda console: console.print(
                f"lab {escape(name)} is {condition} (xenkit lab up {escape(name)} boots it)"
            ),
        )
        return 1
    with watching(m):
        r = m.run("xl info; echo @@XENKIT@@; xl list", timeout=60, check=True)
    info_text, _, list_text = r.stdout.partition("@@XENKIT@@\n")
    info = _xl_info(info_text)
    domains = _domains(list_text)
    row = _lab_row(m)
    data = {
        **row,
        "xl_info": {k: info[k] for k in _INFO_FIELDS if k in info},
        "domains": domains,
        "faults": [],
        "console": str(m.paths.serial_log),
    }

    def render(console: Console) -> None:
        uptime = row["uptime"]
        net = f", network {row['network']} as {row['address']}" if row["network"] else ""
        console.print(
            f"lab [bold]{escape(name)}[/]: [green]running[/] for "
            f"{_duration(float(uptime) if isinstance(uptime, float) else 0.0)}, "
            f"ssh 127.0.0.1:{st.ssh_port}{escape(net)}"
        )
        console.print(f"  {escape(_summary(info))}, {info.get('free_memory', '?')} MiB free")
        console.print(
            f"  {escape(info.get('virt_caps', ''))}; dom0 kernel {escape(info.get('release', '?'))}"
        )
        table = Table(show_edge=False, header_style="bold", box=None, padding=(0, 1))
        for column in ("DOMAIN", "ID", "MiB", "VCPUS", "STATE", "CPU s"):
            table.add_column(column)
        for d in domains:
            table.add_row(
                escape(str(d["name"])),
                str(d["id"]),
                str(d["memory_mib"]),
                str(d["vcpus"]),
                str(d["state"]),
                str(d["cpu_seconds"]),
            )
        console.print(table)
        console.print("  console: no faults")

    out.emit(data, render)
    return 0


# -- ssh / exec / console --------------------------------------------------------


def _exit_code(rc: int) -> int:
    """A command killed by signal N exits 128+N, as in a shell."""
    return 128 - rc if rc < 0 else rc


def _as_command(words: Sequence[str]) -> str | list[str]:
    """One word is shell text (``'xl list | tail -n +2'``); several are an exact argv."""
    return words[0] if len(words) == 1 else list(words)


@lab.command(cls=_WithCommand)
@click.argument("name", default="default")
@json_option
@click.pass_obj
def ssh(out: Output, name: str) -> int:
    """Log in to a lab's dom0, or run `-- CMD...` there.

    Connects as root with the lab's own key; exits with the command's (or the
    session's) exit code.
    """
    words = _lab_command()
    m = existing(name)
    with watching(m):
        if out.as_json and words:
            return _exec_buffered(out, m, words, timeout=3600.0)
        argv = m.ssh_argv(words or (), tty=not words and sys.stdin.isatty())
        rc = subprocess.call(argv)
    return 0 if rc == 0 else rc


@lab.command("exec", cls=_WithCommand)
@click.argument("name", default="default")
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Stream output live through an SSH channel (default: when stdout is a terminal); "
    "otherwise the dom0 agent runs it, about twice as fast, and output comes at the end.",
)
@click.option("--timeout", type=float, default=3600.0, show_default=True, metavar="SECONDS")
@json_option
@click.pass_obj
def exec_(out: Output, name: str, stream: bool | None, timeout: float) -> int:
    """Run `-- CMD...` in a lab's dom0; exit with its exit code.

    One word is run by the shell (`-- 'xl list | wc -l'`); several are run as
    they are (`-- xl info -n`).
    """
    words = _lab_command()
    if not words:
        raise UsageError(
            "no command to run", hint=f"put it after --: xenkit lab exec {name} -- xl list"
        )
    m = existing(name)
    if stream is None:
        stream = sys.stdout.isatty() and not out.as_json
    with watching(m):
        if stream and not out.as_json:
            return _exec_streamed(m, words)
        return _exec_buffered(out, m, words, timeout=timeout)


def _exec_buffered(out: Output, m: Machine, words: Sequence[str], *, timeout: float) -> int:
    r: RunResult = m.run(_as_command(words), timeout=timeout)
    if r.returncode == 255 and r.stderr.startswith("ssh:"):
        # Not the command's answer: ssh could not reach dom0 (the agent was gone too).
        fault = _crash_after_failure(m)
        if fault is not None:
            raise m.crash_error(fault)
        raise OperationFailed(
            f"lab {m.name} did not answer: {r.stderr.strip()}",
            hint=f"is it still running? xenkit lab status {m.name}",
        )
    rc = _exit_code(r.returncode)
    if out.as_json:
        out.emit(
            {
                "lab": m.name,
                "command": list(words),
                "returncode": rc,
                "stdout": r.stdout,
                "stderr": r.stderr,
                "seconds": round(r.elapsed, 4),
            },
            lambda console: None,
        )
    else:
        sys.stdout.write(r.stdout)
        sys.stdout.flush()
        sys.stderr.write(r.stderr)
        sys.stderr.flush()
    return rc


def _exec_streamed(m: Machine, words: Sequence[str]) -> int:
    argv = m.ssh_argv(words)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, sys.stdout), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, sys.stderr), daemon=True),
    ]
    for t in pumps:
        t.start()
    rc = proc.wait()
    for t in pumps:
        t.join()
    if rc == 255 and not m.is_running():
        raise OperationFailed(f"lab {m.name} went away while running: {' '.join(words)}")
    return _exit_code(rc)


def _pump(source: IO[bytes], target: IO[str]) -> None:
    """Copy as it comes (read1: whatever is there, not a full buffer)."""
    read = getattr(source, "read1", source.read)
    while chunk := read(65536):
        target.write(chunk.decode("utf-8", "replace"))
        target.flush()


@lab.command()
@click.argument("name", default="default")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the lab stops.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None, help="Only the last N.")
@json_option
@click.pass_obj
def console(out: Output, name: str, follow: bool, lines: int | None) -> int:
    """Xen's serial console of a lab.

    Xen's and dom0's messages since lab NAME booted; exits 1 if they show a crash.
    """
    m = existing(name)
    try:
        data = m.paths.serial_log.read_bytes()
    except FileNotFoundError:
        data = b""
    if follow:
        # A line still being written is printed once it is complete.
        data = data[: data.rfind(b"\n") + 1]
    all_lines = [x.rstrip("\r") for x in data.decode("utf-8", "replace").splitlines()]
    shown = all_lines if lines is None else all_lines[len(all_lines) - lines :] if lines else []
    if out.as_json and not follow:
        fault = m.fault()
        out.emit(
            {
                "name": name,
                "path": str(m.paths.serial_log),
                "lines": shown,
                "fault": _fault_json(fault),
            },
            lambda c: None,
        )
        return 1 if fault is not None else 0
    for line in shown:
        _print_line(out, line)
    if follow:
        log = ConsoleLog(m.paths.serial_log, offset=len(data))
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                for line in log.poll():
                    _print_line(out, line)
                if not m.is_running():
                    for line in log.poll():
                        _print_line(out, line)
                    break
                time.sleep(0.2)
    fault = m.fault()
    if fault is not None:
        if out.as_json:
            out.emit({"fault": _fault_json(fault)}, lambda c: None)
        else:
            crash = m.crash_error(fault)
            out.error(
                f"lab {name} crashed ({fault.title}): {fault.line.strip()}",
                crash.hint,
                kind="LabCrashed",
            )
        return 1
    return 0


def _print_line(out: Output, line: str) -> None:
    if out.as_json:
        sys.stdout.write(json.dumps({"line": line}) + "\n")
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _fault_json(fault: ConsoleFault | None) -> dict[str, object] | None:
    if fault is None:
        return None
    return {"title": fault.title, "line": fault.line, "excerpt": list(fault.excerpt)}


# -- snapshots -----------------------------------------------------------------


@lab.group()
@json_option
def snapshot() -> None:
    """Whole-host snapshots of a lab (RAM, devices, disk)."""


_LAB_OPTION = click.option("--lab", "name", default="default", show_default=True, metavar="NAME")


@snapshot.command("save")
@_LAB_OPTION
@click.argument("tag")
@json_option
@click.pass_obj
def snapshot_save(out: Output, name: str, tag: str) -> None:
    """Save the running host of lab NAME as TAG (replacing a TAG it has)."""
    m = existing(name)
    with watching(m):
        m.require_running()
        seconds = m.savevm(tag)
    out.emit(
        {"lab": name, "tag": tag, "seconds": round(seconds, 3)},
        lambda c: c.print(f"saved lab {escape(name)} as {escape(tag)} in {seconds:.1f} s"),
    )


@snapshot.command("load")
@_LAB_OPTION
@click.argument("tag")
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SECONDS")
@json_option
@click.pass_obj
def snapshot_load(out: Output, name: str, tag: str, timeout: float) -> None:
    """Return lab NAME to TAG (a stopped or crashed lab starts from it)."""
    m = existing(name)
    start = time.monotonic()
    if m.condition() == "crashed":
        # A crashed host may still be rebooting (then QEMU quits): start over, from TAG.
        m.kill()
    restarted = not m.is_running()
    if restarted:
        st = m.state
        assert st is not None
        image = LabImage.load(Path(st.image))
        with (
            _Progress(out, f"starting lab {name} from {tag}") as progress,
            watching(m, before=False),
        ):
            m.resume(image, tag, timeout=timeout, progress=progress)
    else:
        with watching(m):
            m.loadvm(tag, timeout=timeout)
    seconds = time.monotonic() - start
    how = "started from" if restarted else "returned to"
    out.emit(
        {"lab": name, "tag": tag, "seconds": round(seconds, 3), "restarted": restarted},
        lambda c: c.print(f"lab {escape(name)} {how} {escape(tag)} in {seconds:.1f} s"),
    )


@snapshot.command("list")
@_LAB_OPTION
@json_option
@click.pass_obj
def snapshot_list(out: Output, name: str) -> None:
    """The snapshots of lab NAME."""
    m = existing(name)
    with watching(m):
        infos = m.snapshot_info()
    rows = [
        {"tag": s.tag, "vm_size": s.vm_size, "date": s.date, "vm_clock": s.vm_clock} for s in infos
    ]

    def render(console: Console) -> None:
        if not rows:
            console.print(f"lab {escape(name)} has no snapshots")
            return
        table = Table(show_edge=False, header_style="bold", box=None, padding=(0, 1))
        for column in ("TAG", "VM SIZE", "DATE", "VM CLOCK"):
            table.add_column(column)
        for r in rows:
            table.add_row(*(escape(str(r[k])) for k in ("tag", "vm_size", "date", "vm_clock")))
        console.print(table)

    out.emit({"lab": name, "snapshots": rows}, render)


@snapshot.command("delete")
@_LAB_OPTION
@click.argument("tag")
@json_option
@click.pass_obj
def snapshot_delete(out: Output, name: str, tag: str) -> None:
    """Delete snapshot TAG of lab NAME."""
    m = existing(name)
    if tag not in m.snapshots():
        raise UsageError(
            f"lab {name!r} has no snapshot {tag!r}",
            hint=f"its snapshots: {', '.join(m.snapshots()) or 'none'}",
        )
    with watching(m):
        m.delvm(tag)
    out.emit(
        {"lab": name, "tag": tag, "deleted": True},
        lambda c: c.print(f"deleted snapshot {escape(tag)} of lab {escape(name)}"),
    )
