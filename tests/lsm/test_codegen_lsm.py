"""Generated policies under the real BPF LSM: the verifier loads every generated
program, and the end-to-end policy denies, allows, audits and kills as decided."""

import json
import sys
from pathlib import Path

import pytest
from lsm_harness import HERE, guest_job, probe_results

from capsule.codegen import artifact, ir
from capsule.events import schema
from capsule.lang import load_policy
from capsule.lang.names import NAMESPACES
from capsule.runtime import vm

sys.path.insert(0, str(HERE.parent / "codegen"))
import policies  # noqa: E402

pytestmark = [pytest.mark.lsm, pytest.mark.slow]
EXAMPLES = HERE.parents[1] / "examples" / "policies"
EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.cap"))
GEN = policies.GEN
DEEP = "/run/capsule/deep"
# ops on existing files first, then delete; names for the ops that make something new
WALKED_PROBES = [
    ("truncate", "f"),
    ("chmod", "f"),
    ("chown", "f"),
    ("delete", "f"),
    ("rmdir", "sub"),
    ("mkdir", "d"),
    ("create", "new"),
]
SCENARIO = {
    "files": [
        f"{GEN}/secret",
        f"{GEN}/other",
        f"{GEN}/private/x",
        f"{GEN}/private/ok",
        f"{GEN}/ask/q",
        f"{GEN}/a.key",
        f"{GEN}/a.keys",
        f"{GEN}/locked/f",
        f"{GEN}/free/f",
        "/home/alice/.ssh/id",
    ],
    "dirs": [f"{GEN}/locked/sub", f"{GEN}/free/sub"],
    "executables": [f"{GEN}/bin/tool", f"{GEN}/ok-tool", f"{GEN}/kill-tool"],
    "probes": [
        f"read:{GEN}/secret",
        f"write:{GEN}/secret",
        f"read:{GEN}/other",
        f"read:{GEN}/private/x",
        f"read:{GEN}/private/ok",
        f"write:{GEN}/private/ok",
        f"read:{GEN}/ask/q",
        "write:/etc/capsule-audit",
        f"exec:{GEN}/bin/tool",
        f"exec:{GEN}/ok-tool",
        f"exec:{GEN}/kill-tool",
        f"read:{GEN}/a.key",
        f"read:{GEN}/a.keys",
        "read:/home/alice/.ssh/id",
        f"deep:{DEEP}",
        *[
            f"{op}:{GEN}/{where}/{name}"
            for where in ("locked", "free")
            for op, name in WALKED_PROBES
        ],
    ],
}
NET_EXPECTED = {
    "connect:127.0.0.1:1500": "ECONNREFUSED",  # allowed: nothing listens there
    "connect:127.0.0.2:1500": "EPERM",  # a /32 deny beats the /8 allow
    "connect:127.0.0.1:80": "EPERM",  # no clause: default deny
    "connect:[::1]:80": "ECONNREFUSED",  # IPv6 allow
    "bind:127.0.0.1:80": "EPERM",  # priority 2 deny of low ports
    "bind:127.0.0.1:5000:udp": "ok",  # audit
    "bind:127.0.0.1:5000": "EPERM",  # tcp: default deny
    "send:127.0.0.1:9:udp": "ok",  # audit
    "send:127.0.0.3:9:udp": "EPERM",  # the /32 send deny beats the udp audit
}
SIGNAL_EXPECTED = {
    f"signal:USR1:{GEN}/sleeper": "EPERM",  # a signal to any receiver
    f"signal:TERM:{GEN}/sig-target": "EPERM",  # this signal to this executable
    f"signal:TERM:{GEN}/sleeper": "ok",
    f"signal:HUP:{GEN}/a.bin": "SIGKILL",  # a glob target (DFA); kill the sender
    f"signal:HUP:{GEN}/sleeper": "ok",
    f"signal:USR1:{GEN}/ok/sleeper": "ok",  # priority 1 allow of every signal
}
LISTEN_EXPECTED = {
    "listen:127.0.0.1:7001": "EPERM",
    "listen:[::1]:7002": "EPERM",
    "listen:127.0.0.1:7101": "ok",  # audit
    "listen:127.0.0.1:8001": "ok",  # no clause: default allow
    "accept:127.0.0.1:8002": "EPERM",  # tcp accept denied; its listen allowed
}
CREDS_EXPECTED = {
    "setuid:1000": "EPERM",
    "setuid:1500": "ok",  # priority 1 allow inside the denied range
    "setuid:3000": "ok",  # audit
    "setuid:4242": "SIGKILL",
    "setgid:2000": "EPERM",
    "setgid:2001": "ok",
    "capset:21": "EPERM",  # CAP_SYS_ADMIN added back
    "capset:12": "ok",  # CAP_NET_ADMIN
}
NAMES = policies.NAMES
NAMES_EXPECTED = {
    f"rename:{NAMES}/locked/a={NAMES}/free/x": "EPERM",  # the old name
    f"rename:{NAMES}/free/a={NAMES}/guarded/x": "EPERM",  # the new name
    f"rename:{NAMES}/free/b={NAMES}/guarded/ok": "ok",  # priority 1 allow
    f"rename:{NAMES}/free/c={NAMES}/free/y": "ok",
    f"link:{NAMES}/locked/b={NAMES}/free/l1": "EPERM",
    f"link:{NAMES}/free/d={NAMES}/guarded/l2": "EPERM",
    f"link:{NAMES}/free/d={NAMES}/free/l3": "ok",
    f"symlink:{NAMES}/secret={NAMES}/free/s1": "EPERM",  # the content
    f"symlink:{NAMES}/free/d={NAMES}/guarded/s2": "EPERM",
    f"symlink:{NAMES}/free/d={NAMES}/free/s3": "ok",
}
WX_EXPECTED = {
    "wx:anon": "EPERM",
    f"wx:{GEN}/jit/lib": "ok",  # priority 1 allow of this directory
    f"wx:{GEN}/other-lib": "EPERM",
    "mprotect:anon": "EPERM",
    f"mprotect:{GEN}/jit/lib": "ok",
}
NS_FLAGS = sum(NAMESPACES.values())
CLONE_EXPECTED = {
    "clone:net": "EPERM",
    "clone:uts": "ok",  # audit
    "clone:uts,net": "EPERM",  # the weightiest kind decides
    "clone:ipc": "SIGKILL",
    "clone:none": "ok",  # a plain fork is no namespace clone
}
SCENARIOS = {
    "file_and_process": SCENARIO,
    "network": {"probes": list(NET_EXPECTED)},
    "signals": {
        "sleepers": [
            f"{GEN}/{name}" for name in ("sleeper", "sig-target", "a.bin", "ok/sleeper")
        ],
        "probes": list(SIGNAL_EXPECTED),
    },
    "listen_accept": {"probes": list(LISTEN_EXPECTED)},
    "creds": {"probes": list(CREDS_EXPECTED)},
    "file_names": {
        "files": [f"{NAMES}/{n}" for n in ("locked/a", "locked/b", "free/a")]
        + [f"{NAMES}/free/{n}" for n in "bcd"],
        "dirs": [f"{NAMES}/guarded"],
        "probes": list(NAMES_EXPECTED),
    },
    "memory": {
        "files": [f"{GEN}/jit/lib", f"{GEN}/other-lib"],
        "probes": list(WX_EXPECTED),
    },
    "namespace": {"probes": list(CLONE_EXPECTED)},
}


def _artifact_job(name: str, workdir: Path, loader: Path) -> vm.GuestCommand:
    built = artifact.build(_policy(name), workdir / "artifact")
    argv = [
        sys.executable,
        str(HERE / "guest_policy.py"),
        str(loader),
        str(built.directory),
    ]
    scenario = workdir / "scenario.json"
    scenario.write_text(json.dumps(SCENARIOS.get(name, {"probes": []})))
    # generous: every probe that changes credentials or signals starts a Python child,
    # seconds each under TCG on a loaded host
    return vm.GuestCommand(f"codegen_{name}", [*argv, str(scenario)], timeout=240)


def _policy(name: str) -> policies.Policy:
    if name in policies.ALL:
        return policies.ALL[name]
    policy, diags = load_policy([str(EXAMPLES / f"{name}.cap")])
    assert not [d for d in diags if d.is_error], diags
    return policy


for _name in [*policies.ALL, *EXAMPLE_NAMES]:
    guest_job(f"codegen_{_name}")(
        lambda workdir, loader, name=_name: _artifact_job(name, workdir, loader)
    )


def _events(result: vm.GuestResult) -> list[dict]:
    lines = [
        line.split()[1]
        for line in result.stdout.splitlines()
        if line.startswith("event ")
    ]
    return [schema.decode(bytes.fromhex(raw)) for raw in lines]


@pytest.mark.parametrize("name", sorted([*policies.ALL, *EXAMPLE_NAMES]))
def test_verifier_loads_and_attaches_every_generated_program(
    lsm_vm: vm.GuestRun, name: str
) -> None:
    result = lsm_vm.results[f"codegen_{name}"]
    assert "lsm_run: loaded" in result.stdout, result.stdout + result.stderr
    hooks = artifact.manifest(ir.lower(_policy(name)), "x86_64")["hooks"]
    assert hooks
    for hook in hooks:
        assert f"lsm_run: attached {hook['name']}" in result.stdout, result.stderr


def test_generated_policy_decides_in_the_kernel_as_written(lsm_vm: vm.GuestRun) -> None:
    result = lsm_vm.results["codegen_file_and_process"]
    assert probe_results(result) == {
        f"read:{GEN}/secret": "EPERM",  # deny literal
        f"write:{GEN}/secret": "EPERM",
        f"read:{GEN}/other": "ok",  # default allow
        f"read:{GEN}/private/x": "EPERM",  # deny prefix
        f"read:{GEN}/private/ok": "ok",  # priority 1 allow beats the prefix deny
        f"write:{GEN}/private/ok": "EPERM",  # the allow names read only
        f"read:{GEN}/ask/q": "EPERM",  # escalate enforces its fallback, deny
        "write:/etc/capsule-audit": "ok",  # audit allows
        f"exec:{GEN}/bin/tool": "EPERM",  # process exec deny
        f"exec:{GEN}/ok-tool": "ok",
        f"exec:{GEN}/kill-tool": "SIGKILL",  # kill denies and kills the caller
        f"read:{GEN}/a.key": "EPERM",  # glob, through the DFA
        f"read:{GEN}/a.keys": "ok",
        "read:/home/alice/.ssh/id": "EPERM",  # ~ is any home directory
        f"deep:{DEEP}": "EPERM",  # > PATH_MAX: read has a deny, fails closed
        # the walked path hooks, across the /run/capsule mount
        **{f"{op}:{GEN}/locked/{name}": "EPERM" for op, name in WALKED_PROBES},
        **{f"{op}:{GEN}/free/{name}": "ok" for op, name in WALKED_PROBES},
    }, result.stdout + result.stderr


PYLOAD = "/run/capsule/pyload"


@guest_job("codegen_libbpf_py")
def _libbpf_py_job(workdir: Path, loader: Path) -> vm.GuestCommand:
    # the same kind of artifact, loaded by the project's own ctypes binding
    deny = policies.rule(1, "deny", "file", {"read"}, f"{PYLOAD}/secret")
    built = artifact.build(policies.Policy((deny,)), workdir / "artifact")
    script = str(HERE / "guest_libbpf_py.py")
    probes = [f"read:{PYLOAD}/secret", f"read:{PYLOAD}/other"]
    argv = [sys.executable, script, str(built.directory), *probes]
    return vm.GuestCommand("codegen_libbpf_py", argv, timeout=120)


def test_artifact_loads_through_capsule_runtime_libbpf(lsm_vm: vm.GuestRun) -> None:
    result = lsm_vm.results["codegen_libbpf_py"]
    assert '{"attached": 1}' in result.stdout, result.stdout + result.stderr
    assert probe_results(result) == {
        f"read:{PYLOAD}/secret": "EPERM",
        f"read:{PYLOAD}/other": "ok",
    }


def test_generated_network_policy_decides_in_the_kernel_as_written(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_network"]
    assert probe_results(result) == NET_EXPECTED, result.stdout + result.stderr
    events = _events(result)
    denied = {
        (e["op"], e["addr"], e["port"])
        for e in events
        if "DENIED" in schema.flag_names(e["flags"])
    }
    assert ("connect", "127.0.0.2", 1500) in denied
    assert ("bind", "127.0.0.1", 80) in denied
    assert ("send", "127.0.0.3", 9) in denied


def test_generated_signal_policy_decides_in_the_kernel_as_written(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_signals"]
    assert probe_results(result) == SIGNAL_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e["sig"], frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    assert ("send", 10, frozenset({"DENIED"})) in seen
    assert ("send", 15, frozenset({"DENIED"})) in seen
    assert ("send", 1, frozenset({"DENIED", "KILLED"})) in seen


def test_generated_listen_and_accept_policy_decides_in_the_kernel_as_written(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_listen_accept"]
    assert probe_results(result) == LISTEN_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e["addr"], e["port"], frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    assert ("listen", "127.0.0.1", 7001, frozenset({"DENIED"})) in seen
    assert ("listen", "::1", 7002, frozenset({"DENIED"})) in seen
    assert ("listen", "127.0.0.1", 7101, frozenset({"AUDIT"})) in seen
    assert any(op == "accept" and "DENIED" in flags for op, _, _, flags in seen)


def test_generated_creds_policy_decides_in_the_kernel_as_written(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_creds"]
    assert probe_results(result) == CREDS_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e["new_uid"], e["new_gid"], frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    assert ("setuid", 1000, 0, frozenset({"DENIED"})) in seen
    assert ("setuid", 3000, 0, frozenset({"AUDIT"})) in seen
    assert ("setuid", 4242, 0, frozenset({"DENIED", "KILLED"})) in seen
    assert ("setgid", 0, 2000, frozenset({"DENIED"})) in seen
    assert any(op == "capset" and "DENIED" in flags for op, _, _, flags in seen)


def test_generated_rename_link_symlink_policy_decides_on_both_names(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_file_names"]
    assert probe_results(result) == NAMES_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e["path"], e["new_path"], frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    denied = frozenset({"DENIED"})
    assert ("rename", f"{NAMES}/locked/a", f"{NAMES}/free/x", denied) in seen
    assert ("link", f"{NAMES}/free/d", f"{NAMES}/guarded/l2", denied) in seen
    assert ("symlink", f"{NAMES}/secret", f"{NAMES}/free/s1", denied) in seen


def test_generated_memory_policy_denies_writable_executable_mappings(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_memory"]
    assert probe_results(result) == WX_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e.get("path") or "", frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    assert ("wx", "", frozenset({"DENIED"})) in seen
    assert ("wx", f"{GEN}/other-lib", frozenset({"DENIED"})) in seen


def test_generated_namespace_policy_decides_clone_per_kind(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["codegen_namespace"]
    assert probe_results(result) == CLONE_EXPECTED, result.stdout + result.stderr
    seen = {
        (e["op"], e["clone_flags"] & NS_FLAGS, frozenset(schema.flag_names(e["flags"])))
        for e in _events(result)
    }
    assert ("clone", 0x40000000, frozenset({"DENIED"})) in seen  # CLONE_NEWNET
    assert ("clone", 0x04000000, frozenset({"AUDIT"})) in seen  # CLONE_NEWUTS


def test_generated_policy_reports_each_decision_as_an_event(
    lsm_vm: vm.GuestRun,
) -> None:
    events = _events(lsm_vm.results["codegen_file_and_process"])
    seen = {
        (
            e["op"],
            e.get("path") or e.get("exe_path"),
            frozenset(schema.flag_names(e["flags"])),
        )
        for e in events
    }
    assert ("read", f"{GEN}/secret", frozenset({"DENIED"})) in seen
    assert ("write", "/etc/capsule-audit", frozenset({"AUDIT"})) in seen
    assert ("read", f"{GEN}/ask/q", frozenset({"AUDIT", "DENIED"})) in seen
    assert ("exec", f"{GEN}/bin/tool", frozenset({"DENIED"})) in seen
    assert ("delete", f"{GEN}/locked/f", frozenset({"DENIED"})) in seen
    assert ("mkdir", f"{GEN}/locked/d", frozenset({"DENIED"})) in seen
    truncated = [e for e in events if "TRUNCATED" in schema.flag_names(e["flags"])]
    assert truncated and "DENIED" in schema.flag_names(truncated[0]["flags"])
