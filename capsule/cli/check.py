"""`capsule check FILE...`: parse and check policies, then look for conflicts."""

from __future__ import annotations

import enum
import importlib
import logging
from pathlib import Path

import typer

from capsule.cli import exitcodes
from capsule.cli.main import app
from capsule.lang import load_policy
from capsule.lang.diagnostics import (
    WARNING,
    Diagnostic,
    SourceCache,
    render_json,
    render_sarif,
    render_text,
    summary,
)
from capsule.lang.model import Policy

log = logging.getLogger(__name__)


class Format(str, enum.Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


@app.command()
def check(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="Policy files."),
    output_format: Format = typer.Option(
        Format.text, "--format", "-f", help="Output: text, json or sarif (2.1.0)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 3 if there are warnings."
    ),
    conflicts: bool = typer.Option(
        True, "--conflicts/--no-conflicts", help="Run the conflict analysis (z3)."
    ),
) -> None:
    """Check policy files: syntax, meaning and conflicts. Each FILE is one policy."""
    diags: list[Diagnostic] = []
    rules = 0
    for path in files:
        policy, found = load_policy([str(path)])
        if conflicts and not any(d.is_error for d in found):
            found += conflict_findings(policy)
        diags += found
        rules += len(policy.rules)

    # print findings, then say what the exit code means
    typer.echo(_render(diags, output_format), nl=False)
    if output_format is Format.text:
        files_text = f"{len(files)} file{'s' * (len(files) != 1)}"
        typer.echo(
            f"capsule check: {files_text}, {rules} rules: {summary(diags)}", err=True
        )
    raise typer.Exit(exit_code(diags, strict))


def exit_code(diags: list[Diagnostic], strict: bool) -> int:
    if any(d.is_error for d in diags):
        return exitcodes.POLICY_ERRORS
    if strict and any(d.severity == WARNING for d in diags):
        return exitcodes.STRICT_WARNINGS
    return exitcodes.OK


def conflict_findings(policy: Policy) -> list[Diagnostic]:
    """Findings of capsule.analysis.conflicts, if that module is installed."""
    try:
        conflicts = importlib.import_module("capsule.analysis.conflicts")
    except ModuleNotFoundError as err:
        if err.name != "capsule.analysis.conflicts":
            raise
        log.warning("conflict analysis skipped: capsule.analysis.conflicts is missing")
        return []
    return list(conflicts.analyze(policy))


def _render(diags: list[Diagnostic], output_format: Format) -> str:
    if output_format is Format.json:
        return render_json(diags)
    if output_format is Format.sarif:
        return render_sarif(diags)
    return render_text(diags, SourceCache())
