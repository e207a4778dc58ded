"""The shipped model loads, refuses damaged files, and scores the right way round."""

import json
import shutil

import numpy as np
import pytest

from capsule.errors import CapsuleError
from capsule.ml.features import Window
from capsule.ml.model import MODELS_DIR, Classifier, model_paths


def test_shipped_model_loads_and_fits_in_the_package(classifier):
    onnx_path, _ = model_paths()
    assert onnx_path.stat().st_size <= 5 * 1024 * 1024
    assert len(classifier.feature_names) == len(classifier.spec.vocabulary)
    assert 0.0 < classifier.threshold < 1.0


def _copy_model(tmp_path):
    for suffix in (".onnx", ".json"):
        shutil.copy(MODELS_DIR / f"adfa-syscalls{suffix}", tmp_path / f"m{suffix}")
    return tmp_path / "m.onnx"


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _garbage_with_matching_checksum(path):
    # a file that passes the checksum but is not ONNX: onnxruntime must reject it
    import hashlib

    path.write_bytes(b"not a model at all")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["onnx_sha256"] = hashlib.sha256(b"not a model at all").hexdigest()
    meta_path.write_text(json.dumps(meta))


def _bad_metadata(path):
    path.with_suffix(".json").write_text("{not json")


def _wrong_width(path):
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["features"]["vocabulary"] = meta["features"]["vocabulary"][:10]
    meta_path.write_text(json.dumps(meta))


DAMAGE = [
    (lambda p: p.unlink(), "m.onnx: file not found"),
    (lambda p: p.with_suffix(".json").unlink(), "m.json: file not found"),
    (_truncate, "checksum does not match its metadata"),
    (_garbage_with_matching_checksum, "failed to load model"),
    (_bad_metadata, "failed to load model metadata"),
    (_wrong_width, "do not match the metadata (3000 columns, 10 expected)"),
]


@pytest.mark.parametrize("damage, message", DAMAGE)
def test_damaged_model_is_a_clear_error(tmp_path, damage, message):
    path = _copy_model(tmp_path)
    damage(path)
    with pytest.raises(CapsuleError) as err:
        Classifier(path)
    assert err.value.message.startswith("failed to load model")
    assert message in err.value.message
    assert "\n" not in err.value.message
    assert "capsule ml train" in err.value.hint


def test_an_intact_copy_loads(tmp_path):
    assert Classifier(_copy_model(tmp_path)).threshold > 0


def _held_out(traces, label, count):
    # real traces of the test split, which training never saw
    chosen = [t for t in traces if t.split == "test" and t.label == label]
    step = max(1, len(chosen) // count)
    return chosen[::step][:count]


def test_held_out_traces_score_in_the_expected_direction(classifier, adfa_traces):
    normal = [
        classifier.classify(Window(syscalls=t.syscalls))
        for t in _held_out(adfa_traces, 0, 20)
    ]
    attacks = [
        classifier.classify(Window(syscalls=t.syscalls))
        for t in _held_out(adfa_traces, 1, 20)
    ]
    assert np.median([v.score for v in attacks]) > 0.9
    assert np.median([v.score for v in normal]) < 0.1
    assert sum(v.risky for v in attacks) >= 14
    assert sum(v.risky for v in normal) <= 2


def test_verdict_names_the_features_that_weighed_most(classifier, adfa_traces):
    attack = _held_out(adfa_traces, 1, 1)[0]
    verdict = classifier.classify(Window(syscalls=attack.syscalls))
    names = [name for name, _ in verdict.top_features]
    weights = [abs(w) for _, w in verdict.top_features]
    assert 1 <= len(names) <= 5 and all(n.startswith("ngram:") for n in names)
    assert weights == sorted(weights, reverse=True)
    assert verdict.latency_ms > 0
    assert verdict.to_dict()["verdict"] in ("risky", "harmless")


def test_contributions_add_up_to_the_score(classifier):
    # the logit is the sum of the contributions plus the intercept, for any two windows
    def logit(p):
        return np.log(p / (1 - p))

    a = Window(syscalls=("read", "write", "close") * 30)
    b = Window(syscalls=("open", "mmap2", "execve") * 30)
    rows = np.stack([classifier.spec.vectorize(a), classifier.spec.vectorize(b)])
    probs, contributions = classifier._session.run(
        ["probabilities", "contributions"], {"features": rows}
    )
    intercepts = logit(probs[:, 1]) - contributions.sum(axis=1)
    assert intercepts[0] == pytest.approx(intercepts[1], abs=1e-3)


def test_events_window_is_refused_by_a_syscall_model(classifier):
    window = Window(events=({"area": "file", "op": "read", "path": "/etc/passwd"},))
    with pytest.raises(CapsuleError, match="reads syscalls and the window has none"):
        classifier.classify(window)
