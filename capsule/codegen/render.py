"""IR -> C: render the jinja2 templates of bpf/templates/ and format the result."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

from capsule import __version__
from capsule.codegen.ir import KEY_PATH_LEN, AreaTable, Ir
from capsule.lang.model import Effect
from capsule.lang.names import AREAS

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "bpf" / "templates"
MAIN_TEMPLATE = "policy.bpf.c.j2"
# the kernel style the project formats C in (docs/STYLE: tabs, limit 100)
CLANG_FORMAT_STYLE = (
    "{BasedOnStyle: LLVM, UseTab: Always, IndentWidth: 8, TabWidth: 8, "
    "ColumnLimit: 100, BreakBeforeBraces: Linux, AllowShortIfStatementsOnASingleLine: "
    "false, IndentCaseLabels: false, SortIncludes: false, ReflowComments: false}"
)


@dataclass(frozen=True)
class HookView:
    name: str
    decides: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TableView:
    area: str
    default: object
    exact: dict
    prefix: dict
    any_op: dict
    dfa: object
    dfa_accept: dict
    op_count: int
    blocking_mask: str


def _table_view(table: AreaTable) -> TableView:
    mask = sum(1 << op for op in table.blocking_ops)
    return TableView(
        table.area,
        table.default,
        table.exact,
        table.prefix,
        table.any_op,
        table.dfa,
        table.dfa_accept,
        len(AREAS[table.area]),
        hex(mask),
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the build
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(ir: Ir) -> str:
    """The C source of the policy's BPF programs, clang-formatted when possible."""
    op_ids = {(area, op): AREAS[area].index(op) for area in AREAS for op in AREAS[area]}
    source = (
        _environment()
        .get_template(MAIN_TEMPLATE)
        .render(
            version=__version__,
            sources=", ".join(ir.sources) or "<no file>",
            policy_hash=ir.policy_hash,
            key_path_len=KEY_PATH_LEN,
            effects=list(Effect),
            tables=[
                _table_view(t) for t in ir.areas.values() if isinstance(t, AreaTable)
            ],
            network=ir.areas.get("network"),
            walk=any(hook.startswith("path_") for hook in ir.hooks),
            hooks=[HookView(name, decides) for name, decides in ir.hooks.items()],
            op_ids=op_ids,
        )
    )
    return clang_format(source)


def clang_format(source: str) -> str:
    """Format with clang-format; the first (generator) line is kept as it is."""
    if not shutil.which("clang-format"):
        log.warning("clang-format not found: generated C is left unformatted")
        return source
    first, _, rest = source.partition("\n")
    done = subprocess.run(
        ["clang-format", f"--style={CLANG_FORMAT_STYLE}", "--assume-filename=policy.c"],
        input=rest,
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{first}\n{done.stdout}"
