"""The ``xenkit`` command: global options, error reporting, exit codes.

Exit codes: 0 success, 1 an operation failed (or a check found problems),
2 bad input. A ``XenkitError`` becomes one message with its hint; anything
else is a bug, shown with a traceback only under ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
from typing import ClassVar

import click

from xenkit import __version__
from xenkit.cli.output import Output
from xenkit.core.errors import XenkitError


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs: importing them all
    (the lab's, the clamp's, rich's tables) took 0.2 s before any command started."""

    #: name -> (module, attribute), in the order ``--help`` lists them.
    COMMANDS: ClassVar[dict[str, tuple[str, str]]] = {
        "clamp": ("xenkit.cli.clamp_cmds", "clamp"),
        "config": ("xenkit.cli.config_cmds", "config"),
        "lab": ("xenkit.cli.lab_cmds", "lab"),
        "migrate": ("xenkit.cli.migrate_cmds", "migrate"),
        "motion": ("xenkit.cli.motion_cmds", "motion"),
        "restore": ("xenkit.cli.snapshot_cmds", "restore"),
        "save": ("xenkit.cli.snapshot_cmds", "save"),
        "snapshot": ("xenkit.cli.snapshot_cmds", "snapshot"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        del ctx
        return sorted(self.COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        del ctx
        where = self.COMMANDS.get(cmd_name)
        if where is None:
            return None
        command = getattr(importlib.import_module(where[0]), where[1])
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="xenkit")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
@click.option("-v", "--verbose", count=True, help="More detail; repeat for even more.")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, verbose: int, debug: bool) -> None:
    """A toolkit for Xen hosts."""
    ctx.obj = Output(as_json=as_json, verbose=verbose, debug=debug)


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


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
            _print_traceback()
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
            _print_traceback()
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
