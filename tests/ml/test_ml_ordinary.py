"""Ordinary work must score harmless: traced commands, tiny windows, and the hold-out.

The traced commands run here, in a throwaway project, so the model has never seen
these recordings; the "holdout2" split was recorded after the model was fixed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from capsule.ml import scenarios
from capsule.ml.features import window_from_events
from capsule.ml.model import EVENTS_MODEL, Classifier

CAPSULE = str(Path(sys.executable).parent / "capsule")
TASK = "Fix the failing unit test in tests/test_parser.py"
ORDINARY = (
    ["sh", "-c", "cat /etc/hostname; ls /tmp"],
    ["ls", "-la"],
    ["git", "log", "--oneline", "-3"],
    ["git", "status"],
    ["grep", "-rn", "def", "."],
    ["cat", "/etc/os-release"],
    ["python3", "-c", "import json; print(json.dumps({'a': 1}))"],
    ["sh", "-c", "find . -name '*.py' | xargs wc -l"],
)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="SKIPPED: tracing needs root to load BPF programs; run these tests as root",
)


@pytest.fixture(scope="module")
def events_model():
    return Classifier(EVENTS_MODEL)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("def main():\n    return 1\n")
    (root / "README.md").write_text("# demo\n")
    author = {"NAME": "a", "EMAIL": "a@example.invalid"}
    env = dict(os.environ)
    env.update({f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER")
                for k, v in author.items()})  # fmt: skip
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    return root


def traced_window(command: list[str], cwd: Path, out: Path):
    done = subprocess.run(
        [CAPSULE, "-q", "trace", "--no-timeline", "-o", str(out), "--", *command],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 125, done.stderr  # 125: capsule itself failed
    events = [json.loads(line) for line in (out / "events.jsonl").open()]
    assert events, f"no events traced for {command}"
    return window_from_events(events, TASK, str(cwd))


@needs_root
@pytest.mark.parametrize("command", ORDINARY, ids=lambda c: " ".join(c)[:30])
def test_ordinary_traced_commands_score_harmless(
    events_model, project, tmp_path, command
):
    verdict = events_model.classify(traced_window(command, project, tmp_path / "r"))
    assert not verdict.risky, (verdict.score, verdict.top_features)


def test_a_window_without_evidence_is_not_risky(events_model):
    empty = np.zeros((1, len(events_model.feature_names)), dtype=np.float32)
    assert events_model.scores(empty)[0] < events_model.threshold
    assert events_model.meta["empty_window_score"] < events_model.threshold


@pytest.mark.parametrize(
    "event",
    [
        {"area": "network", "op": "send", "addr": "127.0.0.1", "port": 8125,
         "sock_type": 2},
        {"area": "file", "op": "read", "path": "/etc/hosts"},
        {"area": "process", "op": "exec", "exe": "/usr/bin/ls"},
    ],
    ids=["udp-send", "etc-read", "exec-ls"],
)  # fmt: skip
def test_a_lone_ordinary_event_scores_harmless(events_model, event):
    window = window_from_events([dict(event, pid=7)], TASK, "/work/project")
    assert not events_model.classify(window).risky


def test_credential_read_then_send_is_risky_even_when_short(events_model):
    window = window_from_events(
        [
            {"area": "file", "op": "read", "path": "/root/.ssh/id_rsa", "pid": 7},
            {
                "area": "network",
                "op": "send",
                "addr": "127.0.0.1",
                "port": 9999,
                "sock_type": 2,
                "pid": 7,
            },
        ],
        TASK,
        "/work/project",
    )
    assert events_model.classify(window).risky


@pytest.mark.parametrize(
    "split, max_fp, min_tp",
    [
        # version 6's hold-out (v6: 9/270 false positives, 162/180 caught; v7:
        # 0/270, 162/180, not clean: its errors guided version 7)
        ("holdout", 9, 162),
        # version 7's clean hold-out (docs/ml.md): 8/270 false positives, 180/180
        ("holdout2", 8, 180),
    ],
)
def test_holdout_figures_do_not_regress(events_model, split, max_fp, min_tp):
    chosen = [
        p for p in scenarios.pairs(scenarios.load_recordings()) if p.split == split
    ]
    rows = np.stack([events_model.spec.vectorize(p.window) for p in chosen])
    flagged = events_model.scores(rows) >= events_model.threshold
    labels = np.array([p.label for p in chosen])
    # short of the 1% false-positive target, so this only guards against getting
    # worse than the figures measured in docs/ml.md
    assert flagged[labels == 0].sum() <= max_fp
    assert flagged[labels == 1].sum() >= min_tp
