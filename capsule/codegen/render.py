"""IR -> C: render the jinja2 templates of bpf/templates/ and format the result."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

from capsule import __version__
from capsule.codegen.ir import (
    FILE_TO_OPS,
    KEY_PATH_LEN,
    NS_KINDS,
    SIGNAL_OPS,
    AreaTable,
    Ir,
    blocking_bit,
)
from capsule.lang.model import Effect
from capsule.lang.names import AREAS, NAMESPACES

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "bpf" / "templates"
MAIN_TEMPLATE = "policy.bpf.c.j2"
# the kernel style the project formats C in (docs/STYLE: tabs, limit 100)
CLANG_FORMAT_STYLE = (
    "{BasedOnStyle: LLVM, UseTab: Always, IndentWidth: 8, TabWidth: 8, "
    "ColumnLimit: 100, BreakBeforeBraces: Linux, AllowShortIfStatementsOnASingleLine: "
    "false, IndentCaseLabels: false, SortIncludes: false, ReflowComments: false}"
)

# hooks that read a path with bpf_d_path, and hooks that read the caller's sockaddr
D_PATH_HOOKS = {"file_open", "bprm_check_security"}
SOCKADDR_HOOKS = {"socket_connect", "socket_bind", "socket_sendmsg"}
WX_HOOKS = {"mmap_file", "file_mprotect"}  # they walk the mapped file's path


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
    mask = 0
    for op in table.blocking_ops:
        mask |= 1 << blocking_bit(op)
    return TableView(
        table.area,
        table.default,
        table.exact,
        table.prefix,
        table.any_op,
        table.dfa,
        table.dfa_accept,
        table.op_count,
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
            creds=ir.areas.get("creds"),
            walk=_walks(ir),
            hooks=[HookView(name, decides) for name, decides in ir.hooks.items()],
            op_ids=op_ids,
            signal_paths=_signal_has_paths(ir),
            signal_ops=SIGNAL_OPS,
            to_op_ids=FILE_TO_OPS,
            d_path=bool(D_PATH_HOOKS & set(ir.hooks)),
            sockaddr=bool(SOCKADDR_HOOKS & set(ir.hooks)),
            weigh="creds" in ir.areas or "task_alloc" in ir.hooks,
            ns_kinds=[hex(NAMESPACES[kind]) for kind in NS_KINDS],
            ns_mask=hex(sum(NAMESPACES[kind] for kind in NS_KINDS)),
        )
    )
    return clang_format(source)


def _walks(ir: Ir) -> bool:
    """Whether a non-sleepable hook needs the dentry walk (no bpf_d_path there)."""
    if any(hook.startswith("path_") or hook in WX_HOOKS for hook in ir.hooks):
        return True
    return "task_kill" in ir.hooks and _signal_has_paths(ir)


def _signal_has_paths(ir: Ir) -> bool:
    table = ir.areas.get("signal")
    return bool(table and (table.exact or table.prefix or table.dfa))


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
