"""The decision and enforce benchmarks measure what they say: the generated policies
check cleanly with the probes' rules in every size, and the auditd and bpftrace
comparisons get the coding-agent policy's file paths."""

import sys
from pathlib import Path

import pytest

from capsule.lang.loader import load_source

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ belongs to the repository, not the venv
from benchmarks import bench_decision, comparisons  # noqa: E402


@pytest.mark.parametrize("size", [10, 300])
def test_generated_policy_checks_cleanly_with_the_probed_rules(size: int) -> None:
    policy, diags = load_source(bench_decision.generate(size), "bench.cap")
    assert [d.message for d in diags if d.is_error] == []
    assert len(policy.rules) == size
    paths = [rule.objects[0]["path"].text for rule in policy.rules]
    assert paths[:2] == [
        bench_decision.PROBES["exact-deny"],
        bench_decision.PROBES["prefix-deny"].removesuffix("deep/file") + "**",
    ]
    assert len(set(paths)) == size  # distinct paths: every rule is its own entry


def test_comparisons_watch_every_file_rule_path_of_the_coding_agent() -> None:
    paths = comparisons.file_rule_paths(ROOT / "examples/policies/coding-agent.cap")
    assert paths[:2] == ["/work/agent/", "/tmp/"]
    assert "/root/.ssh/" in paths and "/dev/pts/" in paths  # ~ expanded, ** dropped
    assert not [p for p in paths if "~" in p or "*" in p]
    script = comparisons.bpftrace_script(paths)
    assert script.count("strncmp(") == len(paths)
    assert '/strncmp(str(args->filename), "/tmp/", 5) == 0/' in script
