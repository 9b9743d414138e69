"""The ``xenkit`` command: global options, error reporting, exit codes.

Exit codes: 0 success, 1 an operation failed (or a check found problems),
2 bad input. A ``XenkitError`` becomes one message with its hint; anything
else is a bug, shown with a traceback only under ``--debug``.
"""

from __future__ import annotations

import sys
import traceback

import click

from xenkit import __version__
from xenkit.cli.output import Output
from xenkit.core.errors import XenkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="xenkit")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
@click.option("-v", "--verbose", count=True, help="More detail; repeat for even more.")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, verbose: int, debug: bool) -> None:
    """A toolkit for Xen hosts."""
    ctx.obj = Output(as_json=as_json, verbose=verbose, debug=debug)


def _register() -> None:
    from xenkit.cli.clamp_cmds import clamp
    from xenkit.cli.config_cmds import config
    from xenkit.cli.lab_cmds import lab
    from xenkit.cli.migrate_cmds import migrate
    from xenkit.cli.motion_cmds import motion
    from xenkit.cli.snapshot_cmds import restore, save, snapshot

    cli.add_command(clamp)
    cli.add_command(config)
    cli.add_command(lab)
    cli.add_command(snapshot)
    cli.add_command(save)
    cli.add_command(restore)
    cli.add_command(migrate)
    cli.add_command(motion)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (never raises)."""
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="xenkit", standalone_mode=False)
    except XenkitError as e:
        Output(as_json=as_json).error(e.message, e.hint, kind=type(e).__name__)
        if debug:
            traceback.print_exc()
        return e.exit_code
    except click.exceptions.Abort:
        Output(as_json=as_json).error("interrupted", None, kind="Interrupted")
        return 130
    except click.ClickException as e:
        hint = None
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f"see: {e.ctx.command_path} --help"
        Output(as_json=as_json).error(e.format_message(), hint, kind="UsageError")
        return 2 if isinstance(e, click.UsageError) else e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        Output(as_json=as_json).error("interrupted", None, kind="Interrupted")
        return 130
    except Exception as e:
        Output(as_json=as_json).error(
            f"internal error: {type(e).__name__}: {e}",
            "this is a bug in xenkit; run again with --debug and report the traceback",
            kind="InternalError",
        )
        if debug:
            traceback.print_exc()
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
