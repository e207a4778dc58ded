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
# the ops whose hooks walk the path (rename walks both of its names)
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


def fields_rule(
    line: int, effect: str, area: str, ops: set[str], priority: int = 0, **fields: str
) -> Rule:
    """A rule of one clause whose fields are given by name, as in a .cap file."""
    parsed = {
        name: parse_pattern(FIELDS[area][name], text) for name, text in fields.items()
    }
    return Rule(
        Location("gen.cap", line, 1),
        Effect(effect),
        None,
        area,
        frozenset(ops),
        (ObjectPattern(parsed),),
        priority=priority,
    )


def net_rule(
    line: int, effect: str, ops: set[str], priority: int = 0, **fields: str
) -> Rule:
    return fields_rule(line, effect, "network", ops, priority, **fields)


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

# signal numbers as the table op, the receiver's executable as the path
SIGNALS = Policy(
    (
        fields_rule(1, "deny", "signal", {"send"}, signal="SIGUSR1"),
        fields_rule(
            2, "deny", "signal", {"send"}, signal="SIGTERM", target=f"{GEN}/sig-target"
        ),
        fields_rule(
            3, "kill", "signal", {"send"}, signal="SIGHUP", target=f"{GEN}/*.bin"
        ),
        fields_rule(4, "allow", "signal", {"send"}, 1, target=f"{GEN}/ok/"),
    )
)
LISTEN_ACCEPT = Policy(
    (
        net_rule(1, "deny", {"listen"}, port="7000-7099"),
        net_rule(2, "audit", {"listen"}, addr="127.0.0.0/8", port="7100-7199"),
        net_rule(3, "deny", {"accept"}, protocol="tcp"),
    )
)

# rename, link and symlink: the first name under the op, the new name (`to`) apart
NAMES = f"{GEN}/names"
FILE_NAMES = Policy(
    (
        fields_rule(1, "deny", "file", {"rename", "link"}, path=f"{NAMES}/locked/**"),
        fields_rule(
            2, "deny", "file", {"rename", "link", "symlink"}, to=f"{NAMES}/guarded/**"
        ),
        fields_rule(3, "allow", "file", {"rename"}, 1, to=f"{NAMES}/guarded/ok"),
        fields_rule(4, "deny", "file", {"symlink"}, path=f"{NAMES}/secret"),
    )
)

# memory wx: anonymous memory has no path, a mapped file has its own
MEMORY = Policy(
    (
        rule(1, "deny", "memory", {"wx"}),
        rule(2, "allow", "memory", {"wx"}, f"{GEN}/jit/", priority=1),
    )
)

# namespace clone, per namespace kind
NAMESPACE = Policy(
    (
        fields_rule(1, "deny", "namespace", {"clone"}, ns="net"),
        fields_rule(2, "kill", "namespace", {"clone"}, ns="ipc"),
        fields_rule(3, "audit", "namespace", {"clone"}),
        fields_rule(4, "deny", "namespace", {"clone"}, path="/sys/fs/cgroup/x/"),
    )
)

# creds: uid and gid ranges and capabilities, scanned strongest first
CREDS = Policy(
    (
        fields_rule(1, "deny", "creds", {"setuid"}, uid="1000-1999"),
        fields_rule(2, "allow", "creds", {"setuid"}, 1, uid="1500"),
        fields_rule(3, "deny", "creds", {"setgid"}, gid="2000"),
        fields_rule(4, "deny", "creds", {"capset"}, cap="CAP_SYS_ADMIN"),
        fields_rule(5, "kill", "creds", {"setuid"}, uid="4242"),
        fields_rule(6, "audit", "creds", {"setuid", "setgid", "capset"}),
    )
)

ALL = {
    "file_and_process": FILE_AND_PROCESS,
    "default_deny": DEFAULT_DENY,
    "write_only": WRITE_ONLY,
    "exec_only": EXEC_ONLY,
    "globs_only": GLOBS_ONLY,
    "escalate_default": ESCALATE_DEFAULT,
    "network": NETWORK,
    "signals": SIGNALS,
    "listen_accept": LISTEN_ACCEPT,
    "creds": CREDS,
    "file_names": FILE_NAMES,
    "memory": MEMORY,
    "namespace": NAMESPACE,
}
