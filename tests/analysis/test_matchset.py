"""Match sets of whole clauses over the symbolic event: sat and unsat tables for
subject and taint conditions, field presence, and witnesses that replay."""

import pytest
import z3
from analysis_rules import rule

from capsule.analysis import encode
from capsule.analysis.matchset import SymbolicEvent
from capsule.lang.model import Event

R = rule


def _query(a, b, relation):
    ca, cb = a.clauses()[0], b.clauses()[0]
    sym = SymbolicEvent(a.area, [ca, cb])
    second = sym.matches(cb) if relation == "meet" else z3.Not(sym.matches(cb))
    return sym, encode.solve([*sym.domain([ca, cb]), sym.matches(ca), second])


def _clause(r):
    return r.clauses()[0]


# (a, b, relation, sat?): "meet" asks for an event both match, "escape" for one that
# a matches and b does not
TABLE = [
    # subject: exe
    (R(1, "deny", "file", "read", "/x", exe=["/usr/bin/cat"]),
     R(2, "deny", "file", "read", "/x", exe=["/usr/bin/*"]), "escape", False),
    (R(1, "deny", "file", "read", "/x", exe=["/usr/bin/*"]),
     R(2, "deny", "file", "read", "/x", exe=["/usr/bin/cat"]), "escape", True),
    (R(1, "deny", "file", "read", "/x", exe=["/usr/bin/cat"]),
     R(2, "deny", "file", "read", "/x", exe=["/bin/cat"]), "meet", False),
    (R(1, "deny", "file", "read", "/x", exe=["/bin/cat", "/usr/bin/cat"]),
     R(2, "deny", "file", "read", "/x", exe=["/bin/cat"]), "meet", True),
    # subject: uid ranges
    (R(1, "deny", "file", "read", "/x", uid=["0"]),
     R(2, "deny", "file", "read", "/x", uid=["1-999"]), "meet", False),
    (R(1, "deny", "file", "read", "/x", uid=["0-999"]),
     R(2, "deny", "file", "read", "/x", uid=["1-999"]), "escape", True),
    # subject: ancestors are a set, so two different ancestors can both be there
    (R(1, "deny", "file", "read", "/x", ancestor=["/usr/bin/bash"]),
     R(2, "deny", "file", "read", "/x", ancestor=["/usr/bin/python3"]), "meet", True),
    (R(1, "deny", "file", "read", "/x", ancestor=["/usr/bin/bash"]),
     R(2, "deny", "file", "read", "/x", ancestor=["/usr/bin/*"]), "escape", False),
    # an ancestor condition says nothing about the process's own executable
    (R(1, "deny", "file", "read", "/x", ancestor=["/usr/bin/bash"]),
     R(2, "deny", "file", "read", "/x", exe=["/usr/bin/bash"]), "escape", True),
    # subject: cgroup
    (R(1, "deny", "file", "read", "/x", cgroup=["/agent.slice/**"]),
     R(2, "deny", "file", "read", "/x", cgroup=["/user.slice/**"]), "meet", False),
    # taint conditions
    (R(1, "deny", "file", "read", "/x", after="secret"),
     R(2, "deny", "file", "read", "/x"), "escape", False),
    (R(1, "deny", "file", "read", "/x"),
     R(2, "deny", "file", "read", "/x", after="secret"), "escape", True),
    (R(1, "deny", "file", "read", "/x", after="secret"),
     R(2, "deny", "file", "read", "/x", after="other"), "meet", True),
    # fields an operation does not carry
    (R(1, "deny", "file", "read", {"to": "/etc/**"}),
     R(2, "deny", "file", "read", "/x"), "meet", False),
    (R(1, "deny", "file", "rename", {"to": "/etc/**"}),
     R(2, "deny", "file", "rename", "/x"), "meet", True),
    # operations
    (R(1, "deny", "file", "read,write", "/x"),
     R(2, "deny", "file", "write", "/x"), "escape", True),
    (R(1, "deny", "file", "write", "/x"),
     R(2, "deny", "file", "read,write", "/x"), "escape", False),
    # names, devices and flags
    (R(1, "deny", "signal", "send", "SIGKILL"),
     R(2, "deny", "signal", "send", "9"), "escape", False),
    (R(1, "deny", "device", "open", "8:*"),
     R(2, "deny", "device", "open", "disk"), "escape", False),
    (R(1, "deny", "device", "open", "disk"),
     R(2, "deny", "device", "open", "8:*"), "escape", True),
    (R(1, "deny", "system", "mount", {"flags": "bind"}),
     R(2, "deny", "system", "mount", {"flags": "ro"}), "meet", True),
    (R(1, "deny", "network", "connect", {"protocol": "tcp"}),
     R(2, "deny", "network", "connect", {"protocol": "udp"}), "meet", False),
]  # fmt: skip


@pytest.mark.parametrize("a,b,relation,sat", TABLE)
def test_clause_relations(a, b, relation, sat):
    sym, outcome = _query(a, b, relation)
    assert isinstance(outcome, encode.Sat if sat else encode.Unsat)
    if sat:
        event = sym.witness(outcome.model)
        assert isinstance(event, Event)
        assert _clause(a).matches(event)
        assert _clause(b).matches(event) == (relation == "meet")


def test_fix_pins_the_symbolic_event_to_a_concrete_one():
    clause = _clause(R(1, "deny", "network", "connect", {"addr": "10.0.0.0/8"}))
    sym = SymbolicEvent("network", [clause])
    inside = Event("network", "connect", {"addr": "10.1.2.3", "port": 22}, exe="/a")
    outside = Event("network", "connect", {"addr": "11.1.2.3", "port": 22}, exe="/a")
    assert isinstance(encode.solve([*sym.fix(inside), sym.matches(clause)]), encode.Sat)
    assert isinstance(
        encode.solve([*sym.fix(outside), sym.matches(clause)]), encode.Unsat
    )
