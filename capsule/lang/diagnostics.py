"""Diagnostics about policies and their rendering as text, JSON and SARIF 2.1.0.

A diagnostic renders as `file:line:col: severity: message [code]`, then the source
line and a caret under the column. Other packages (capsule/analysis) create
Diagnostic objects too; they may use codes not listed in CODES.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from capsule import __version__
from capsule.lang.model import Location

ERROR, WARNING, NOTE = "error", "warning", "note"
_SNIPPET_WIDTH = 100  # longer source lines are shown as a window around the caret

# code -> one-line description (SARIF rule text and docs/language.md)
CODES = {
    "syntax-error": "the text does not follow the grammar",
    "invalid-utf8": "the file is not valid UTF-8",
    "bad-character": "the file holds a NUL or other control character",
    "unreadable-file": "a policy file cannot be read",
    "unknown-area": "a rule or default names no area",
    "unknown-operation": "an operation that its area does not have",
    "unknown-field": "an object field that its area does not have",
    "no-default-field": "a value without a field name in an area that has no default",
    "duplicate-field": "the same field twice in one rule",
    "bad-glob": "an invalid path glob",
    "bad-cidr": "an invalid IP address or CIDR block",
    "bad-port": "a port or port range that is malformed or out of 0-65535",
    "bad-id": "a uid or gid (range) that is malformed or out of range",
    "unknown-capability": "a capability name Linux does not have",
    "unknown-signal": "a signal name Linux does not have",
    "unknown-namespace": "a namespace kind Linux does not have",
    "unknown-protocol": "a protocol name Capsule does not know",
    "unknown-mount-flag": "a mount flag Linux does not have",
    "bad-fstype": "a malformed filesystem type name",
    "bad-device": "a device class or major:minor that is unknown or malformed",
    "bad-fallback": "a fallback on an effect other than escalate, or a bad fallback",
    "bad-severity": "a severity other than info, low, medium, high, critical",
    "bad-priority": "a priority outside -1000..1000",
    "unknown-setting": "a setting Capsule does not know",
    "bad-setting": "a setting with a value it does not take",
    "duplicate-setting": "the same setting twice",
    "missing-escalate-policy": "escalate-action switch without an escalate-policy",
    "missing-include": "an included file does not exist",
    "include-cycle": "files include each other in a cycle",
    "include-depth": "includes nested too deeply",
    "duplicate-definition": "a name defined twice",
    "undefined-name": "a reference to a name that is not defined",
    "definition-cycle": "definitions that refer to each other in a cycle",
    "empty-list": "a list that expands to nothing where a rule needs values",
    "unused-definition": "a list or variable nobody uses",
    "unused-taint": "a taint nobody waits for",
    "duplicate-default": "two defaults for the same area",
    "too-many-clauses": "a rule whose lists expand to too many clauses",
    "internal-error": "a bug in Capsule",
}


@dataclass(frozen=True, slots=True)
class Related:
    """Another place that explains a diagnostic, such as the rule it conflicts with."""

    location: Location
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a policy.

    Args:
        severity: "error", "warning" or "note".
        code: a short kebab-case id such as "bad-cidr"; it names the test and docs.
        message: one line, lower case, no final period.
        location: where the caret goes.
        related: further locations, each with its own message.
        length: how many characters to underline (at least 1).
    """

    severity: str
    code: str
    message: str
    location: Location
    related: tuple[Related, ...] = ()
    length: int = 1

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def sort_key(self) -> tuple:
        return (self.location.file, self.location.line, self.location.col, self.code)


class SourceCache:
    """The text of policy files, for snippets; files read later are read from disk."""

    def __init__(self, texts: Mapping[str, str] | None = None):
        self._texts: dict[str, str | None] = dict(texts or {})

    def add(self, file: str, text: str) -> None:
        self._texts[file] = text

    def line(self, file: str, number: int) -> str | None:
        if file not in self._texts:
            try:
                with open(file, "rb") as handle:
                    self._texts[file] = handle.read().decode("utf-8", "replace")
            except OSError:
                self._texts[file] = None  # no snippet for a file that is not there
        text = self._texts[file]
        if text is None:
            return None
        lines = text.split("\n")
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else None


# ---------------------------------------------------------------------------- text


def render_text(diags: Iterable[Diagnostic], sources: SourceCache) -> str:
    """The human form: one header line per finding, then source and caret."""
    out: list[str] = []
    for diag in diags:
        out.append(_header(diag.location, diag.severity, diag.message, diag.code))
        out.extend(_snippet(diag.location, diag.length, sources))
        for rel in diag.related:
            out.append(_header(rel.location, NOTE, rel.message, None))
            out.extend(_snippet(rel.location, 1, sources))
    return "\n".join(out) + ("\n" if out else "")


def _header(loc: Location, severity: str, message: str, code: str | None) -> str:
    suffix = f" [{code}]" if code else ""
    return f"{loc}: {severity}: {message}{suffix}"


def _snippet(loc: Location, length: int, sources: SourceCache) -> list[str]:
    line = sources.line(loc.file, loc.line)
    if line is None:
        return []
    # control characters would move the caret or garble a terminal: show them as '?'
    shown = "".join(c if c == "\t" or c.isprintable() else "?" for c in line)
    col = max(1, min(loc.col, len(shown) + 1))
    start = 0
    if len(shown) > _SNIPPET_WIDTH:
        start = max(0, min(col - 1 - _SNIPPET_WIDTH // 2, len(shown) - _SNIPPET_WIDTH))
    window = shown[start : start + _SNIPPET_WIDTH]
    lead = "..." if start else ""
    tail = "..." if start + _SNIPPET_WIDTH < len(shown) else ""
    pad = "".join("\t" if c == "\t" else " " for c in window[: col - 1 - start])
    width = max(1, min(length, len(window) - (col - 1 - start)))
    marks = "^" + "~" * (width - 1)
    return [f"    {lead}{window}{tail}", f"    {' ' * len(lead)}{pad}{marks}"]


def summary(diags: list[Diagnostic]) -> str:
    errors = sum(d.severity == ERROR for d in diags)
    warnings = sum(d.severity == WARNING for d in diags)
    return f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


# ---------------------------------------------------------------------------- json


def render_json(diags: Iterable[Diagnostic]) -> str:
    items = [
        {
            "file": d.location.file,
            "line": d.location.line,
            "col": d.location.col,
            "severity": d.severity,
            "code": d.code,
            "message": d.message,
            "related": [
                {
                    "file": r.location.file,
                    "line": r.location.line,
                    "col": r.location.col,
                    "message": r.message,
                }
                for r in d.related
            ],
        }
        for d in diags
    ]
    return json.dumps({"version": 1, "diagnostics": items}, indent=2) + "\n"


# --------------------------------------------------------------------------- sarif

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {ERROR: "error", WARNING: "warning", NOTE: "note"}


def render_sarif(diags: Iterable[Diagnostic], root: str | None = None) -> str:
    """SARIF 2.1.0 as GitHub code scanning takes it; paths relative to `root`."""
    diags = list(diags)
    codes = sorted({d.code for d in diags})
    rules = [_sarif_rule(code) for code in codes]
    results = [_sarif_result(d, codes.index(d.code), root) for d in diags]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "capsule",
                        "version": __version__,
                        "informationUri": "https://github.com/capsule/capsule",
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "originalUriBaseIds": {"%SRCROOT%": {"uri": _root_uri(root)}},
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _root_uri(root: str | None) -> str:
    path = os.path.abspath(root or os.getcwd())
    return "file://" + path.rstrip("/") + "/"


def _sarif_rule(code: str) -> dict:
    text = CODES.get(code, code.replace("-", " "))
    return {
        "id": code,
        "name": "".join(part.title() for part in code.split("-")),
        "shortDescription": {"text": text},
        "fullDescription": {"text": text},
        "help": {"text": f"See docs/language.md, diagnostic '{code}'."},
    }


def _sarif_location(loc: Location, root: str | None) -> dict:
    path = os.path.abspath(loc.file)
    base = os.path.abspath(root or os.getcwd())
    rel = os.path.relpath(path, base)
    artifact = {"uri": rel.replace(os.sep, "/"), "uriBaseId": "%SRCROOT%"}
    if rel.startswith(".."):
        artifact = {"uri": "file://" + path}
    region = {"startLine": max(1, loc.line), "startColumn": max(1, loc.col)}
    return {"physicalLocation": {"artifactLocation": artifact, "region": region}}


def _sarif_result(diag: Diagnostic, index: int, root: str | None) -> dict:
    result = {
        "ruleId": diag.code,
        "ruleIndex": index,
        "level": _LEVELS.get(diag.severity, "warning"),
        "message": {"text": diag.message},
        "locations": [_sarif_location(diag.location, root)],
    }
    if diag.related:
        result["relatedLocations"] = [
            {
                **_sarif_location(r.location, root),
                "id": i,
                "message": {"text": r.message},
            }
            for i, r in enumerate(diag.related)
        ]
    return result
