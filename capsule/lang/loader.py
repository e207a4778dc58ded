"""Read policy files and what they include, then check them as one policy."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator

from capsule.lang import syntax as ast
from capsule.lang.checker import check
from capsule.lang.diagnostics import ERROR, Diagnostic, Related
from capsule.lang.model import Location, Policy
from capsule.lang.parser import ParseFailed, decode, parse

log = logging.getLogger(__name__)

MAX_INCLUDE_DEPTH = 32
MAX_FILE_BYTES = 64 * 1024 * 1024  # a policy larger than this is a mistake


class _Loader:
    def __init__(self) -> None:
        self.files: dict[str, ast.FileSyntax | None] = {}  # real path -> syntax
        self.order: list[str] = []  # display paths, in load order
        self.diags: list[Diagnostic] = []

    def load(self, path: str, via: ast.Include | None, stack: list[str]) -> None:
        real = os.path.realpath(path)
        if real in stack:
            self._cycle(path, via, stack)
            return
        if real in self.files:  # included twice without a cycle: load once
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self._fail(
                via,
                "include-depth",
                f"includes nest more than {MAX_INCLUDE_DEPTH} files deep",
            )
            return
        self.files[real] = None
        syntax = self._parse(path, via)
        if syntax is not None:
            self.add(syntax, real, stack)

    def add(self, syntax: ast.FileSyntax, real: str, stack: list[str]) -> None:
        """Record a parsed file and load what it includes."""
        self.files[real] = syntax
        self.order.append(syntax.path)
        log.debug("loaded %s (%d statements)", syntax.path, len(syntax.statements))
        for stmt in syntax.statements:
            if isinstance(stmt, ast.Include):
                child = os.path.normpath(
                    os.path.join(os.path.dirname(syntax.path), stmt.path.text)
                )
                self.load(child, stmt, stack + [real])

    def _parse(self, path: str, via: ast.Include | None) -> ast.FileSyntax | None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            cause = err.strerror or str(err)
            if via is not None:
                self._fail(
                    via,
                    "missing-include",
                    f"cannot include '{via.path.text}': {cause.lower()}",
                )
            else:
                self.diags.append(
                    Diagnostic(
                        ERROR,
                        "unreadable-file",
                        f"cannot read '{path}': {cause.lower()}",
                        Location(path, 1, 1),
                    )
                )
            return None
        if len(data) > MAX_FILE_BYTES:
            self.diags.append(
                Diagnostic(
                    ERROR,
                    "unreadable-file",
                    "file is larger than 64 MiB",
                    Location(path, 1, 1),
                )
            )
            return None
        try:
            return parse(decode(data, path), path)
        except ParseFailed as failed:
            self.diags.append(failed.diagnostic)
            return None

    def _fail(self, via: ast.Include | None, code: str, message: str) -> None:
        loc = via.path.loc if via else Location("<command line>", 1, 1)
        length = via.path.length if via else 1
        self.diags.append(Diagnostic(ERROR, code, message, loc, length=length))

    def _cycle(self, path: str, via: ast.Include | None, stack: list[str]) -> None:
        start = stack.index(os.path.realpath(path))
        names = [os.path.basename(p) for p in stack[start:]] + [os.path.basename(path)]
        related = ()
        if via is not None:
            related = (Related(Location(path, 1, 1), "the cycle starts in this file"),)
        diag = Diagnostic(
            ERROR,
            "include-cycle",
            "include cycle: " + " -> ".join(names),
            via.path.loc if via else Location(path, 1, 1),
            related,
            via.path.length if via else 1,
        )
        self.diags.append(diag)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a policy is built.

    Parsing makes millions of small objects and no cycles; each collection walks
    all of them again, which made checking 10,000 rules about 40 % slower.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(paths: list[str]) -> tuple[Policy, list[Diagnostic]]:
    """Load files (and their includes) as one policy; see capsule.lang.load_policy."""
    with gc_paused():
        return _load(paths)


def _load(paths: list[str]) -> tuple[Policy, list[Diagnostic]]:
    loader = _Loader()
    for path in paths:
        loader.load(path, None, [])
    syntaxes = [s for s in loader.files.values() if s is not None]
    policy, diags = check(syntaxes, tuple(loader.order), paths)
    return policy, sorted(loader.diags, key=Diagnostic.sort_key) + diags


def load_source(
    source: str | bytes, file: str = "<string>"
) -> tuple[Policy, list[Diagnostic]]:
    """Check a policy given as text or bytes (tests, `explain -e`); its includes are
    relative to the directory of `file`."""
    with gc_paused():
        return _load_source(source, file)


def _load_source(source: str | bytes, file: str) -> tuple[Policy, list[Diagnostic]]:
    loader = _Loader()
    try:
        text = decode(source, file) if isinstance(source, bytes) else source
        syntax = parse(text, file)
    except ParseFailed as failed:
        return Policy(rules=()), [failed.diagnostic]
    loader.add(syntax, os.path.realpath(file), [])
    syntaxes = [s for s in loader.files.values() if s is not None]
    policy, diags = check(syntaxes, tuple(loader.order), [file])
    return policy, sorted(loader.diags, key=Diagnostic.sort_key) + diags


load_text = load_source
