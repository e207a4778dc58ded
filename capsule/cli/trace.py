"""`capsule trace -- CMD`: record what a command does; `capsule timeline`: show it."""

import json
import re
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from capsule.cli import exitcodes
from capsule.cli.main import app
from capsule.errors import CapsuleError
from capsule.lang.names import AREAS
from capsule.runtime.store import RunReader, to_json
from capsule.runtime.timeline import Timeline

_PASSTHROUGH = {"allow_interspersed_args": False}


def _stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


def _default_directory() -> Path:
    return Path(f"capsule-trace-{time.strftime('%Y%m%d-%H%M%S')}")


@app.command(context_settings=_PASSTHROUGH)
def trace(
    command: list[str] = typer.Argument(
        ..., metavar="CMD", help="The command to run and trace."
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        metavar="DIR",
        help="Run directory (default: ./capsule-trace-<time>).",
    ),
    user: str = typer.Option(
        None,
        "--user",
        "-u",
        metavar="U",
        help="Run the command as this user (name or uid).",
    ),
    cgroup: Path = typer.Option(
        None,
        "--cgroup",
        metavar="PATH",
        help="Run CMD in this cgroup (v2) and trace every process in it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    live: bool = typer.Option(
        True, "--timeline/--no-timeline", help="Show events on stderr as they happen."
    ),
    buffer_mb: int = typer.Option(
        64, "--buffer-mb", metavar="MB", help="Ring buffer size (a power of two)."
    ),
    fold: bool = typer.Option(
        True,
        "--fold/--no-fold",
        help="Send a thread's opens that repeat its last open (same file, flags and "
        "fd, within 100 ms) as one `repeat` event with their count.",
    ),
) -> None:
    """Run CMD, record what its process tree does, and exit with CMD's exit code."""
    from capsule.runtime import session

    session.preflight()
    run_as = session.RunAs.lookup(user) if user else None
    directory = output or _default_directory()
    live_timeline = Timeline(_stderr_console())

    def show(event: dict) -> None:
        live_timeline.t0_ns = run.t0_ns  # the same times as `capsule timeline` shows
        live_timeline.write(event)

    on_event = show if live else None
    run = session.Session(
        list(command),
        directory,
        _tracer_factory(cgroup, buffer_mb, fold),
        run_as=run_as,
        on_event=on_event,
        cgroup=cgroup,
    )
    result = run.run()

    if result.exec_error:
        typer.echo(f"capsule: {command[0]}: {_exec_message(result)}", err=True)
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2))
        if result.drops:  # never silent, even when stdout is for a program
            _print_losses(result.summary(), _stderr_console())
    else:
        _print_summary(result.summary())
    raise typer.Exit(result.exit_code)


def _exec_message(result) -> str:
    return "command not found" if result.exit_code == 127 else result.exec_error


def _tracer_factory(cgroup: Path | None, buffer_mb: int, fold: bool = True):
    try:
        from capsule.runtime.tracer import Tracer
    except ImportError as err:
        raise CapsuleError(f"failed to load the tracer: {err}") from err
    if cgroup is not None and not cgroup.is_dir():
        raise CapsuleError(
            f"failed to trace cgroup {cgroup}: no such directory",
            hint="pass a directory under the cgroup v2 mount",
        )
    if buffer_mb < 1 or buffer_mb & (buffer_mb - 1) or buffer_mb > 4096:
        raise CapsuleError(
            f"failed to size the ring buffer: --buffer-mb {buffer_mb} is not a power "
            "of two between 1 and 4096"
        )
    return lambda: Tracer(
        cgroup_path=str(cgroup) if cgroup else None,
        ring_size=buffer_mb << 20,
        **({} if fold else {"fold_ns": 0}),
    )


def _print_summary(summary: dict) -> None:
    err = _stderr_console()
    areas = ", ".join(f"{a} {n}" for a, n in summary["per_area"].items()) or "none"
    _line(
        err,
        f"capsule: exit code {summary['exit_code']} after "
        f"{summary['duration_s']:.2f}s; {summary['events']} events ({areas})",
    )
    _print_losses(summary, err)
    _line(err, f"capsule: store {summary['store']}, jsonl {summary['jsonl']}")


def _print_losses(summary: dict, err: Console) -> None:
    """Drops and truncation, in red when events were lost, with the fix."""
    style = "bold red" if summary["drops"] else ""
    _line(
        err,
        f"capsule: {summary['drops']} events dropped by the kernel, "
        f"{summary['truncated']} with truncated strings",
        style,
    )
    if summary["drops"]:
        _line(
            err,
            "capsule: hint: a bigger ring buffer (--buffer-mb 256) or "
            "--no-timeline loses fewer events",
        )


def _line(console: Console, text: str, style: str = "") -> None:
    console.print(text, style=style, highlight=False, markup=False)


# -- timeline -------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ns|us|ms|s|m)?$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
}


def parse_offset(text: str, option: str) -> int:
    """ "1.5", "1.5s", "250ms" -> ns from the start of the run."""
    match = _DURATION.match(text.strip())
    if not match:
        raise CapsuleError(
            f"failed to parse {option} {text!r}: expected a time from the "
            "start of the run such as 2, 1.5s or 250ms"
        )
    return int(float(match.group(1)) * _UNIT_NS[match.group(2) or "s"])


@app.command()
def timeline(
    run: Path = typer.Argument(
        ..., metavar="RUN", help="A run.db, or its run directory."
    ),
    area: list[str] = typer.Option(
        None, "--area", "-a", help="Only this area (repeatable)."
    ),
    pid: list[int] = typer.Option(
        None, "--pid", "-p", help="Only this pid (repeatable)."
    ),
    tree: bool = typer.Option(
        False, "--tree", help="With --pid: also every descendant of those pids."
    ),
    since: str = typer.Option(None, "--since", help="From this time after the start."),
    until: str = typer.Option(None, "--until", help="Up to this time after the start."),
    fmt: str = typer.Option("text", "--format", "-f", help="text or jsonl."),
) -> None:
    """Show a stored run again, filtered by area, pid and time."""
    for name in area or ():
        if name not in AREAS:
            raise CapsuleError(
                f"failed to filter by area {name!r}: unknown area",
                hint="one of: " + ", ".join(AREAS),
                exit_code=exitcodes.USAGE,
            )
    if fmt not in ("text", "jsonl"):
        raise CapsuleError(
            f"failed to use format {fmt!r}: expected text or jsonl",
            exit_code=exitcodes.USAGE,
        )
    offsets = [_offset(since, "--since"), _offset(until, "--until")]
    for number in pid or ():
        if number <= 0:  # no process has it: the filter would silently match nothing
            raise CapsuleError(
                f"failed to filter by --pid {number}: expected a process id above 0",
                exit_code=exitcodes.USAGE,
            )
    reader = RunReader(run)
    t0 = reader.meta().get("t0_ns", 0)
    since_ns, until_ns = (t0 + ns if ns is not None else None for ns in offsets)
    pids = sorted(reader.descendants(pid)) if tree and pid else pid
    events = reader.events(areas=area, pids=pids, since_ns=since_ns, until_ns=until_ns)
    if fmt == "jsonl":
        for event in events:
            sys.stdout.write(to_json(event) + "\n")
    else:
        out = Timeline(Console(soft_wrap=True, highlight=False, emoji=False), t0_ns=t0)
        for event in events:
            out.write(event)
    _warn_drops(reader)


def _offset(text: str | None, flag: str) -> int | None:
    """A time offset option in ns, or None; a bad one is a usage error."""
    if not text:
        return None
    try:
        return parse_offset(text, flag)
    except CapsuleError as err:
        err.exit_code = exitcodes.USAGE
        raise


def _warn_drops(reader: RunReader) -> None:
    drops = reader.drops()
    if drops:
        typer.echo(
            f"capsule: warning: this run lost {drops} events in the kernel "
            "(ring buffer full); the timeline is incomplete",
            err=True,
        )
