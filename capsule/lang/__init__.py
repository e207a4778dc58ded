"""The `.cap` policy language: grammar, parser, checks, model and semantics.

`load_policy(paths)` is the entry point for commands: it parses, includes, expands
and checks the files and returns the resolved Policy with every diagnostic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from capsule.lang.diagnostics import Diagnostic
    from capsule.lang.model import Policy


def load_policy(paths: Iterable[str]) -> tuple[Policy, list[Diagnostic]]:
    """Parse and check policy files; the Policy is usable only if no diagnostic is an
    error."""
    from capsule.lang.loader import load

    return load(list(paths))
