"""Policies built in Python for codegen tests, until they can be written as .cap.

Each entry is a resolved model.Policy, exactly what `capsule.lang` hands codegen.
"""

from capsule.lang.model import Effect, Location, ObjectPattern, PathGlob, Policy, Rule


def rule(line: int, effect: str, area: str, ops: set[str], *paths: str,
         priority: int = 0, fallback: str | None = None) -> Rule:  # fmt: skip
    objects = tuple(ObjectPattern({"path": PathGlob.parse(p)}) for p in paths)
    return Rule(
        Location("gen.cap", line, 1), Effect(effect),
        Effect(fallback) if fallback else None, area, frozenset(ops), objects,
        priority=priority,
    )  # fmt: skip


GEN = "/run/capsule/gen"

# the end-to-end policy the LSM VM enforces (tests/lsm/test_codegen_lsm.py)
FILE_AND_PROCESS = Policy(
    rules=(
        rule(1, "deny", "file", {"read", "write"}, f"{GEN}/secret", f"{GEN}/private/**"),
        rule(2, "allow", "file", {"read"}, f"{GEN}/private/ok", priority=1),
        rule(3, "audit", "file", {"write"}, "/etc/"),
        rule(4, "deny", "process", {"exec"}, f"{GEN}/bin/**"),
        rule(5, "kill", "file", {"exec"}, f"{GEN}/kill-tool"),
        rule(6, "escalate", "file", {"read"}, f"{GEN}/ask/", fallback="deny"),
        rule(7, "deny", "file", {"delete"}, "/etc/**"),  # no hook yet: reported
        rule(8, "deny", "file", {"read"}, "~/.ssh/", f"{GEN}/*.key"),  # the DFA's job
    ),
)

DEFAULT_DENY = Policy(
    rules=(
        rule(1, "allow", "file", {"read"}, "/"),
        rule(2, "allow", "file", {"read", "write"}, "/tmp/"),
        rule(3, "deny", "file", {"read"}, "/etc/shadow"),
    ),
    defaults={"file": Effect.DENY},
)

ALL = {"file_and_process": FILE_AND_PROCESS, "default_deny": DEFAULT_DENY}
