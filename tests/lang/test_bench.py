"""The parse benchmark's generated policy stays valid, so the benchmark measures a
policy that checks cleanly."""

import importlib.util
from pathlib import Path

from capsule.lang.loader import load_source

# benchmarks/ is not a package on the test path: load the module from its file
_PATH = Path(__file__).parents[2] / "benchmarks" / "bench_parse.py"
_SPEC = importlib.util.spec_from_file_location("bench_parse", _PATH)
bench_parse = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_parse)
generate = bench_parse.generate


def test_generated_policy_checks_without_findings():
    policy, diags = load_source(generate(300), "bench.cap")
    assert [f"{d.location}: {d.message}" for d in diags] == []
    assert len(policy.rules) == 300
    assert {r.area for r in policy.rules} == {
        "file", "network", "process", "creds", "signal", "namespace", "device",
        "system", "memory", "ipc",
    }  # fmt: skip


def test_generation_is_deterministic():
    assert generate(50) == generate(50)
