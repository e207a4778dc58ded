"""Policy -> IR: per area, decision tables the generated BPF programs look up.

The kernel cannot sort matching clauses, so the sorting happens here. Every clause
gets a rank: its position in the order of precedence keys (semantics.precedence),
1 for the weakest. A table entry holds the verdict of the strongest clause that
matches every path the entry stands for, and the kernel takes the highest rank of
its lookups (the exact path, every prefix of the path that ends in '/', the glob DFA,
any object of the op) or, if none matched, the area default. Network clauses are a
list sorted by rank instead (net.py).

The IR's own `decide` runs those same lookups in Python, and tests compare it with
semantics.decide on random events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from capsule.codegen import creds, dfa, net
from capsule.lang import semantics
from capsule.lang.model import DEFAULT_FALLBACK, Clause, Effect, PathGlob, Policy
from capsule.lang.names import AREAS, NAMESPACES

KEY_PATH_LEN = 252  # bytes of path in a hash key (op + path = 256 bytes)
NO_RULE = 0xFFFF

# (area, op) -> the LSM hook that decides it; see docs/codegen.md for why each one
HOOKS: dict[tuple[str, str], str] = {
    ("file", "read"): "file_open",
    ("file", "write"): "file_open",
    ("file", "exec"): "file_open",
    ("file", "delete"): "path_unlink",
    ("file", "rmdir"): "path_rmdir",
    ("file", "mkdir"): "path_mkdir",
    ("file", "create"): "path_mknod",
    ("file", "truncate"): "path_truncate",
    ("file", "chmod"): "path_chmod",
    ("file", "chown"): "path_chown",
    ("file", "rename"): "path_rename",
    ("file", "link"): "path_link",
    ("file", "symlink"): "path_symlink",
    ("process", "exec"): "bprm_check_security",
    ("network", "connect"): "socket_connect",
    ("network", "bind"): "socket_bind",
    ("network", "send"): "socket_sendmsg",
    ("network", "listen"): "socket_listen",
    ("network", "accept"): "socket_accept",
    ("creds", "setuid"): "task_fix_setuid",
    ("creds", "setgid"): "task_fix_setgid",
    ("creds", "capset"): "capset",
    ("signal", "send"): "task_kill",
    ("memory", "wx"): "mmap_file",
    ("namespace", "clone"): "task_alloc",
}
# ops decided at a second hook too: mprotect asking for W+X as well as mmap
ALSO_HOOKS: dict[tuple[str, str], str] = {("memory", "wx"): "file_mprotect"}
# the one path field each area matches (signal: the receiver's executable)
PATH_FIELD = {
    "file": "path",
    "process": "path",
    "signal": "target",
    "memory": "path",
    "namespace": "path",
}
KERNEL_FIELDS = {
    "file": {"path", "to"},
    "process": {"path"},
    "network": net.FIELDS,
    "signal": {"signal", "target"},
    "creds": creds.FIELDS,
    "memory": {"path"},
    "namespace": {"ns", "path"},
}
# namespace clone has one op id per namespace kind (the index in NS_KINDS): a clone
# asking for several new namespaces is decided per kind
NS_KINDS = tuple(NAMESPACES)
# signal send has one op id per signal number, 0 (kill(pid, 0)) to SIGRTMAX: a clause
# names at most one signal, so the number takes the op's place in every table key
SIGNAL_OPS = 65
# the peer of an accept is not known when socket_accept runs: only its protocol is
ACCEPT_FIELDS = {"protocol"}
# the file ops with a second name (`to`): it is looked up under an op id of its own,
# after the ids of names.AREAS["file"]
FILE_TO_OPS = {
    op: len(AREAS["file"]) + index
    for index, op in enumerate(("rename", "link", "symlink"))
}


# a clause the kernel decides, with the hooked ops it decides it for
KernelClause = tuple[Clause, tuple[str, ...]]


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
    dfa: dfa.Dfa | None = None  # the globs no hash key can stand for
    dfa_accept: dict[tuple[int, int], Verdict] = field(default_factory=dict)
    blocking_ops: set[int] = field(default_factory=set)  # fail closed when truncated
    too_large: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)

    def op_id(self, op: str | int) -> int:
        if self.area in ("signal", "namespace"):
            return int(op)  # the signal number, the index of the namespace kind
        return AREAS[self.area].index(op)

    @property
    def op_count(self) -> int:
        if self.area == "signal":
            return SIGNAL_OPS
        if self.area == "namespace":
            return len(NS_KINDS)
        return len(AREAS[self.area]) + (len(FILE_TO_OPS) if self.area == "file" else 0)

    def decide(self, op: str | int, path: str | None, to: str | None = None) -> Verdict:
        """The kernel's lookups, in Python. `path` None means it did not fit; for
        signal, `op` is the signal number and "" stands for a receiver without an
        executable (no path clause matches it). `to` is the new name of a rename,
        link or symlink: the higher rank of the two names' lookups decides."""
        op_id = self.op_id(op)
        if op in FILE_TO_OPS and self.area == "file":
            if path is None or to is None:
                both = [self._truncated(op_id), self._truncated(FILE_TO_OPS[op])]
                return min(both, key=lambda v: v.enforced is not Effect.DENY)
            return max(self._lookup(op_id, path), self._lookup(FILE_TO_OPS[op], to))
        if path is None:
            return self._truncated(op_id)
        return self._lookup(op_id, path)

    def _lookup(self, op_id: int, path: str) -> Verdict:
        found = [self.exact.get((op_id, path)), self.any_op.get(op_id)]
        found += self._prefixes(op_id, path)
        if self.dfa is not None:
            found.append(
                self.dfa_accept.get((self.dfa.final_state(path.encode()), op_id))
            )
        return max((v for v in found if v is not None), default=self.default)

    def _prefixes(self, op_id: int, path: str) -> list[Verdict | None]:
        """Probe each prefix that ends in '/' within the first KEY_PATH_LEN - 1
        bytes, as the kernel's loop does."""
        scanned = path.encode()[: KEY_PATH_LEN - 1]
        ends = [i + 1 for i, byte in enumerate(scanned) if byte == ord("/")]
        return [self.prefix.get((op_id, scanned[:end].decode())) for end in ends]

    def _truncated(self, op_id: int) -> Verdict:
        if blocking_bit(op_id) in {blocking_bit(op) for op in self.blocking_ops}:
            return Verdict(0, Effect.DENY, Effect.DENY)
        return self.default


def blocking_bit(op_id: int) -> int:
    """The bit of an op in the kernel's 64-bit fail-closed mask; signals 63 and 64
    share the last one (fails closed for both if either blocks)."""
    return min(op_id, 63)


@dataclass
class Ir:
    """The whole policy as tables, plus what the tables could not express."""

    policy_hash: str
    sources: tuple[str, ...]
    rules: list[str]  # rule refs (file:line), indexed by Verdict.rule
    areas: dict[str, AreaTable | net.NetTable | creds.CredTable]
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
    """(exact paths, prefixes) that cover exactly `glob`, or None: the DFA's job."""
    keys = _hash_keys(glob)
    if keys and all(len(key.encode()) < KEY_PATH_LEN for key in keys[0] + keys[1]):
        return keys
    return None


def _hash_keys(glob: PathGlob) -> tuple[list[str], list[str]] | None:
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
    """Why the kernel tables cannot hold this clause (for the ops that have hooks)."""
    rule = clause.rule
    if not rule.subject.is_any or rule.after is not None:
        return "subject and `after` conditions are decided in user space only"
    extra = set(clause.object) - KERNEL_FIELDS.get(rule.area, set())
    if extra:
        return f"field {', '.join(sorted(extra))} is not matched in the kernel yet"
    return None


def _ops_left_out(clause: Clause) -> tuple[tuple[str, ...], str] | None:
    """Hooked ops of a kernel-decidable clause that its fields still keep out."""
    rule = clause.rule
    accept = rule.area == "network" and "accept" in rule.ops
    if accept and set(clause.object) - ACCEPT_FIELDS:
        return ("accept",), "the peer of an accept is not known at socket_accept"
    if rule.area == "file" and {"path", "to"} <= set(clause.object):
        both = tuple(op for op in sorted(rule.ops) if op in FILE_TO_OPS)
        if both:
            return both, "a clause on both names is a conjunction of two lookups"
    return None


def _unhooked(rule) -> tuple[str, ...]:
    return tuple(op for op in sorted(rule.ops) if (rule.area, op) not in HOOKS)


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


def _verdicts(clauses: list[KernelClause], rules: dict) -> list[tuple]:
    ranks = _ranks(clause for clause, _ in clauses)
    found = []
    for clause, ops in clauses:
        rule, rank = clause.rule, ranks[semantics.precedence(clause)]
        enforced = _enforced(rule.effect, rule.fallback)
        verdict = Verdict(rank, rule.effect, enforced, rules[rule.ref])
        found.append((clause, ops, verdict))
    return found


def _build_network(
    policy: Policy, clauses: list[KernelClause], rules: dict
) -> net.NetTable:
    entries = []
    for clause, ops, verdict in _verdicts(clauses, rules):
        op_ids = [AREAS["network"].index(op) for op in ops]
        entries.append(net.entry(clause.object, op_ids, verdict))
    table = net.build(_default(policy, "network"), entries)
    if table.default.enforced.blocks:
        table.blocking_ops.update(range(len(AREAS["network"])))
    return table


def _op_ids(table: AreaTable, clause: Clause, ops: tuple[str, ...]) -> list[int]:
    """The table op ids a clause fills: for signal, its signal's number (or all);
    for namespace, the index of its namespace kind (or all)."""
    if table.area == "namespace":
        kind = clause.object.get("ns")
        return [NS_KINDS.index(kind.value)] if kind else list(range(len(NS_KINDS)))
    if table.area != "signal":
        return [table.op_id(op) for op in ops]
    signal = clause.object.get("signal")
    return [signal.number] if signal is not None else list(range(SIGNAL_OPS))


def _sides(
    table: AreaTable, clause: Clause, ops: tuple[str, ...]
) -> list[tuple[PathGlob | None, list[int]]]:
    """(the path pattern, the op ids it is looked up under) of a clause: a `to`
    clause fills the second-name ids of rename, link and symlink; the other ops carry
    no `to`, so it never matches them."""
    if table.area == "file" and "to" in clause.object:
        to_ids = [FILE_TO_OPS[op] for op in ops if op in FILE_TO_OPS]
        return [(clause.object["to"], to_ids)] if to_ids else []
    if table.area == "namespace" and "path" in clause.object:
        return []  # a clone carries no cgroup path: the clause never matches it
    return [(clause.object.get(PATH_FIELD[table.area]), _op_ids(table, clause, ops))]


def _build_creds(
    policy: Policy, clauses: list[KernelClause], rules: dict
) -> creds.CredTable:
    entries = []
    for clause, ops, verdict in _verdicts(clauses, rules):
        if len(clause.object) > 1:
            continue  # each op carries one field: a clause naming two never matches
        op_ids = [AREAS["creds"].index(op) for op in ops]
        entries.append(creds.entry(clause.object, op_ids, verdict))
    return creds.build(_default(policy, "creds"), entries)


def _build_area(
    policy: Policy, area: str, clauses: list[KernelClause], rules: dict
) -> AreaTable:
    if area == "network":
        return _build_network(policy, clauses, rules)
    if area == "creds":
        return _build_creds(policy, clauses, rules)
    table = AreaTable(area, _default(policy, area))
    rules_by_index = {index: ref for ref, index in rules.items()}
    globs: list[tuple[PathGlob, Verdict, list[int]]] = []
    for clause, ops, verdict in _verdicts(clauses, rules):
        for glob, op_ids in _sides(table, clause, ops):
            if verdict.enforced.blocks:
                table.blocking_ops.update(op_ids)
            keys = None if glob is None else _path_keys(glob)
            if glob is not None and keys is None:
                globs.append((glob, verdict, op_ids))
            for op_id in op_ids:
                if glob is None:
                    _add(table.any_op, op_id, verdict)
                elif keys is not None:
                    for path in keys[0]:
                        _add(table.exact, (op_id, path), verdict)
                    for prefix in keys[1]:
                        _add(table.prefix, (op_id, prefix), verdict)
    if globs:
        try:
            _build_dfa(table, globs)
        except dfa.TooLarge as err:
            table.too_large = [(rules_by_index[v.rule], str(err)) for _, v, _ in globs]
    if table.default.enforced.blocks:
        table.blocking_ops.update(range(table.op_count))
    return table


def _build_dfa(
    table: AreaTable, globs: list[tuple[PathGlob, Verdict, list[int]]]
) -> None:
    """One DFA for every glob of the area; accepting states carry per-op verdicts.

    Raises:
        dfa.TooLarge: the caller reports the globs as unsupported.
    """
    automaton = dfa.build([(glob, tag) for tag, (glob, _, _) in enumerate(globs)])
    table.dfa = automaton
    for state, tags in enumerate(automaton.accepts):
        for tag in tags:
            _, verdict, op_ids = globs[tag]
            for op_id in op_ids:
                _add(table.dfa_accept, (state, op_id), verdict)


def lower(policy: Policy) -> Ir:
    """Lower a checked policy to decision tables; unsupported clauses are listed."""
    rule_refs = list(dict.fromkeys(rule.ref for rule in policy.rules))
    rules = {ref: index for index, ref in enumerate(rule_refs)}
    unsupported, by_area = [], {}
    for clause in policy.clauses():
        rule = clause.rule
        unhooked = _unhooked(rule)
        if unhooked:
            reason = (
                f"no kernel hook generated yet for {rule.area} {', '.join(unhooked)}"
            )
            unsupported.append(
                Unsupported(rule.ref, rule.area, unhooked, reason, rule.effect)
            )
        if len(unhooked) == len(rule.ops):
            continue
        hooked = tuple(op for op in sorted(rule.ops) if op not in unhooked)
        reason = _why_unsupported(clause)
        if reason:
            unsupported.append(
                Unsupported(rule.ref, rule.area, hooked, reason, rule.effect)
            )
            continue
        left_out = _ops_left_out(clause)
        if left_out:
            ops, reason = left_out
            unsupported.append(
                Unsupported(rule.ref, rule.area, ops, reason, rule.effect)
            )
            hooked = tuple(op for op in hooked if op not in ops)
        if hooked:
            by_area.setdefault(rule.area, []).append((clause, hooked))
    areas = {}
    for area in _areas_needed(policy, by_area):
        areas[area] = _build_area(policy, area, by_area.get(area, []), rules)
    unsupported += _unhooked_defaults(policy, areas)
    for area, table in areas.items():
        unsupported += [
            Unsupported(ref, area, (), why, Effect.DENY)
            for ref, why in getattr(table, "too_large", ())
        ]
    return Ir(
        policy_hash(policy),
        tuple(policy.files),
        rule_refs,
        areas,
        _hooks(areas),
        unsupported,
    )


def _unhooked_defaults(policy: Policy, areas: dict) -> list[Unsupported]:
    """A non-allow default binds ops the kernel has no hook for yet: say so."""
    found = []
    for area, ops in AREAS.items():
        effect = policy.default(area)
        missing = tuple(op for op in ops if (area, op) not in HOOKS)
        if effect is not Effect.ALLOW and missing:
            reason = f"default {effect}: no kernel hook generated yet for these ops"
            found.append(Unsupported(f"default {area}", area, missing, reason, effect))
    return found


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
            for name in (hook, ALSO_HOOKS.get((area, op))):
                if name:
                    hooks.setdefault(name, []).append((area, op))
    return {hook: tuple(pairs) for hook, pairs in hooks.items()}


def _op_used(table: AreaTable | net.NetTable | creds.CredTable, op: str) -> bool:
    if table.default.effect is not Effect.ALLOW:
        return True
    if table.area in ("signal", "namespace"):  # one op, ids are signals or kinds
        return bool(table.any_op or table.exact or table.prefix or table.dfa_accept)
    op_id = table.op_id(op)
    if isinstance(table, (net.NetTable, creds.CredTable)):
        return any(entry.ops & (1 << op_id) for entry in table.entries)
    op_ids = {op_id}
    if table.area == "file" and op in FILE_TO_OPS:
        op_ids.add(FILE_TO_OPS[op])
    if op_ids & set(table.any_op):
        return True
    keys = list(table.exact) + list(table.prefix)
    if any(entry_op in op_ids for entry_op, _ in keys):
        return True
    return any(entry_op in op_ids for _, entry_op in table.dfa_accept)
