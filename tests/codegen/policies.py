"""Policies built in Python for codegen tests, until they can be written as .cap.

Each entry is a resolved model.Policy, exactly what `capsule.lang` hands codegen.
"""

from capsule.lang.model import Effect, Location, ObjectPattern, PathGlob, Policy, Rule
from capsule.lang.names import FIELDS
from capsule.lang.patterns import parse_pattern


def rule(
    line: int,
    effect: str,
    area: str,
    ops: set[str],
    *paths: str,
    priority: int = 0,
    fallback: str | None = None,
) -> Rule:
    objects = tuple(ObjectPattern({"path": PathGlob.parse(p)}) for p in paths)
    return Rule(
        Location("gen.cap", line, 1),
        Effect(effect),
        Effect(fallback) if fallback else None,
        area,
        frozenset(ops),
        objects,
        priority=priority,
    )


GEN = "/run/capsule/gen"
# the ops whose hooks walk the path (rename has no hook yet: reported)
WALKED_OPS = {"delete", "rmdir", "mkdir", "create", "truncate", "chmod", "chown"}

# the end-to-end policy the LSM VM enforces (tests/lsm/test_codegen_lsm.py)
FILE_AND_PROCESS = Policy(
    rules=(
        rule(
            1, "deny", "file", {"read", "write"}, f"{GEN}/secret", f"{GEN}/private/**"
        ),
        rule(2, "allow", "file", {"read"}, f"{GEN}/private/ok", priority=1),
        rule(3, "audit", "file", {"write"}, "/etc/"),
        rule(4, "deny", "process", {"exec"}, f"{GEN}/bin/**"),
        rule(5, "kill", "file", {"exec"}, f"{GEN}/kill-tool"),
        rule(6, "escalate", "file", {"read"}, f"{GEN}/ask/", fallback="deny"),
        rule(7, "deny", "file", WALKED_OPS | {"rename"}, f"{GEN}/locked/**"),
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

# one shape each, so every branch of the templates is compiled and verified
WRITE_ONLY = Policy((rule(1, "deny", "file", {"write"}, "/etc/"),))
EXEC_ONLY = Policy(
    (
        rule(1, "audit", "file", {"exec"}),  # no object: the any-op array
        rule(2, "deny", "process", {"exec"}, "/usr/bin/nc", "/opt/*/bin/**"),
    )
)
GLOBS_ONLY = Policy(
    (
        rule(1, "deny", "file", {"read", "write"}, "~/.ssh/", "/etc/*.key", "/**/.env"),
        rule(2, "allow", "file", {"read"}, "/home/*/.ssh/*.pub", priority=1),
    )
)
ESCALATE_DEFAULT = Policy(
    (rule(1, "allow", "process", {"exec"}, "/usr/bin/"),),
    defaults={"process": Effect.ESCALATE},
    default_fallbacks={"process": Effect.AUDIT},
)


def net_rule(
    line: int, effect: str, ops: set[str], priority: int = 0, **fields: str
) -> Rule:
    parsed = {
        name: parse_pattern(FIELDS["network"][name], text)
        for name, text in fields.items()
    }
    return Rule(
        Location("gen.cap", line, 1),
        Effect(effect),
        None,
        "network",
        frozenset(ops),
        (ObjectPattern(parsed),),
        priority=priority,
    )


NETWORK = Policy(
    (
        net_rule(
            1,
            "allow",
            {"connect"},
            addr="127.0.0.0/8",
            port="1000-2000",
            protocol="tcp",
        ),
        net_rule(2, "deny", {"connect"}, addr="127.0.0.2/32"),
        net_rule(3, "allow", {"connect"}, addr="::1/128"),
        net_rule(4, "deny", {"bind"}, port="0-1023", priority=2),
        net_rule(5, "audit", {"connect", "bind", "send"}, protocol="udp"),
        net_rule(6, "deny", {"send"}, addr="127.0.0.3/32"),
    ),
    defaults={"network": Effect.DENY},
)

ALL = {
    "file_and_process": FILE_AND_PROCESS,
    "default_deny": DEFAULT_DENY,
    "write_only": WRITE_ONLY,
    "exec_only": EXEC_ONLY,
    "globs_only": GLOBS_ONLY,
    "escalate_default": ESCALATE_DEFAULT,
    "network": NETWORK,
}
