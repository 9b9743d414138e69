"""``xenkit motion ...``: move a VM between xl and XCP (XenAPI, XVA) or OVF/OVA.

Conversions run here, on the control side, on image files; nothing needs a Xen host.
Every command reports what the target cannot carry as warnings naming the key
(``--strict`` refuses instead, before writing anything).

The commands import ``jobs`` (and with it xl's config model) when they run, so
that ``convert``, which needs neither, starts in a tenth of a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from xenkit.cli.output import Output, escape, json_option
from xenkit.motion.disk.base import Progress as ByteProgress
from xenkit.motion.disk.base import no_progress

if TYPE_CHECKING:
    from rich.console import Console

    from xenkit.motion import jobs

strict_option = click.option(
    "--strict", is_flag=True, help="Refuse (write nothing) if anything would be lost."
)
out_file = click.option(
    "--out", "target", required=True, type=click.Path(path_type=Path), help="The file to write."
)
out_dir = click.option(
    "--out", "directory", required=True, type=click.Path(path_type=Path),
    help="The directory for the xl config and the disk images (made if missing).",
)  # fmt: skip
format_option = click.option(
    "--format", "disk_format", type=click.Choice(["raw", "qcow2", "vhd", "vmdk"]),
    default="raw", show_default=True, help="Format of the disk images written.",
)  # fmt: skip
pool_options = [
    click.option("--pool", required=True, help="The pool master's URL (https://host)."),
    click.option("--user", "username", help="Pool login (default: $XENKIT_XAPI_USER, root)."),
    click.option(
        "--password-env",
        default="XENKIT_XAPI_PASSWORD",
        show_default=True,
        help="The environment variable holding the password (never given on the command line).",
    ),
    click.option(
        "--no-verify-tls", is_flag=True, help="Accept the pool's self-signed certificate."
    ),
]


def _pool(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(pool_options):
        f = option(f)
    return f


@click.group()
def motion() -> None:
    """Move VMs between xl, XCP-ng/XenServer (XenAPI, XVA) and OVF/OVA."""


@contextmanager
def _bytes_progress(out: Output, /, title: str) -> Iterator[ByteProgress]:
    """A bar of bytes on a terminal; nothing for scripts (``--json``) or pipes."""
    if out.as_json or not out.err_console.is_terminal:
        yield no_progress
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    console = out.err_console
    columns = (BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(f"[bold]{escape(title)}", *columns, console=console, transient=True) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def _report(out: Output, /, result: jobs.MotionResult) -> None:
    def render(c: Console) -> None:
        for loss in result.losses:
            c.print(f"[yellow]warning:[/] {escape(str(loss))}")
        for note in result.notes:
            c.print(f"[dim]{escape(note)}[/]")
        c.print(f"{result.direction} [bold]{escape(result.name)}[/] in {result.seconds:.1f} s:")
        for output in result.outputs:
            c.print(f"  {escape(output)}")
        if result.losses:
            c.print(
                f"{len(result.losses)} setting(s) not carried exactly (see docs/motion/mapping.md)"
            )

    out.emit(result.to_json(), render)


@motion.command("to-xva")
@click.argument("cfg", type=click.Path(path_type=Path))
@out_file
@click.option("--xxhash", is_flag=True, help="Checksum chunks with XXH64 (CH 8.1+, XCP-ng 8.1+).")
@strict_option
@json_option
@click.pass_obj
def to_xva(out: Output, /, cfg: Path, **kw: Any) -> None:
    """Write the VM of xl config CFG, with its disks, as an XVA (xe vm-import)."""
    from xenkit.motion import jobs

    with _bytes_progress(out, f"writing {kw['target']}") as progress:
        result = jobs.to_xva(cfg, kw["target"], checksum="xxhash" if kw["xxhash"] else "sha1",
                             strict=kw["strict"], progress=progress)  # fmt: skip
    _report(out, result)


@motion.command("from-xva")
@click.argument("xva", type=click.Path(path_type=Path))
@out_dir
@format_option
@strict_option
@json_option
@click.pass_obj
def from_xva(out: Output, /, xva: Path, **kw: Any) -> None:
    """Write an xl config and disk images from XVA (checksums verified as it reads)."""
    from xenkit.motion import jobs

    with _bytes_progress(out, f"reading {xva}") as progress:
        fmt = jobs.check_output_format(kw["disk_format"])
        result = jobs.from_xva(
            xva, kw["directory"], disk_format=fmt, strict=kw["strict"], progress=progress
        )
    _report(out, result)


@motion.command("to-ova")
@click.argument("cfg", type=click.Path(path_type=Path))
@out_file
@click.option(
    "--disk-format", type=click.Choice(["vmdk", "vhd", "qcow2"]), default="vmdk",
    show_default=True,
    help="vmdk: streamOptimized (VMware, VirtualBox); vhd: dynamic (XenCenter); qcow2 (KVM).",
)  # fmt: skip
@click.option("--ovf-version", type=click.Choice(["1.0", "2.0"]), default="1.0", show_default=True)
@strict_option
@json_option
@click.pass_obj
def to_ova(out: Output, /, cfg: Path, **kw: Any) -> None:
    """Write the VM of xl config CFG as an OVA (OVF + SHA256 manifest + disks)."""
    from xenkit.motion import jobs

    fmt: Literal["vmdk", "vhd", "qcow2"] = kw["disk_format"]
    version: Literal["1.0", "2.0"] = kw["ovf_version"]
    with _bytes_progress(out, f"writing {kw['target']}") as progress:
        result = jobs.to_ova(cfg, kw["target"], disk_format=fmt, version=version,
                             strict=kw["strict"], progress=progress)  # fmt: skip
    _report(out, result)


def _from_package(out: Output, /, package: Path, kw: dict[str, Any]) -> None:
    from xenkit.motion import jobs

    with _bytes_progress(out, f"reading {package}") as progress:
        fmt = jobs.check_output_format(kw["disk_format"])
        result = jobs.from_ova(
            package, kw["directory"], disk_format=fmt, strict=kw["strict"], progress=progress
        )
    _report(out, result)


@motion.command("from-ova")
@click.argument("ova", type=click.Path(path_type=Path))
@out_dir
@format_option
@strict_option
@json_option
@click.pass_obj
def from_ova(out: Output, /, ova: Path, **kw: Any) -> None:
    """Write an xl config and disk images from an OVA (VMware, VirtualBox, XenCenter)."""
    _from_package(out, ova, kw)


@motion.command("from-ovf")
@click.argument("ovf", type=click.Path(path_type=Path))
@out_dir
@format_option
@strict_option
@json_option
@click.pass_obj
def from_ovf(out: Output, /, ovf: Path, **kw: Any) -> None:
    """Write an xl config and disk images from an OVF whose files lie beside it."""
    _from_package(out, ovf, kw)


@motion.command("to-xapi")
@click.argument("cfg", type=click.Path(path_type=Path))
@_pool
@click.option("--sr", help="The SR for the disks, by uuid or name (default: the pool's).")
@click.option(
    "--network", "networks", multiple=True,
    help="XLBRIDGE=NETWORK, or NETWORK for every vif (name, uuid or bridge); repeatable.",
)  # fmt: skip
@click.option(
    "--upload", type=click.Choice(["auto", "raw", "vhd"]), default="auto", show_default=True,
    help="How disks travel: vhd sends only the allocated blocks.",
)  # fmt: skip
@strict_option
@json_option
@click.pass_obj
def to_xapi(out: Output, /, cfg: Path, **kw: Any) -> None:
    """Create the VM of xl config CFG in a pool (XenAPI) and stream its disks into an SR."""
    from xenkit.motion import jobs

    with _bytes_progress(out, f"uploading to {kw['pool']}") as progress:
        result = jobs.to_xapi(
            cfg, kw["pool"], username=kw["username"], password=_password(kw["password_env"]),
            sr=kw["sr"], networks=kw["networks"], upload=kw["upload"],
            verify_tls=not kw["no_verify_tls"], strict=kw["strict"], progress=progress,
        )  # fmt: skip
    _report(out, result)


@motion.command("from-xapi")
@click.argument("vm")
@_pool
@out_dir
@click.option(
    "--format", "disk_format", type=click.Choice(["raw", "qcow2", "vhd"]), default="raw",
    show_default=True, help="Format of the disk images written.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Export a running VM anyway (its disks may be torn).")
@strict_option
@json_option
@click.pass_obj
def from_xapi(out: Output, /, vm: str, **kw: Any) -> None:
    """Write an xl config and disk images from VM (uuid or name) in a pool."""
    from xenkit.motion import jobs

    with _bytes_progress(out, f"downloading {vm}") as progress:
        result = jobs.from_xapi(
            vm, kw["pool"], kw["directory"], username=kw["username"],
            password=_password(kw["password_env"]), disk_format=kw["disk_format"],
            force=kw["force"], verify_tls=not kw["no_verify_tls"], strict=kw["strict"],
            progress=progress,
        )  # fmt: skip
    _report(out, result)


@motion.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--to", "dst_format", type=click.Choice(["raw", "qcow2", "vhd", "vmdk"]), required=True
)
@click.option("--from", "src_format", type=click.Choice(["raw", "qcow2", "vhd", "vmdk"]))
@click.option("--restart", is_flag=True, help="Start over instead of resuming an interrupted run.")
@json_option
@click.pass_obj
def convert(out: Output, /, src: Path, dst: Path, **kw: Any) -> None:
    """Convert one disk image (sparse, verified, resumable): SRC to DST in --to's format."""
    from xenkit.motion.disk.convert import convert as convert_disk

    start = time.monotonic()
    with _bytes_progress(out, f"converting {src.name}") as progress:
        done = convert_disk(src, kw["src_format"], dst, kw["dst_format"], progress=progress,
                            resume=not kw["restart"])  # fmt: skip
    data = {
        "src": str(src), "dst": str(done.path), "format": done.format,
        "virtual_size": done.virtual_size, "size": done.size, "digest": done.digest,
        "resumed_from": done.resumed_from, "verified": done.verified,
        "seconds": round(time.monotonic() - start, 3),
    }  # fmt: skip

    def render(c: Console) -> None:
        c.print(f"{escape(str(src))} -> {escape(str(dst))} ({kw['dst_format']}) "
                f"in {data['seconds']:.1f} s")  # fmt: skip

    out.emit(data, render)


def _password(variable: str) -> str | None:
    return os.environ.get(variable)
