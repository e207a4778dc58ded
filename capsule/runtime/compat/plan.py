"""The compat backend's plan: the policy split over Landlock, seccomp and cgroup hooks.

`build_plan` decides, for each clause of the policy, which mechanism enforces it, and
what the sandboxed child and the runtime must load. Nothing here touches the kernel
except to read the file tree for Landlock's grants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from capsule.lang.model import Effect, Location, ObjectPattern, PathGlob, Policy, Rule
from capsule.runtime.compat import coverage, devices, files, landlock, network
from capsule.runtime.compat import syscalls
from capsule.runtime.compat.coverage import AUDIT_ONLY, ENFORCED, NOT_NEEDED, OBSERVED
from capsule.runtime.compat.coverage import PARTIAL, Line, Report
from capsule.runtime.compat.landlock import FS, Scope
from capsule.runtime.compat.seccomp import FilterPlan

SELF_PROTECTION = "self-protection"
_TOP = 1 << 30  # above any priority a policy would write
_LANDLOCK_OPS = set(files.OP_RIGHTS)
_CGROUP_OPS = {("network", op) for op in network.OPS}

# capabilities for administering the host, not for doing work in it: dropped from the
# sandbox's bounding set (include/uapi/linux/capability.h numbers)
DROPPED_CAPS = {
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_TIME": 25,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


@dataclass
class Options:
    protected: list[str] = field(default_factory=list)  # read-only for the agent
    self_protect: bool = True
    cgroup: bool = True  # the cgroup sock_addr hooks can be attached
    tracer: bool = False  # audit rules are observed by the tracer
    landlock_reports: bool = True  # Landlock's denials are seen (raw_tp sys_exit)
    user: dict | None = None  # --user: name, uid, gid, home
    abi: int | None = None  # Landlock ABI; None: ask the kernel


@dataclass
class CompatPlan:
    policy: Policy  # the user's rules plus self-protection
    landlock: dict | None  # the child's ruleset, as JSON
    filter: FilterPlan
    owner: dict[str, tuple[str, str]]  # syscall -> (area, op)
    network: network.Table | None
    report: Report
    protected: list[str]
    visible: Policy | None = None  # the clauses Landlock enforces, for attribution
    handled: FS = FS(0)  # the Landlock rights restricted
    devices: devices.DeviceTable | None = None

    user: dict | None = None
    drop_caps: list[int] = field(default_factory=list)  # out of the bounding set

    def child_plan(self) -> dict:
        return {
            "user": self.user,
            "drop_caps": self.drop_caps,
            "landlock": self.landlock,
            "seccomp": self.filter.to_json(),
            "protected": self.protected,
        }


def _rule(line: int, area: str, ops: set[str], objects=()) -> Rule:
    return Rule(
        Location(SELF_PROTECTION, line, 1),
        Effect.DENY,
        None,
        area,
        frozenset(ops),
        tuple(objects),
        priority=_TOP,
        text="capsule self-protection",
    )


def protection_rules(protected: list[str]) -> list[Rule]:
    """Deny bpf(), and mounts over or under the paths the agent must not change."""
    rules = [_rule(1, "memory", {"bpf"})]
    if protected:
        objects = [
            ObjectPattern({"path": PathGlob.parse(p.rstrip("/") + "/")})
            for p in protected
        ]
        rules.append(_rule(2, "system", {"mount", "umount"}, objects))
    return rules


def build_plan(policy: Policy, options: Options) -> CompatPlan:
    abi = landlock.abi_version() if options.abi is None else options.abi
    protected = []
    if options.self_protect:
        protected = [os.path.abspath(p) for p in options.protected]
        protected += ["/sys/fs/cgroup", "/sys/fs/bpf"]
    extra = protection_rules(protected) if options.self_protect else []
    full = replace(policy, rules=policy.rules + tuple(extra))

    visible = files.landlock_policy(full)
    handled = files.handled_rights(visible, landlock.fs_rights(abi)) if abi else FS(0)
    translation = files.translate(visible, handled)
    scoped = landlock.scopes(abi) & Scope.SIGNAL if options.self_protect else Scope(0)
    if any(_abstract_unix_scope(c) for c in full.clauses("ipc")):
        scoped |= landlock.scopes(abi) & Scope.ABSTRACT_UNIX_SOCKET
    ruleset = None
    if handled or scoped:
        ruleset = {
            "handled_fs": int(handled),
            "handled_net": 0,
            "scoped": int(scoped),
            "paths": sorted((p, int(r)) for p, r in translation.grants.items()),
            "ports": [],
            "flags": 0,
        }
    flt, owner = syscalls.filter_plan(full, host_admin=options.self_protect)
    table = network.build_table(full) if options.cgroup else None
    if table is not None and not table.entries and table.default == "allow":
        table = None  # no network rule: nothing to attach

    lines = [
        _cover(c, full, abi, handled, translation, options) for c in policy.clauses()
    ]
    detail = _detail(abi, options)
    protection = (
        _protection_text(protected, abi, options) if options.self_protect else []
    )
    report = Report("compat", detail, lines, protection)
    device_table = devices.build_table(full) if options.cgroup else None
    if device_table is not None and device_table.empty():
        device_table = None  # no device rule: nothing to attach
    return CompatPlan(
        full,
        ruleset,
        flt,
        owner,
        table,
        report,
        protected,
        visible,
        handled,
        device_table,
        options.user,
        sorted(DROPPED_CAPS.values()) if options.self_protect else [],
    )


def _abstract_unix_scope(clause) -> bool:
    """A rule that denies every unix-socket connection can be Landlock's scope."""
    rule = clause.rule
    return (
        "unix-connect" in rule.ops
        and files.enforced(rule).blocks
        and not len(clause.object)
        and rule.subject.is_any
        and rule.after is None
    )


def _detail(abi: int, options: Options) -> str:
    parts = [f"Landlock ABI {abi}" if abi else "no Landlock", "seccomp"]
    parts.append("cgroup sock_addr" if options.cgroup else "no cgroup hooks")
    return ", ".join(parts)


def _protection_text(protected: list[str], abi: int, options: Options) -> list[str]:
    out = [
        f"read-only for the agent (its own mount namespace): {', '.join(protected)}",
        "bpf() fails with EPERM (seccomp)",
        "mount and umount on those paths fail with EPERM (seccomp notification)",
    ]
    if abi >= 6:
        out.append(
            "no signals to processes outside the sandbox, the runtime included "
            "(Landlock scope)"
        )
    out.append("no ptrace of processes outside the sandbox (Landlock domain)")
    out.append(
        "capabilities dropped from the bounding set, root included: "
        + ", ".join(DROPPED_CAPS)
    )
    out.append(
        f"fail with EPERM (seccomp, rule {syscalls.HOST_ADMIN_RULE}): "
        + ", ".join(syscalls.HOST_ADMIN)
    )
    return out


# -- one coverage line per clause ------------------------------------------------------


def _cover(clause, policy: Policy, abi: int, handled: FS, translation, options) -> Line:
    rule = clause.rule
    effect = files.enforced(rule)
    blocking = effect.blocks
    text = coverage.describe(clause)

    def line(status: str, mechanism: str, note: str = "") -> Line:
        return Line(rule.ref, text, blocking, status, mechanism, note)

    if not blocking:
        if rule.effect in (Effect.AUDIT, Effect.ESCALATE):
            return _cover_audit(clause, options, line)
        return _cover_allow(clause, handled, translation, line)
    keys = {(rule.area, op) for op in rule.ops}
    parts = [
        _cover_part(clause, key, abi, handled, translation, options) for key in keys
    ]
    enforced = [p for p in parts if p[0] in (ENFORCED, PARTIAL)]
    missing = sorted(
        f"{op}: {why}"
        for (status, _, why), (_, op) in zip(parts, keys)
        if status == AUDIT_ONLY
    )
    mechanisms = ", ".join(sorted({p[1] for p in enforced}))
    notes = sorted({p[2] for p in enforced if p[2]})
    if rule.effect is Effect.KILL:
        seen = options.landlock_reports or any(p[1] != "landlock" for p in enforced)
        notes.append(
            "kill: the runtime sends SIGKILL after the denial"
            if seen
            else "denied but not killed: Landlock's denials are not observed"
        )
    if not enforced:
        return line(AUDIT_ONLY, "", "; ".join(missing))
    unenforced = tuple(
        sorted(
            op for (status, _, _), (_, op) in zip(parts, keys) if status == AUDIT_ONLY
        )
    )
    if any(p[1] == "landlock" for p in enforced) and not options.landlock_reports:
        notes.append("denials are not reported (no raw_tp)")
    if missing or any(p[0] == PARTIAL for p in enforced):
        note = "; ".join(notes + [f"not {m}" for m in missing])
        return Line(rule.ref, text, blocking, PARTIAL, mechanisms, note, unenforced)
    return line(ENFORCED, mechanisms, "; ".join(notes))


def _cover_audit(clause, options, line) -> Line:
    """Audit rules need an observer: the supervisor, the cgroup hooks or the tracer."""
    rule = clause.rule
    seen, unseen = set(), []
    for op in sorted(rule.ops):
        key = (rule.area, op)
        if key in syscalls.SYSCALLS and key not in _LANDLOCK_OPS and rule.after is None:
            seen.add("seccomp notification")
        elif key in _CGROUP_OPS and options.cgroup and not network.cgroup_limit(clause):
            seen.add(f"cgroup sock_addr {op}")
        elif options.tracer:
            seen.add("tracer")
        else:
            unseen.append(op)
    if not seen:
        return line(
            AUDIT_ONLY, "", "not recorded: nothing observes " + ", ".join(unseen)
        )
    note = f"not recorded: {', '.join(unseen)}" if unseen else ""
    return line(OBSERVED if not unseen else PARTIAL, ", ".join(sorted(seen)), note)


def _cover_allow(clause, handled: FS, translation, line) -> Line:
    rule = clause.rule
    rights = FS(0)
    for op in rule.ops:
        for entry in files.OP_RIGHTS.get((rule.area, op), []):
            rights |= entry[0]
    if not rights & handled:
        return line(NOT_NEEDED, "")
    limit = files.landlock_limit(clause)
    if limit:
        return line(PARTIAL, "landlock", f"denied for every process: {limit}")
    return line(ENFORCED, "landlock grant")


METADATA_NOTE = (
    "the path is read from the caller's memory and resolved by the supervisor, "
    "and another thread or a symlink swap could change it after the check"
)


def _cover_part(clause, key, abi, handled: FS, translation, options):
    """(status, mechanism, note) for one (area, op) of a blocking clause."""
    area, op = key
    if key in _LANDLOCK_OPS:
        return _cover_landlock(clause, key, abi, handled, translation)
    if key in syscalls.SYSCALLS:
        if clause.rule.after is not None:
            return (AUDIT_ONLY, "", "taints are not followed by the supervisor")
        how = "seccomp notification"
        if key == ("memory", "fileless-exec"):
            return (
                PARTIAL,
                how,
                "the exec path is read from the caller's memory, "
                "which another thread of the caller could change after the check",
            )
        if key in syscalls.METADATA_OPS:
            return (PARTIAL, how, METADATA_NOTE)
        note = "new mount API calls are always denied" if op == "mount" else ""
        return (ENFORCED, how, note)
    if key in _CGROUP_OPS:
        if not options.cgroup:
            return (AUDIT_ONLY, "", "cgroup hooks are not available")
        limit = network.cgroup_limit(clause)
        if limit:
            return (AUDIT_ONLY, "", limit)
        return (ENFORCED, f"cgroup sock_addr {op}", "")
    if key == ("ipc", "unix-connect") and abi >= 6 and _abstract_unix_scope(clause):
        return (
            PARTIAL,
            "landlock scope",
            "only abstract sockets made outside the "
            "sandbox; sockets with a path are not covered",
        )
    if key == ("device", "open"):
        if not options.cgroup:
            return (AUDIT_ONLY, "", "cgroup hooks are not available")
        limit = devices.device_limit(clause)
        return (AUDIT_ONLY, "", limit) if limit else (ENFORCED, "cgroup device", "")
    if key == ("creds", "setid-exec"):
        return (PARTIAL, "no_new_privs", "runs, but without gaining privilege")
    if key == ("namespace", "cgroup-move") and options.self_protect:
        return (ENFORCED, "read-only /sys/fs/cgroup", "")
    return (AUDIT_ONLY, "", "no compat mechanism")


def _cover_landlock(clause, key, abi, handled: FS, translation):
    if not abi:
        return (AUDIT_ONLY, "", "Landlock is not available")
    limit = files.landlock_limit(clause)
    if limit:
        return (AUDIT_ONLY, "", limit)
    rights = FS(0)
    for entry in files.OP_RIGHTS[key]:
        rights |= entry[0]
    if not rights & handled:
        return (AUDIT_ONLY, "", f"this kernel's Landlock ABI {abi} has no right for it")
    split = set()
    for right in files.single_rights(rights & handled):
        split |= translation.split.get(right, set())
    notes = []
    if split:
        notes.append(f"over-approximates: new entries in {_some(split)} are denied too")
    linked = _hard_linked(clause, translation.hardlinked)
    if linked:
        notes.append(
            f"not covered: other hard links to {_some(linked)} "
            "(Landlock judges the path a file is opened by)"
        )
        return (PARTIAL, "landlock", "; ".join(notes))
    return (ENFORCED, "landlock", "; ".join(notes))


def _some(paths: set[str], count: int = 4) -> str:
    return ", ".join(sorted(paths)[:count]) + (" ..." if len(paths) > count else "")


def _hard_linked(clause, hardlinked: set[str]) -> set[str]:
    pattern = clause.object.get("path")
    if not isinstance(pattern, PathGlob):
        return set(hardlinked) if not len(clause.object) else set()
    return {p for p in hardlinked if pattern.matches(p)}
