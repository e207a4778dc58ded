"""The IR decides every event exactly as semantics.decide does, and says what it
cannot decide instead of guessing."""

import random

import policies
import pytest

from capsule.codegen import ir
from capsule.lang import semantics
from capsule.lang.model import Effect, Event, Policy
from capsule.lang.names import AREAS

SEED = 20261203
SEGMENTS = ["run", "capsule", "gen", "secret", "private", "ok", "x", "etc", "tmp",
            "shadow", "bin", "tool", "ask", "q", "kill-tool", "passwd", ".ssh"]  # fmt: skip


def _paths_near(table: ir.AreaTable, rng: random.Random) -> list[str]:
    """Paths on, under, beside and above every literal and prefix of the table."""
    seeds = [path for _, path in table.exact] + [p for _, p in table.prefix]
    found = []
    for seed in seeds:
        base = seed.rstrip("/")
        found += [base or "/", base + "x", base + "/" + rng.choice(SEGMENTS)]
        found += [base.rsplit("/", 1)[0] or "/", base + "/a/b"]
    found += ["/" + "/".join(rng.choices(SEGMENTS, k=rng.randint(1, 5))) for _ in range(200)]
    assert all(p == "/" or ("//" not in p and not p.endswith("/")) for p in found)
    return found


def _random_events(policy: Policy, table: ir.AreaTable, count: int) -> list[Event]:
    rng = random.Random(SEED)
    paths = _paths_near(table, rng)
    ops = [op for (area, op) in ir.HOOKS if area == table.area]
    return [Event(table.area, rng.choice(ops), {"path": rng.choice(paths)})
            for _ in range(count)]  # fmt: skip


def _supported_only(policy: Policy) -> Policy:
    lowered = ir.lower(policy)
    dropped = {item.ref for item in lowered.unsupported}
    rules = tuple(rule for rule in policy.rules if rule.ref not in dropped)
    return Policy(rules, policy.defaults, policy.settings, policy.files,
                  policy.default_fallbacks)  # fmt: skip


@pytest.mark.parametrize("name", sorted(policies.ALL))
def test_ir_tables_decide_random_events_like_semantics(name: str) -> None:
    policy = _supported_only(policies.ALL[name])
    lowered = ir.lower(policy)
    assert lowered.unsupported == []
    for table in lowered.areas.values():
        for event in _random_events(policy, table, 2000):
            want = semantics.decide(policy, event)
            got = table.decide(event.op, event.fields["path"])
            assert (got.effect, got.enforced) == (want.effect, want.enforced), event
            if want.clause is not None:
                assert lowered.rules[got.rule] == want.clause.rule.ref, event


def test_priority_beats_a_longer_prefix_through_prefix_inheritance() -> None:
    policy = Policy((
        policies.rule(1, "allow", "file", {"read"}, "/a/", priority=5),
        policies.rule(2, "deny", "file", {"read"}, "/a/b/c/**"),
    ))  # fmt: skip
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
    ("glob", "reason"),
    [
        ("/home/*/.ssh/**", "needs a matcher"),
        ("~/.ssh/", "needs a matcher"),
        ("/etc/*.conf", "needs a matcher"),
        ("/**", "needs a matcher"),
        ("/" + "a" * 260, "longer than 251 bytes"),
    ],
)
def test_globs_without_a_kernel_table_are_reported(glob: str, reason: str) -> None:
    policy = Policy((policies.rule(1, "deny", "file", {"read"}, glob),))
    (item,) = ir.lower(policy).unsupported
    assert reason in item.reason and item.ref == "gen.cap:1"


def test_ops_without_a_hook_are_reported_not_dropped() -> None:
    lowered = ir.lower(policies.FILE_AND_PROCESS)
    assert [(u.ref, u.ops) for u in lowered.unsupported] == [("gen.cap:7", ("delete",))]


def test_only_the_hooks_the_policy_needs_are_emitted() -> None:
    only_exec = Policy((policies.rule(1, "deny", "process", {"exec"}, "/x"),))
    assert list(ir.lower(only_exec).hooks) == ["bprm_check_security"]
    assert ir.lower(Policy(())).hooks == {}
    deny_all = Policy((), defaults={"file": Effect.DENY})
    assert ir.lower(deny_all).hooks == {"file_open": tuple(
        ("file", op) for op in ("read", "write", "exec"))}  # fmt: skip


def test_every_area_op_with_a_hook_exists_in_the_language() -> None:
    for area, op in ir.HOOKS:
        assert op in AREAS[area]
