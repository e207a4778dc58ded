"""`capsule ml classify|eval` as a user runs them: output, exit codes, errors."""

import json
import subprocess
import sys

import pytest

from capsule.cli import exitcodes


def capsule(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-c", "from capsule.cli.main import run; run()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_classify_a_held_out_attack_window(tmp_path, adfa_traces):
    attack = next(t for t in adfa_traces if t.split == "test" and t.label == 1)
    window = tmp_path / "w.json"
    window.write_text(json.dumps({"syscalls": list(attack.syscalls)}))
    done = capsule("ml", "classify", str(window))
    assert done.returncode == exitcodes.OK, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["verdict"] == "risky" and verdict["score"] > 0.5
    assert verdict["top_features"][0][0].startswith("ngram:")


BAD_INPUT = [
    ("{not json", "failed to read stdin: Expecting property name"),
    ("[1, 2]", "failed to read stdin: expected a JSON object"),
    ('{"syscalls": [11]}', "failed to read stdin: syscalls must be names (strings)"),
    (
        '{"events": [{"area": "file", "op": "read"}]}',
        "failed to classify window: the model reads syscalls and the window has none",
    ),
]


@pytest.mark.parametrize("text, message", BAD_INPUT)
def test_bad_window_is_one_line_error(text, message):
    done = capsule("ml", "classify", "--model", "adfa-syscalls", "-", stdin=text)
    assert done.returncode == exitcodes.CAPSULE_FAILED
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"capsule: error: {message}")
    assert "Traceback" not in done.stderr


def test_unknown_model_kind_is_refused():
    done = capsule("ml", "eval", "--only", "both")
    assert done.returncode == exitcodes.CAPSULE_FAILED
    assert "failed to parse --only 'both': expected adfa, events or all" in done.stderr


@pytest.mark.slow
def test_eval_reports_held_out_adfa_figures(adfa_dir):
    done = capsule("ml", "eval", "--only", "adfa", "--json", "--data", str(adfa_dir))
    assert done.returncode == exitcodes.OK, done.stderr
    report = json.loads(done.stdout)["adfa"]
    test = report["splits"]["test"]
    assert report["data_matches_training"] == {"val": True, "test": True}
    assert test["roc_auc"] >= 0.95
    assert test["traces"] == test["tp"] + test["fp"] + test["fn"] + test["tn"]
