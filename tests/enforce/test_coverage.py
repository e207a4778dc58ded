"""The coverage report: for each kind of rule, the mechanism or "audit only"."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsule.lang import load_policy
from capsule.runtime.compat.plan import Options, build_plan

# (rule, status, mechanism, a word the note must hold)
TABLE = [
    ("deny file read /tmp/cov-x/", "enforced", "landlock", "over-approximates"),
    ("deny file write,truncate /etc/**", "enforced", "landlock", ""),
    (
        "deny file create,delete,rename,link,symlink,mkdir,rmdir /etc/**",
        "enforced",
        "landlock",
        "",
    ),
    ("deny file exec /usr/bin/curl", "enforced", "landlock", ""),
    ("deny process exec /usr/bin/wget", "enforced", "landlock", ""),
    ("deny file read /**/.env", "audit only", "", "'**' inside a pattern"),
    (
        "deny file read /tmp/x when exe /usr/bin/cat",
        "audit only",
        "",
        "cannot tell processes apart",
    ),
    (
        "deny file chmod,chown /etc/**",
        "partial",
        "seccomp notification",
        "resolved by the supervisor",
    ),
    (
        "deny file read,chmod /etc/shadow",
        "partial",
        "landlock, seccomp notification",
        "symlink swap",
    ),
    ("deny process exec,fork /usr/bin/x", "partial", "landlock", "not fork"),
    ("kill file read /tmp/cov-y", "enforced", "landlock", "SIGKILL"),
    (
        "deny network connect addr 10.0.0.0/8",
        "enforced",
        "cgroup sock_addr connect",
        "",
    ),
    (
        "deny network send addr 10.0.0.1 port 53 protocol udp",
        "enforced",
        "cgroup sock_addr send",
        "",
    ),
    ("deny network bind port 22", "enforced", "cgroup sock_addr bind", ""),
    ("deny network listen", "audit only", "", "no compat mechanism"),
    ("deny ipc unix-connect", "partial", "landlock scope", "abstract sockets"),
    ("deny ipc unix-connect path /run/x.sock", "audit only", "", "no compat"),
    (
        "deny network connect addr 10.0.0.0/8 when exe /usr/bin/curl",
        "audit only",
        "",
        "subject conditions",
    ),
    ("deny network connect port 1-65535", "audit only", "", "port range wider"),
    ("deny system mount", "enforced", "seccomp notification", "new mount API"),
    ("deny system umount,chroot,pivot-root", "enforced", "seccomp notification", ""),
    ("deny ipc ptrace", "enforced", "seccomp notification", ""),
    ("deny namespace unshare,setns,clone", "enforced", "seccomp notification", ""),
    ("deny creds setuid,setgid,capset", "enforced", "seccomp notification", ""),
    ("deny creds setid-exec", "partial", "no_new_privs", "without gaining"),
    ("deny memory wx,memfd,module-load,bpf", "enforced", "seccomp notification", ""),
    ("deny memory fileless-exec", "partial", "seccomp notification", "another thread"),
    ("deny signal send", "enforced", "seccomp notification", ""),
    ("deny device open dev 1:1", "enforced", "cgroup device", ""),
    ("deny device open path /dev/kvm", "audit only", "", "not paths"),
    ("deny system persist", "audit only", "", "no compat mechanism"),
    ("deny namespace cgroup-move", "enforced", "read-only /sys/fs/cgroup", ""),
    ("deny process fork", "audit only", "", "no compat mechanism"),
    ("audit namespace unshare", "observed", "seccomp notification", ""),
    ("audit network connect port 443", "observed", "cgroup sock_addr connect", ""),
    ("audit file read /etc/**", "audit only", "", "nothing observes"),
    ("allow file read /etc/**", "nothing to enforce", "", ""),
]


@pytest.mark.parametrize("rule,status,mechanism,note", TABLE, ids=[t[0] for t in TABLE])
def test_coverage_line(tmp_path, rule, status, mechanism, note):
    path = tmp_path / "p.cap"
    path.write_text(rule + "\n")
    policy, diagnostics = load_policy([str(path)])
    assert not [d for d in diagnostics if d.is_error], diagnostics
    (tmp_path / "cov").mkdir()
    plan = build_plan(policy, Options(protected=[str(path)], abi=7, cgroup=True))
    line = plan.report.lines[0]
    assert (line.status, line.mechanism) == (status, mechanism), line
    assert note in line.note
    assert line.ref == f"{path}:1"


def test_require_full_sees_only_blocking_audit_only_lines(tmp_path):
    path = tmp_path / "p.cap"
    path.write_text("deny process fork\naudit file read /etc/**\ndeny system mount\n")
    policy, _ = load_policy([str(path)])
    report = build_plan(policy, Options(abi=7)).report
    assert [line.ref for line in report.audit_only_denials()] == [f"{path}:1"]


def test_without_landlock_file_rules_are_audit_only(tmp_path):
    path = tmp_path / "p.cap"
    path.write_text("deny file read /etc/shadow\n")
    policy, _ = load_policy([str(path)])
    line = build_plan(policy, Options(abi=0)).report.lines[0]
    assert line.status == "audit only" and "Landlock is not available" in line.note


def test_verbose_report_names_every_clause_and_the_protection(tmp_path):
    path = tmp_path / "p.cap"
    path.write_text("deny system mount\ndeny process fork\n")
    policy, _ = load_policy([str(path)])
    report = build_plan(policy, Options(protected=[str(path)], abi=7)).report
    text = report.render(verbose=True)
    assert text.splitlines()[0].startswith("enforcement coverage (backend compat")
    assert f"{path}:1" in text and f"{path}:2" in text
    assert "audit only -- fork: no compat mechanism" in text
    assert "bpf() fails with EPERM" in text and str(path) in text


ROOT = Path(__file__).resolve().parents[2]
CODING_AGENT = ROOT / "examples" / "policies" / "coding-agent.cap"


@pytest.fixture(scope="module")
def coding_agent():
    policy, _ = load_policy([str(CODING_AGENT)])
    options = Options(protected=[str(CODING_AGENT)], abi=7, cgroup=True)
    return build_plan(policy, options).report


def test_default_report_is_one_line_per_rule(coding_agent):
    text = coding_agent.render()
    lines = text.splitlines()
    refs = list(dict.fromkeys(line.ref for line in coding_agent.lines))
    rule_lines = [line for line in lines if "coding-agent.cap:" in line]
    assert len(rule_lines) == len(refs) == 20
    assert len(lines) <= 45, text  # one clause a line was 70 and more
    for ref, line in zip(refs, rule_lines):
        assert line.split()[0] == ref  # as the timeline names the rule
    kill = next(line for line in rule_lines if line.split()[0].endswith(":26"))
    assert kill.split()[1:4] == ["kill", "file", "*"] and "(12 objects)" in kill
    assert "partial (landlock, seccomp notification) [" in kill
    persist = next(line for line in rule_lines if line.split()[0].endswith(":52"))
    assert persist.split()[1:6] == ["audit", "system", "persist", "audit", "only"]


def test_default_report_gives_each_note_once(coding_agent):
    lines = coding_agent.render().splitlines()
    notes = [line for line in lines if line.startswith("  [")]
    texts = [line.split("] ", 1)[1] for line in notes]
    assert len(texts) == len(set(texts)) and texts
    assert any("kill: the runtime sends SIGKILL" in t for t in texts)
    # every mark on a rule line is a note below
    marks = set()
    for line in lines:
        if "coding-agent.cap:" in line and line.endswith("]"):
            marks |= {int(n) for n in line.rsplit("[", 1)[1][:-1].split(",")}
    assert marks == set(range(1, len(notes) + 1))


def test_verbose_report_and_json_keep_every_clause(coding_agent):
    verbose = coding_agent.render(verbose=True)
    clauses = [line for line in verbose.splitlines() if "coding-agent.cap:" in line]
    assert len(clauses) == len(coding_agent.lines) > 60
    assert "CAP_PERFMON" in verbose  # lists are not cut
    data = coding_agent.to_json()
    assert len(data["rules"]) == len(coding_agent.lines)
    notes = [rule["note"] for rule in data["rules"]]
    assert notes == [line.note for line in coding_agent.lines]
