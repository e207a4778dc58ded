"""`capsule compile POLICY... -o OUT/`: check, lower, render, clang, check the .o."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import typer

from capsule.cli import exitcodes
from capsule.cli.main import app
from capsule.codegen import artifact
from capsule.errors import CapsuleError
from capsule.lang import load_policy
from capsule.lang.diagnostics import SourceCache, render_text

log = logging.getLogger(__name__)


@app.command()
def compile(  # noqa: A001 - the command is named after what it does
    files: list[Path] = typer.Argument(..., metavar="POLICY...", help="Policy files."),
    out: Path = typer.Option(..., "--output", "-o", help="Artifact directory."),
    arch: str = typer.Option(
        None, "--arch", help=f"Target: {', '.join(artifact.ARCHES)} (default: host)."
    ),
) -> None:
    """Compile a policy into BPF LSM programs, their map contents and a manifest."""
    policy, diags = load_policy([str(path) for path in files])
    errors = [d for d in diags if d.is_error]
    if errors:
        typer.echo(render_text(errors, SourceCache()), nl=False, err=True)
        raise CapsuleError(
            f"failed to compile {files[0]}: the policy has {len(errors)} error(s)",
            hint="run `capsule check` for every finding",
            exit_code=exitcodes.POLICY_ERRORS,
        )

    built = artifact.build(policy, out, arch)
    hooks = ", ".join(built.ir.hooks) or "none"
    typer.echo(f"capsule compile: wrote {out}/ (hooks: {hooks})", err=True)
    skipped = Counter(item.area for item in built.ir.unsupported)
    if skipped:
        areas = ", ".join(f"{area} {count}" for area, count in sorted(skipped.items()))
        typer.echo(
            f"capsule compile: not enforced in the kernel, decided in user space "
            f'only: {areas} (see {out}/manifest.json "unsupported")',
            err=True,
        )
