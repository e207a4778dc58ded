"""`capsule doctor`: what this machine lets Capsule trace and enforce, with fixes."""

from __future__ import annotations

import json

import typer

from capsule.cli import exitcodes
from capsule.cli.main import app


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with a `checks` list."),
) -> None:
    """Probe the kernel by loading tiny BPF programs; exit 0 if tracing works."""
    from capsule.runtime import doctor as probes

    checks = probes.run_checks()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "tracing": probes.tracing_works(checks),
                    "checks": [c.as_dict() for c in checks],
                },
                indent=2,
            )
        )
    else:
        width = max(len(c.feature) for c in checks)
        for c in checks:
            line = f"{c.status:<8} {c.feature:<{width}}  {c.detail}"
            typer.echo(
                line + (f"  (fix: {c.fix})" if c.fix and c.status != "ok" else "")
            )
    if not probes.tracing_works(checks):
        raise typer.Exit(exitcodes.CAPSULE_FAILED)
