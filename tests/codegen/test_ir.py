"""The IR decides every event exactly as semantics.decide does, and says what it
cannot decide instead of guessing."""

import ipaddress
import random
from pathlib import Path

import policies
import pytest

from capsule.codegen import creds, ir
from capsule.lang import load_policy, semantics
from capsule.lang.model import Effect, Event, Policy
from capsule.lang.names import AREAS, CAPABILITIES, PROTOCOLS, SIGNALS

SEED = 20261203
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "policies").glob("*.cap"))
SEGMENTS = [
    "run",
    "capsule",
    "gen",
    "secret",
    "private",
    "ok",
    "x",
    "etc",
    "tmp",
    "shadow",
    "bin",
    "tool",
    "ask",
    "q",
    "kill-tool",
    "passwd",
    ".ssh",
]


def _instantiate(glob: str, rng: random.Random) -> str:
    """A path the glob probably matches: wildcards filled with random segments."""
    text = glob.replace("~", rng.choice(["/root", "/home/alice"]), 1)
    if text.endswith("/") and len(text) > 1:
        text += rng.choice(["", "a", "a/b"])
    out = []
    for part in text.split("/"):
        if part == "**":
            out += rng.choices(SEGMENTS, k=rng.randint(0, 2))
            continue
        part = part.replace("\\", "")
        part = part.replace("*", rng.choice(["", "x", "ab.c"])).replace("?", "q")
        out.append(part)
    path = "/".join(out).rstrip("/")
    return "/" + "/".join(p for p in path.split("/") if p)


def _paths_near(policy: Policy, rng: random.Random) -> list[str]:
    """Paths on, under, beside and above every path pattern of the policy."""
    globs = [
        str(c.object[name])
        for c in policy.clauses()
        for name in ("path", "to")
        if name in c.object
    ]
    found = []
    for glob in globs:
        base = _instantiate(glob, rng)
        found += [base, base + "x", base.rsplit("/", 1)[0] or "/"]
        found += [
            base.rstrip("/") + "/" + rng.choice(SEGMENTS),
            base.rstrip("/") + "/a/b",
        ]
    found += [
        "/" + "/".join(rng.choices(SEGMENTS, k=rng.randint(0, 5))) for _ in range(200)
    ]
    found = [p.replace("//", "/") for p in found]
    assert all(p == "/" or not p.endswith("/") for p in found)
    return found


def _random_events(policy: Policy, area: str, count: int) -> list[Event]:
    rng = random.Random(SEED)
    paths = _paths_near(policy, rng)
    ops = [op for (hooked, op) in ir.HOOKS if hooked == area]
    events = []
    for _ in range(count):
        op, fields = rng.choice(ops), {"path": rng.choice(paths)}
        if area == "file" and op in ir.FILE_TO_OPS:
            fields["to"] = rng.choice(paths)  # the new name of rename, link, symlink
        if area == "memory" and rng.random() < 0.2:
            fields = {}  # anonymous memory: the kernel looks up ""
        events.append(Event(area, op, fields))
    return events


def _signal_events(policy: Policy, count: int) -> list[tuple[Event, tuple]]:
    """Signals to receivers near every target pattern; some receivers have no
    executable (a kernel thread), which the kernel passes as ""."""
    rng = random.Random(SEED)
    paths = [
        _instantiate(str(c.object["target"]), rng)
        for c in policy.clauses("signal")
        if "target" in c.object
    ]
    paths += [p + "x" for p in paths] + ["/usr/bin/x", "/run/capsule/gen/tool"]
    numbers = sorted(SIGNALS.values()) + [0, 40]
    events = []
    for _ in range(count):
        signal, target = rng.choice(numbers), rng.choice(paths + [None])
        fields = {"signal": signal} | ({"target": target} if target else {})
        events.append((Event("signal", "send", fields), (signal, target or "")))
    return events


def _creds_events(policy: Policy, count: int) -> list[tuple[Event, tuple]]:
    """set*id and capset calls with values on and beside every clause's range, and
    calls that carry no value."""
    rng = random.Random(SEED)
    values = [0, 1, 1000, 65534, 4294967294]
    for clause in policy.clauses("creds"):
        for pattern in clause.object.values():
            low = getattr(pattern, "lo", None)
            low = pattern.number if low is None else low
            high = getattr(pattern, "hi", low)
            values += [max(low - 1, 0), low, high, high + 1]
    values += list(CAPABILITIES.values())
    events = []
    for _ in range(count):
        op, value = rng.choice(["setuid", "setgid", "capset"]), rng.choice(values)
        value = None if rng.random() < 0.1 else value
        name = creds.OP_FIELD[op]
        fields = {} if value is None else {name: value}
        events.append((Event("creds", op, fields), (op, value)))
    return events


def _ns_events(count: int) -> list[tuple[Event, tuple]]:
    """Clones asking for one namespace kind each (a clone with several is decided
    per kind); the kernel's op id is the kind's index."""
    rng = random.Random(SEED)
    kinds = [rng.choice(ir.NS_KINDS) for _ in range(count)]
    return [
        (Event("namespace", "clone", {"ns": kind}), (ir.NS_KINDS.index(kind), ""))
        for kind in kinds
    ]


def _net_events(policy: Policy, count: int) -> list[tuple[Event, tuple]]:
    """Connects and binds near every address block and port range of the policy."""
    rng = random.Random(SEED)
    cidrs = [
        c.object["addr"].network
        for c in policy.clauses("network")
        if "addr" in c.object
    ]
    ports = [
        p
        for c in policy.clauses("network")
        if "port" in c.object
        for p in (c.object["port"].lo, c.object["port"].hi)
    ]
    addrs = [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("2001:db8::1")]
    for network in cidrs:
        first = int(network.network_address)
        addrs += [
            ipaddress.IPv6Address(first + rng.randrange(network.num_addresses)),
            ipaddress.IPv6Address(max(first - 1, 0)),
        ]
    addrs = [a.ipv4_mapped or a if a.version == 6 else a for a in addrs]
    events = []
    for _ in range(count):
        op, proto = (
            rng.choice(["connect", "bind", "send", "listen", "accept"]),
            rng.choice(["tcp", "udp", "raw"]),
        )
        port = rng.choice(ports + [0, 53, 443, 8080, 65535]) + rng.choice([-1, 0, 0, 1])
        port, addr = min(max(port, 0), 65535), rng.choice(addrs)
        fields = {"addr": str(addr), "port": port, "protocol": proto}
        events.append(
            (Event("network", op, fields), (op, addr, port, PROTOCOLS[proto]))
        )
    return events


def _supported_only(policy: Policy) -> Policy:
    """The policy without the rules the kernel leaves to user space."""
    lowered = ir.lower(policy)
    dropped = {item.ref for item in lowered.unsupported}
    rules = tuple(rule for rule in policy.rules if rule.ref not in dropped)
    return Policy(
        rules, policy.defaults, policy.settings, policy.files, policy.default_fallbacks
    )


def _assert_decides_like_semantics(policy: Policy) -> int:
    policy = _supported_only(policy)
    lowered = ir.lower(policy)
    assert not [u for u in lowered.unsupported if not u.ref.startswith("default ")]
    checked = 0
    for area, table in lowered.areas.items():
        if area == "network":
            cases = _net_events(policy, 3000)
        elif area == "signal":
            cases = _signal_events(policy, 3000)
        elif area == "creds":
            cases = _creds_events(policy, 3000)
        elif area == "namespace":
            cases = _ns_events(3000)
        else:
            cases = [
                (e, (e.op, e.fields.get("path", ""), e.fields.get("to")))
                for e in _random_events(policy, area, 3000)
            ]
        for event, args in cases:
            want = semantics.decide(policy, event)
            got = table.decide(*args)
            assert (got.effect, got.enforced) == (want.effect, want.enforced), event
            if want.clause is not None:
                assert lowered.rules[got.rule] == want.clause.rule.ref, event
            checked += want.clause is not None
    return checked


@pytest.mark.parametrize("name", sorted(policies.ALL))
def test_ir_tables_decide_random_events_like_semantics(name: str) -> None:
    assert _assert_decides_like_semantics(policies.ALL[name]) > 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_ir_decides_random_events_of_every_example_like_semantics(path: Path) -> None:
    policy, diags = load_policy([str(path)])
    assert not [d for d in diags if d.is_error]
    assert _assert_decides_like_semantics(policy) > 10


def test_priority_beats_a_longer_prefix_through_prefix_inheritance() -> None:
    policy = Policy(
        (
            policies.rule(1, "allow", "file", {"read"}, "/a/", priority=5),
            policies.rule(2, "deny", "file", {"read"}, "/a/b/c/**"),
        )
    )
    table = ir.lower(policy).areas["file"]
    assert table.decide("read", "/a/b/c/d").effect is Effect.ALLOW
    assert table.decide("read", "/a/b/c").effect is Effect.ALLOW


def test_truncated_path_fails_closed_only_where_a_rule_blocks() -> None:
    table = ir.lower(policies.FILE_AND_PROCESS).areas["file"]
    assert table.decide("read", None).enforced is Effect.DENY
    assert table.decide("exec", None).enforced is Effect.DENY  # the kill rule blocks
    policy = Policy((policies.rule(1, "audit", "file", {"read"}, "/x"),))
    assert ir.lower(policy).areas["file"].decide("read", None).enforced is Effect.ALLOW


@pytest.mark.parametrize(
    "glob",
    ["/home/*/.ssh/**", "~/.ssh/", "/etc/*.conf", "/**", "/a?c/**/d", "/" + "a" * 300],
)
def test_globs_without_a_hash_key_go_to_the_dfa(glob: str) -> None:
    policy = Policy((policies.rule(1, "deny", "file", {"read"}, glob),))
    lowered = ir.lower(policy)
    table = lowered.areas["file"]
    assert lowered.unsupported == [] and table.dfa is not None
    assert not table.exact and not table.prefix
    assert {op for _, op in table.dfa_accept} == {table.op_id("read")}


def test_ops_without_a_hook_are_reported_not_dropped() -> None:
    assert ir.lower(policies.FILE_AND_PROCESS).unsupported == []
    both = Policy((policies.rule(1, "deny", "process", {"exec", "fork"}, "/x"),))
    lowered = ir.lower(both)
    assert [(u.ref, u.ops) for u in lowered.unsupported] == [("gen.cap:1", ("fork",))]
    assert lowered.areas["process"].decide("exec", "/x").enforced is Effect.DENY


def test_a_default_deny_names_the_ops_it_cannot_enforce_yet() -> None:
    assert ir.lower(policies.DEFAULT_DENY).unsupported == []  # every file op
    lowered = ir.lower(Policy((), defaults={"process": Effect.DENY}))
    (item,) = lowered.unsupported
    assert item.ref == "default process" and "fork" in item.ops
    assert "exec" not in item.ops


def test_a_clause_on_both_names_is_reported_and_one_name_is_decided() -> None:
    rules = (
        policies.fields_rule(1, "deny", "file", {"rename"}, path="/a/**", to="/b/**"),
        policies.fields_rule(2, "deny", "file", {"rename", "link"}, to="/etc/**"),
        policies.fields_rule(3, "allow", "file", {"rename"}, 1, path="/etc/ok/"),
    )
    lowered = ir.lower(Policy(rules))
    assert [(u.ref, u.ops) for u in lowered.unsupported] == [("gen.cap:1", ("rename",))]
    table = lowered.areas["file"]
    assert table.decide("rename", "/tmp/x", "/etc/passwd").effect is Effect.DENY
    assert table.decide("link", "/tmp/x", "/etc/passwd").effect is Effect.DENY
    assert table.decide("rename", "/etc/ok/x", "/etc/y").effect is Effect.ALLOW
    assert table.decide("rename", "/etc/passwd", "/tmp/x").effect is Effect.ALLOW
    assert table.decide("rename", None, "/tmp/x").enforced is Effect.DENY


def test_accept_clauses_with_an_address_are_left_to_user_space() -> None:
    rules = (
        policies.net_rule(1, "deny", {"connect", "accept"}, addr="10.0.0.0/8"),
        policies.net_rule(2, "deny", {"accept"}, protocol="udp"),
    )
    lowered = ir.lower(Policy(rules))
    assert [(u.ref, u.ops) for u in lowered.unsupported] == [("gen.cap:1", ("accept",))]
    (connect, accept) = sorted(lowered.areas["network"].entries, key=lambda e: e.ops)
    assert connect.ops == 1 << AREAS["network"].index("connect")
    assert accept.ops == 1 << AREAS["network"].index("accept") and accept.proto == 17


def test_signal_clauses_key_the_tables_by_signal_number() -> None:
    table = ir.lower(policies.SIGNALS).areas["signal"]
    assert 10 in table.any_op  # SIGUSR1, any receiver
    assert table.decide(10, "").effect is Effect.DENY  # a receiver without an exe
    assert table.decide(15, "/run/capsule/gen/sig-target").effect is Effect.DENY
    assert table.decide(15, "/run/capsule/gen/other").effect is Effect.ALLOW
    assert table.decide(1, "/run/capsule/gen/x.bin").effect is Effect.KILL
    assert table.decide(64, None).enforced is Effect.ALLOW  # no rule blocks 63 or 64


def test_creds_calls_are_decided_per_value_of_their_field() -> None:
    table = ir.lower(policies.CREDS).areas["creds"]
    assert table.decide("setuid", 1000).effect is Effect.DENY
    assert table.decide("setuid", 1500).effect is Effect.ALLOW
    assert table.decide("setgid", 1000).effect is Effect.AUDIT  # uid rules: no gid
    assert table.decide("capset", 21).effect is Effect.DENY  # CAP_SYS_ADMIN
    assert table.decide("capset", None).effect is Effect.AUDIT


def test_only_the_hooks_the_policy_needs_are_emitted() -> None:
    only_exec = Policy((policies.rule(1, "deny", "process", {"exec"}, "/x"),))
    assert list(ir.lower(only_exec).hooks) == ["bprm_check_security"]
    assert ir.lower(Policy(())).hooks == {}
    deny_all = Policy((), defaults={"file": Effect.DENY})
    hooks = ir.lower(deny_all).hooks
    assert hooks["file_open"] == tuple(("file", op) for op in ("read", "write", "exec"))
    assert hooks["path_unlink"] == (("file", "delete"),)
    walked = ("unlink", "rmdir", "mkdir", "mknod", "truncate", "chmod", "chown")
    names = ("rename", "link", "symlink")
    assert set(hooks) == {"file_open", *(f"path_{h}" for h in walked + names)}


def test_every_area_op_with_a_hook_exists_in_the_language() -> None:
    for area, op in ir.HOOKS:
        assert op in AREAS[area]
