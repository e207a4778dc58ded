"""The tracer beside enforcement (`capsule enforce --trace`): the whole timeline, and
audit rules on operations that no compat mechanism sees (file reads, execs, ...).

Each traced event is decided with the policy; where an audit (or escalate) rule wins,
the event carries `verdict: audit` and the rule. Denials are not taken from here: the
mechanisms that deny report them, with the rule that decided.
"""

from __future__ import annotations

from capsule.lang.model import Effect, Event, Policy
from capsule.lang.semantics import decide

# event key -> policy field
_FIELDS = {
    "path": "path",
    "new_path": "to",
    "addr": "addr",
    "port": "port",
    "fstype": "fstype",
    "signal": "signal",
    "target_exe": "target",
}


def policy_event(event: dict) -> Event:
    fields = {
        field: event[key]
        for key, field in _FIELDS.items()
        if event.get(key) not in (None, "")
    }
    if event.get("area") == "network" and not isinstance(fields.get("addr"), str):
        fields.pop("addr", None)
    return Event(
        event["area"], event["op"], fields, exe=event.get("exe"), uid=event.get("uid")
    )


def annotate(policy: Policy, event: dict) -> dict:
    """Mark the event audited when an audit or escalate rule decides it."""
    if event.get("verdict") or event.get("area") is None:
        return event
    try:
        decision = decide(policy, policy_event(event))
    except (TypeError, ValueError):  # a field the patterns cannot read
        return event
    if decision.clause is not None and decision.effect in (
        Effect.AUDIT,
        Effect.ESCALATE,
    ):
        event["verdict"] = "audit"
        event["rule"] = decision.clause.rule.ref
    return event


class Observer:
    """The tracer scoped to the agent's cgroup, with enrichment."""

    def __init__(self, cgroup_path, policy: Policy) -> None:
        from capsule.runtime.enrich import Enricher
        from capsule.runtime.tracer import Tracer

        self.policy = policy
        # no folding: each open is decided and audited as an event of its own
        self.tracer = Tracer(cgroup_path=cgroup_path, fold_ns=0)
        self.tracer.start()
        self.enricher = Enricher()

    def add_root(self, pid: int) -> None:
        self.enricher.add_root(pid)

    def poll(self, timeout_ms: int) -> list[dict]:
        out = []
        for raw in self.tracer.poll(timeout_ms):
            for event in self.enricher.enrich(raw):
                out.append(annotate(self.policy, event))
        return out

    def close(self) -> None:
        self.tracer.close()
