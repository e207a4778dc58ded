"""`capsule diff` and `capsule explain`: questions about policies that z3 answers."""

from __future__ import annotations

import json
import logging

import typer

from capsule.cli import exitcodes
from capsule.cli.main import app
from capsule.errors import CapsuleError

log = logging.getLogger(__name__)


def _load(path: str):
    """Load one policy file; errors in it stop the command."""
    from capsule.lang import load_policy
    from capsule.lang.diagnostics import SourceCache, render_text

    policy, diags = load_policy([path])
    errors = [d for d in diags if d.is_error]
    if errors:
        typer.echo(render_text(errors, SourceCache()), err=True, nl=False)
        raise CapsuleError(
            f"failed to load policy {path}: {len(errors)} error(s)",
            hint=f"fix them first; `capsule check {path}` lists every finding",
            exit_code=exitcodes.POLICY_ERRORS,
        )
    return policy


@app.command()
def diff(
    old: str = typer.Argument(..., help="The policy before the change."),
    new: str = typer.Argument(..., help="The policy after the change."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show, per area, the events that OLD and NEW decide differently.

    Exit code 0 when the policies are equivalent, 1 when they differ or when z3
    could not decide an area within its limits (a reviewer must look).
    """
    from capsule.analysis import diff as semantic_diff

    result = semantic_diff.diff(_load(old), _load(new))
    if as_json:
        typer.echo(json.dumps(semantic_diff.to_json(result), indent=2))
    else:
        typer.echo(semantic_diff.render_text(result, old, new), nl=False)
    if not result.equivalent:
        raise typer.Exit(exitcodes.POLICY_ERRORS)


@app.command()
def explain(
    policy: str = typer.Argument(..., help="The policy file."),
    event: list[str] = typer.Argument(
        ..., help="The event, e.g. file read /home/a/.ssh/id_rsa exe=/usr/bin/cat"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the rule that decides EVENT and the rules it overrides."""
    import shlex

    from capsule.analysis import explain as explainer
    from capsule.analysis.eventtext import parse_event

    try:
        parsed = parse_event(" ".join(shlex.quote(word) for word in event))
    except CapsuleError as err:  # the event is an argument: a usage error
        err.exit_code = exitcodes.USAGE
        raise
    result = explainer.explain(_load(policy), parsed)
    if as_json:
        typer.echo(json.dumps(explainer.to_json(result), indent=2))
    else:
        typer.echo(explainer.render_text(result), nl=False)
    if result.z3_agrees is False:
        raise typer.Exit(exitcodes.INTERNAL_ERROR)
