"""Randomized differential test: for random policies and random events, the running
kernel (the generated BPF LSM programs in the test VM), the compiled IR tables and the
reference semantics behind `capsule explain` reach the same decision; z3 confirms the
explanation on a sample.

Each seed writes a random `.cap` text of file and network rules over a small universe
of names, so that rules overlap, override and shadow each other. Every file of the
universe is opened for read and for write in the guest, and random loopback addresses
are connected to and sent to.
"""

import ipaddress
import json
import random
import sys
from pathlib import Path

import pytest
from lsm_harness import HERE, guest_job, probe_results

from capsule.analysis import explain
from capsule.codegen import artifact, ir
from capsule.lang import load_policy, semantics
from capsule.lang.model import Effect, Event, Policy
from capsule.lang.names import PROTOCOLS
from capsule.runtime import vm

pytestmark = [pytest.mark.lsm, pytest.mark.slow]

SEEDS = (20261204, 7, 99)
ROOT = "/run/capsule/diff"
DIRS = ["d0", "d1", "d2"]
SUBDIRS = ["", "s0", "s1"]
NAMES = ["f0", "f1", "a.key", "g.txt"]
FILES = [
    "/".join(p for p in (ROOT, d, s, n) if p)
    for d in DIRS
    for s in SUBDIRS
    for n in NAMES
]
PORTS = [1500, 1501, 2000, 2001, 3000]
BLOCKED = {Effect.DENY, Effect.KILL}


def _path_pattern(rng: random.Random) -> str:
    d, s, n = rng.choice(DIRS), rng.choice(SUBDIRS[1:]), rng.choice(NAMES)
    return rng.choice(
        [
            f"{ROOT}/{d}/{s}/{n}",  # exact
            f"{ROOT}/{d}/",  # the directory and everything below
            f"{ROOT}/{d}/{s}/",
            f"{ROOT}/{d}/*",  # one component
            f"{ROOT}/{d}/*/{n}",
            f"{ROOT}/**/*.key",  # the DFA's job
            f"{ROOT}/{d}/**/f?",
            f"{ROOT}/*/{s}/g.*",
        ]
    )


def _net_object(rng: random.Random) -> str:
    block = rng.choice(["127.0.0.0/8", "127.0.0.0/24", "127.0.0.2", "127.0.1.0/24"])
    lo = rng.choice(PORTS)
    port = rng.choice([str(lo), f"{lo}-{lo + rng.choice([1, 500, 1000])}"])
    return f"addr {block} port {port}" + rng.choice(["", " protocol udp"])


def policy_text(seed: int) -> str:
    rng = random.Random(seed)
    lines = [f'set name = "diff-{seed}"']
    for _ in range(rng.randint(8, 16)):
        effect = rng.choice(["allow", "deny", "deny", "audit"])
        ops = rng.choice(["read", "write", "read, write"])
        prio = rng.choice(["", "", "", " priority 1", " priority 2"])
        lines.append(f"{effect} file {ops} {_path_pattern(rng)}{prio}")
    for _ in range(rng.randint(3, 6)):
        effect = rng.choice(["allow", "deny", "audit"])
        ops = rng.choice(["connect", "send", "connect, send"])
        prio = rng.choice(["", "", " priority 1"])
        lines.append(f"{effect} network {ops} {_net_object(rng)}{prio}")
    lines.append("deny network connect, send addr 127.0.3.0/24")
    return "\n".join(lines) + "\n"


def load(seed: int, workdir: Path) -> Policy:
    source = workdir / f"diff-{seed}.cap"
    source.write_text(policy_text(seed))
    policy, diags = load_policy([str(source)])
    assert not [d for d in diags if d.is_error], [str(d) for d in diags]
    return policy


def net_probes(seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.200", "127.0.1.9", "127.0.3.3"]
    probes = set()
    for _ in range(30):
        op = rng.choice(["connect", "send"])
        port = rng.choice(PORTS) + rng.choice([-1, 0, 0, 1, 600])
        probes.add(f"{op}:{rng.choice(hosts)}:{port}" + (":udp" if op == "send" else ""))
    return sorted(probes)


def event_of(probe: str) -> Event:
    op, _, rest = probe.partition(":")
    if op in ("read", "write"):
        return Event("file", op, {"path": rest})
    host, port, *udp = rest.split(":")
    proto = "udp" if udp else "tcp"
    return Event("network", op, {"addr": host, "port": int(port), "protocol": proto})


def _workdir(seed: int, workdir: Path) -> Path:
    place = workdir / f"diff-{seed}"
    place.mkdir(parents=True, exist_ok=True)
    return place


def _job(seed: int, workdir: Path, loader: Path) -> vm.GuestCommand:
    place = _workdir(seed, workdir)
    built = artifact.build(load(seed, place), place / "artifact")
    probes = [f"{op}:{path}" for path in FILES for op in ("read", "write")]
    scenario = {"files": FILES, "probes": probes + net_probes(seed)}
    (place / "scenario.json").write_text(json.dumps(scenario))
    argv = [sys.executable, str(HERE / "guest_policy.py"), str(loader)]
    argv += [str(built.directory), str(place / "scenario.json")]
    return vm.GuestCommand(f"diff_{seed}", argv, timeout=120)


for _seed in SEEDS:
    guest_job(f"diff_{_seed}")(
        lambda workdir, loader, seed=_seed: _job(seed, workdir, loader)
    )


def _table_blocks(lowered: ir.Ir, event: Event) -> bool:
    table = lowered.areas[event.area]
    if event.area == "file":
        got = table.decide(event.op, event.fields["path"])
    else:
        addr = ipaddress.ip_address(event.fields["addr"])
        proto = PROTOCOLS[event.fields["protocol"]]
        got = table.decide(event.op, addr, event.fields["port"], proto)
    return got.enforced in BLOCKED


@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_tables_and_explain_decide_random_events_alike(
    lsm_vm: vm.GuestRun, seed: int, tmp_path: Path
) -> None:
    result = lsm_vm.results[f"diff_{seed}"]
    outcomes = probe_results(result)
    assert outcomes, result.stdout + result.stderr
    policy = load(seed, tmp_path)
    lowered = ir.lower(policy)
    assert not lowered.unsupported, lowered.unsupported
    disagree, blocked = [], 0
    for probe, outcome in outcomes.items():
        event = event_of(probe)
        want = semantics.decide(policy, event).enforced in BLOCKED
        kernel = outcome == "EPERM"
        assert outcome in ("ok", "EPERM", "ECONNREFUSED"), (probe, outcome)
        if not want == kernel == _table_blocks(lowered, event):
            disagree.append((probe, outcome, want))
        blocked += want
    assert not disagree, disagree
    assert 0 < blocked < len(outcomes)  # the policy decided both ways


@pytest.mark.parametrize("seed", SEEDS)
def test_z3_confirms_the_explanations_of_a_sample(seed: int, tmp_path: Path) -> None:
    policy = load(seed, tmp_path)
    rng = random.Random(seed)
    probes = [f"{op}:{p}" for p in rng.sample(FILES, 12) for op in ("read", "write")]
    for probe in probes + net_probes(seed)[:8]:
        result = explain.explain(policy, event_of(probe))
        assert result.z3_agrees is True, (probe, result.note)
