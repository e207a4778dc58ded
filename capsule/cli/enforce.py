"""`capsule enforce POLICY|ARTIFACT -- CMD`: run CMD with the policy enforced."""

import json
import logging
import os
import time
from pathlib import Path

import typer
from rich.console import Console

from capsule.cli import exitcodes
from capsule.cli.main import app
from capsule.errors import CapsuleError

_PASSTHROUGH = {"allow_interspersed_args": False}
RUNS_DIR = Path("/var/lib/capsule/runs")


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


def _default_directory() -> Path:
    # outside the agent's working tree: the run directory is read-only for the agent,
    # and Landlock would otherwise deny new files next to it
    return RUNS_DIR / f"enforce-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}"


def load_policy_or_artifact(source: Path):
    """The checked Policy and its files, from a .cap file or an artifact directory."""
    from capsule.lang import load_policy

    files = [str(source)]
    if source.is_dir():
        files = _artifact_sources(source)
    elif not source.exists():
        raise CapsuleError(f"failed to read {source}: no such file or directory")
    policy, diagnostics = load_policy(files)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        from capsule.lang.diagnostics import SourceCache, render_text

        typer.echo(render_text(errors, SourceCache()), err=True, nl=False)
        raise CapsuleError(
            f"failed to load policy {source}: {len(errors)} error(s)", exit_code=1
        )
    if source.is_dir():
        _check_artifact_hash(source, policy)
    return policy, list(policy.files or files)


def _artifact_sources(directory: Path) -> list[str]:
    from capsule.codegen import artifact

    # the manifest and the object are checked against each other before any use
    sources = artifact.load(directory)["sources"]
    if not sources:
        raise CapsuleError(
            f"failed to read {directory / artifact.MANIFEST}: it names no sources"
        )
    return list(sources[:1])


def _check_artifact_hash(directory: Path, policy) -> None:
    from capsule.codegen.ir import policy_hash

    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("policy_sha256") != policy_hash(policy):
        raise CapsuleError(
            f"failed to use artifact {directory}: its policy sources "
            "changed since it was compiled",
            hint="recompile it, or pass the .cap file",
        )


@app.command(context_settings=_PASSTHROUGH)
def enforce(
    policy: Path = typer.Argument(
        ...,
        metavar="POLICY|ARTIFACT",
        help="A .cap file, or an artifact from capsule compile.",
    ),
    command: list[str] = typer.Argument(
        ..., metavar="-- CMD [ARG...]", help="The command to run under the policy."
    ),
    require: str = typer.Option(
        "best-effort",
        "--require",
        metavar="LEVEL",
        help="full: refuse to start if any deny rule would be "
        "audit only. best-effort (default): start, and say "
        "so in the coverage report.",
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="auto, lsm or compat (Landlock, seccomp, cgroup)."
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        metavar="DIR",
        help=f"Run directory (default: {RUNS_DIR}/enforce-...).",
    ),
    user: str = typer.Option(
        None,
        "--user",
        "-u",
        metavar="U",
        help="Run CMD as this user (name or uid); Capsule itself stays root.",
    ),
    self_protect: bool = typer.Option(
        True,
        "--self-protect/--no-self-protect",
        help="Keep the agent away from Capsule itself.",
    ),
    report_denials: bool = typer.Option(
        True,
        "--report-denials/--no-report-denials",
        help="Report Landlock's refusals in the timeline (costs every syscall on the "
        "machine a little while CMD runs).",
    ),
    trace: bool = typer.Option(
        False,
        "--trace",
        help="Also trace everything CMD does (the full timeline, and "
        "audit rules on operations no enforcement mechanism sees).",
    ),
    task: str = typer.Option(
        None,
        "--task",
        metavar="TEXT",
        help="The agent's declared task, for the escalation classifier.",
    ),
    task_file: Path = typer.Option(
        None, "--task-file", metavar="FILE", help="Read the declared task from FILE."
    ),
    models: Path = typer.Option(
        None,
        "--models",
        metavar="DIR",
        envvar="CAPSULE_MODELS",
        help="Escalation models (adfa-syscalls and agent-events .onnx/.json) from "
        "DIR instead of the shipped ones.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    live: bool = typer.Option(
        True,
        "--timeline/--no-timeline",
        help="Show denials, audits and kills as they happen.",
    ),
) -> None:
    """Run CMD with POLICY enforced from its first instruction; exit with its status."""
    from capsule.runtime import enforce as runtime
    from capsule.runtime.session import RunAs
    from capsule.runtime.timeline import Timeline

    if require not in runtime.REQUIRE_LEVELS:
        raise CapsuleError(
            f"failed to parse --require {require!r}: expected one of "
            f"{', '.join(runtime.REQUIRE_LEVELS)}",
            exit_code=exitcodes.USAGE,
        )
    if backend not in runtime.BACKENDS:
        raise CapsuleError(
            f"failed to parse --backend {backend!r}: expected one of "
            f"{', '.join(runtime.BACKENDS)}",
            exit_code=exitcodes.USAGE,
        )
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise CapsuleError(
            "failed to parse the command: nothing after --", exit_code=exitcodes.USAGE
        )
    task_text = _task_text(task, task_file)
    resolved, files = load_policy_or_artifact(policy)
    if os.geteuid() != 0:
        raise CapsuleError(
            "failed to start enforcement: capsule enforce needs root",
            hint="run it as root, e.g. `sudo capsule enforce POLICY -- CMD`; "
            "use --user to run CMD as another user",
        )
    caps = runtime.probe()
    chosen = runtime.select_backend(backend, caps)
    err = _stderr()
    timeline = Timeline(err)
    coverage: dict = {}
    request = runtime.EnforceRequest(
        policy=resolved,
        policy_files=files + ([str(policy)] if policy.is_dir() else []),
        command=list(command),
        directory=output or _default_directory(),
        require=require,
        self_protect=self_protect,
        caps=caps,
        report_denials=report_denials,
        trace=trace,
        task=task_text,
        models=models,
        run_as=RunAs.lookup(user) if user else None,
        on_event=timeline.write if live else None,
        on_start=lambda t0_ns: setattr(timeline, "t0_ns", t0_ns),
        on_coverage=lambda report: _show_coverage(err, report, coverage),
    )
    if chosen == "lsm":
        from capsule.runtime.lsm import LsmRun

        result = LsmRun(request, policy if policy.is_dir() else None).run()
    else:
        result = runtime.CompatRun(request).run()
    if as_json:
        # the JSON keeps every detail of the coverage that the compact report groups
        typer.echo(json.dumps(result.summary() | coverage, indent=2))
    else:
        _print_summary(err, result.summary())
    raise typer.Exit(result.exit_code)


def _show_coverage(err: Console, report, coverage: dict) -> None:
    """The coverage report before CMD starts: one line per rule, or with `capsule -v`
    one line per object with every note in full."""
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    err.print(report.render(verbose=verbose), markup=False)
    coverage["coverage"] = report.to_json()


def _task_text(task: str | None, task_file: Path | None) -> str:
    if task is not None and task_file is not None:
        raise CapsuleError(
            "failed to parse --task: give --task or --task-file, not both",
            exit_code=exitcodes.USAGE,
        )
    if task_file is None:
        return task or ""
    try:
        return task_file.read_text(errors="replace").strip()
    except OSError as err:
        raise CapsuleError(
            f"failed to read task file {task_file}: {err.strerror}", exit_code=2
        ) from err


def _print_summary(err: Console, summary: dict) -> None:
    err.print(
        f"capsule: {summary['command'][0]} exited {summary['exit_code']} after "
        f"{summary['duration_s']}s: {summary['denied']} denied, "
        f"{summary['killed']} killed, {summary['audited']} audited",
        markup=False,
    )
    for rule, count in summary["by_rule"].items():
        err.print(f"  {rule}: {count}", markup=False)
    if summary["escalations"]:
        counts = ", ".join(f"{n} {v}" for v, n in summary["escalations"].items())
        err.print(f"  escalations: {counts}", markup=False)
    if summary["switched_to"]:
        err.print(f"  switched to {summary['switched_to']}", markup=False)
    err.print(f"  run: {summary['store']}", markup=False)
