"""Policy -> IR: per area, decision tables the generated BPF programs look up.

The kernel cannot sort matching clauses, so the sorting happens here. Every clause
gets a rank: its position in the order of precedence keys (semantics.precedence),
1 for the weakest. A table entry holds the verdict of the strongest clause that
matches every path the entry stands for, and the kernel takes the highest rank of
its lookups (exact path, longest prefix, any object of the op) or the area default.

A prefix entry P also carries the best clause of every shorter prefix Q of P: any
path under P is under Q too, so the longest-prefix lookup alone finds the best
prefix clause. The IR's own `decide` runs those same lookups in Python, and tests
compare it with semantics.decide on random events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from capsule.lang import semantics
from capsule.lang.model import DEFAULT_FALLBACK, Clause, Effect, PathGlob, Policy
from capsule.lang.names import AREAS

KEY_PATH_LEN = 252  # bytes of path in a map key: hash keys and LPM data stay <= 256
NO_RULE = 0xFFFF

# (area, op) -> the LSM hook that decides it; see docs/codegen.md for why each one
HOOKS: dict[tuple[str, str], str] = {
    ("file", "read"): "file_open",
    ("file", "write"): "file_open",
    ("file", "exec"): "file_open",
    ("process", "exec"): "bprm_check_security",
}
PATH_FIELD = {"file": "path", "process": "path"}  # the one field each area matches


@dataclass(frozen=True, order=True)
class Verdict:
    """What a table entry decides: the winning clause's rank, effects and rule."""

    rank: int  # 0: no clause, the area default
    effect: Effect = field(compare=False)
    enforced: Effect = field(compare=False)
    rule: int = field(default=NO_RULE, compare=False)  # index into Ir.rules


@dataclass
class Unsupported:
    """A clause the kernel tables leave out, and why (reported, never silent)."""

    ref: str
    area: str
    ops: tuple[str, ...]
    reason: str
    effect: Effect


@dataclass
class AreaTable:
    """The decision tables of one area; op ids index names.AREAS[area]."""

    area: str
    default: Verdict
    exact: dict[tuple[int, str], Verdict] = field(default_factory=dict)
    prefix: dict[tuple[int, str], Verdict] = field(default_factory=dict)
    any_op: dict[int, Verdict] = field(default_factory=dict)
    blocking_ops: set[int] = field(default_factory=set)  # fail closed when truncated

    def op_id(self, op: str) -> int:
        return AREAS[self.area].index(op)

    def decide(self, op: str, path: str | None) -> Verdict:
        """The kernel's lookups, in Python. `path` None means it did not fit."""
        op_id = self.op_id(op)
        if path is None:
            return self._truncated(op_id)
        found = [self.exact.get((op_id, path)), self.any_op.get(op_id)]
        found.append(self._longest_prefix(op_id, path))
        return max((v for v in found if v is not None), default=self.default)

    def _longest_prefix(self, op_id: int, path: str) -> Verdict | None:
        key = path[:KEY_PATH_LEN]
        best = None
        for (entry_op, prefix), verdict in self.prefix.items():
            if entry_op == op_id and key.startswith(prefix):
                if best is None or len(prefix) > len(best[0]):
                    best = (prefix, verdict)
        return best[1] if best else None

    def _truncated(self, op_id: int) -> Verdict:
        if op_id in self.blocking_ops:
            return Verdict(0, Effect.DENY, Effect.DENY)
        return self.default


@dataclass
class Ir:
    """The whole policy as tables, plus what the tables could not express."""

    policy_hash: str
    sources: tuple[str, ...]
    rules: list[str]  # rule refs (file:line), indexed by Verdict.rule
    areas: dict[str, AreaTable]
    hooks: dict[str, tuple[tuple[str, str], ...]]  # hook -> (area, op) it decides
    unsupported: list[Unsupported]


def policy_hash(policy: Policy) -> str:
    """sha256 over the policy's source files, in order (the manifest's identity)."""
    digest = hashlib.sha256()
    for path in policy.files:
        with open(path, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()


def _enforced(effect: Effect, fallback: Effect | None) -> Effect:
    if effect is Effect.ESCALATE:
        return fallback or DEFAULT_FALLBACK
    return effect


def _path_keys(glob: PathGlob) -> tuple[list[str], list[str]] | None:
    """(exact paths, prefixes) that cover exactly `glob`, or None if none do."""
    if glob.text == "/":
        return [], ["/"]  # "/" covers every path (see patterns._regex)
    if glob.is_literal:
        return [glob.literal_prefix], []
    text, literal = glob.text, glob.literal_prefix
    if glob.tree and not glob.home and literal == text[:-1]:
        return ([literal], [literal + "/"]) if literal else ([], ["/"])
    if text.endswith("/**") and literal == text[:-2] and text != "/**":
        return [], [literal]  # strictly below: the prefix keeps its slash
    return None


def _why_unsupported(clause: Clause) -> str | None:
    rule = clause.rule
    missing = [op for op in sorted(rule.ops) if (rule.area, op) not in HOOKS]
    if missing:
        return f"no kernel hook generated yet for {rule.area} {', '.join(missing)}"
    if not rule.subject.is_any or rule.after is not None:
        return "subject and `after` conditions are decided in user space only"
    extra = set(clause.object) - {PATH_FIELD[rule.area]}
    if extra:
        return f"field {', '.join(sorted(extra))} is not matched in the kernel yet"
    glob = clause.object.get(PATH_FIELD[rule.area])
    if glob is None:
        return None
    keys = _path_keys(glob)
    if keys is None:
        return f"glob {glob} needs a matcher the kernel tables do not have yet"
    if any(len(key) >= KEY_PATH_LEN for key in keys[0] + keys[1]):
        return f"path {glob} is longer than {KEY_PATH_LEN - 1} bytes"
    return None


def _ranks(clauses: Iterable[Clause]) -> dict[tuple, int]:
    keys = sorted({semantics.precedence(clause) for clause in clauses})
    return {key: rank for rank, key in enumerate(keys, start=1)}


def _default(policy: Policy, area: str) -> Verdict:
    effect = policy.default(area)
    fallback = policy.default_fallbacks.get(area)
    return Verdict(0, effect, _enforced(effect, fallback))


def _add(table: dict, key: object, verdict: Verdict) -> None:
    if key not in table or verdict > table[key]:
        table[key] = verdict


def _build_area(policy: Policy, area: str, clauses: list[Clause], rules: dict) -> AreaTable:
    table = AreaTable(area, _default(policy, area))
    ranks = _ranks(clauses)
    for clause in clauses:
        rule = clause.rule
        rank = ranks[semantics.precedence(clause)]
        verdict = Verdict(rank, rule.effect, _enforced(rule.effect, rule.fallback),
                          rules[rule.ref])  # fmt: skip
        glob = clause.object.get(PATH_FIELD[area])
        for op in rule.ops:
            op_id = table.op_id(op)
            if verdict.enforced.blocks:
                table.blocking_ops.add(op_id)
            if glob is None:
                _add(table.any_op, op_id, verdict)
                continue
            exact, prefixes = _path_keys(glob)
            for path in exact:
                _add(table.exact, (op_id, path), verdict)
            for prefix in prefixes:
                _add(table.prefix, (op_id, prefix), verdict)
    _inherit_prefixes(table)
    if table.default.enforced.blocks:
        table.blocking_ops.update(range(len(AREAS[area])))
    return table


def _inherit_prefixes(table: AreaTable) -> None:
    own = dict(table.prefix)
    for (op_id, prefix), verdict in own.items():
        inherited = [v for (o, p), v in own.items() if o == op_id and prefix.startswith(p)]
        table.prefix[(op_id, prefix)] = max([verdict, *inherited])


def lower(policy: Policy) -> Ir:
    """Lower a checked policy to decision tables; unsupported clauses are listed."""
    rule_refs = list(dict.fromkeys(rule.ref for rule in policy.rules))
    rules = {ref: index for index, ref in enumerate(rule_refs)}
    unsupported, by_area = [], {}
    for clause in policy.clauses():
        reason = _why_unsupported(clause)
        rule = clause.rule
        if reason:
            unsupported.append(
                Unsupported(rule.ref, rule.area, tuple(sorted(rule.ops)), reason, rule.effect)
            )
            continue
        by_area.setdefault(rule.area, []).append(clause)
    areas = {area: _build_area(policy, area, by_area.get(area, []), rules)
             for area in _areas_needed(policy, by_area)}  # fmt: skip
    return Ir(policy_hash(policy), tuple(policy.files), rule_refs, areas,
              _hooks(areas), unsupported)  # fmt: skip


def _areas_needed(policy: Policy, by_area: dict) -> list[str]:
    """Areas with a kernel-decided clause or a default other than allow."""
    hooked = {area for area, _ in HOOKS}
    wanted = set(by_area) | {a for a in hooked if policy.default(a) is not Effect.ALLOW}
    return [area for area in AREAS if area in wanted]


def _hooks(areas: dict[str, AreaTable]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Only the hooks whose (area, op) has an entry or a non-allow default."""
    hooks: dict[str, list[tuple[str, str]]] = {}
    for (area, op), hook in HOOKS.items():
        table = areas.get(area)
        if table and _op_used(table, op):
            hooks.setdefault(hook, []).append((area, op))
    return {hook: tuple(pairs) for hook, pairs in hooks.items()}


def _op_used(table: AreaTable, op: str) -> bool:
    op_id = table.op_id(op)
    if table.default.effect is not Effect.ALLOW or op_id in table.any_op:
        return True
    keys = list(table.exact) + list(table.prefix)
    return any(entry_op == op_id for entry_op, _ in keys)
