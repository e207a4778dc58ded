"""The `capsule` command: one typer app; each command lives in its own module."""

import logging
import sys

import typer

from capsule import __version__
from capsule.cli import exitcodes
from capsule.errors import CapsuleError

app = typer.Typer(
    name="capsule",
    help="See, and limit, what autonomous software does on Linux, with eBPF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capsule {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on failure."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    global _debug
    _debug = debug
    # WARNING by default: lifecycle steps (INFO) with -v, solver and libbpf detail with -vv
    if quiet:
        level = logging.ERROR
    elif verbose > 1 or debug:
        level = logging.DEBUG
    else:
        level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="capsule: %(levelname)s: %(message)s")


def _register_commands() -> None:
    # each module adds its commands to `app` when imported
    from capsule.cli import commands  # noqa: F401


def run() -> None:
    """Entry point: turn expected failures into one line and a named exit code."""
    _register_commands()
    try:
        # without standalone mode click returns typer.Exit's code instead of exiting
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except CapsuleError as err:
        if _debug:
            raise
        typer.echo(f"capsule: error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"capsule: hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("capsule: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and real bugs
        try:
            from click.exceptions import ClickException, UsageError
        except ModuleNotFoundError:  # typer >= 0.17 bundles its own click
            from typer._click.exceptions import ClickException, UsageError

        if isinstance(exc, ClickException):
            exc.show()
            usage = isinstance(exc, UsageError)
            sys.exit(exitcodes.USAGE if usage else exc.exit_code)
        if _debug:
            raise
        typer.echo(f"capsule: internal error: {exc!r} (rerun with --debug)", err=True)
        sys.exit(exitcodes.INTERNAL_ERROR)
