"""The ONNX export computes what scikit-learn computes."""

import numpy as np
import pytest

from capsule.ml import train
from capsule.ml.features import FeatureSpec, Window

pytest.importorskip("sklearn", reason="training extras not installed")
ort = pytest.importorskip("onnxruntime")


def test_onnx_and_sklearn_agree(adfa_traces):
    sample = [t for t in adfa_traces if t.split == "train"][::10]
    spec = FeatureSpec.fit((list(t.syscalls) for t in sample), "syscalls", 3, 500, 2)
    rows = np.stack([spec.vectorize(Window(syscalls=t.syscalls)) for t in sample])
    labels = np.array([t.label for t in sample])
    model = train.fit_model(rows, labels)
    session = ort.InferenceSession(
        train.export_onnx(model, rows.shape[1]), providers=["CPUExecutionProvider"]
    )
    probs, contributions = session.run(
        ["probabilities", "contributions"], {"features": rows}
    )
    np.testing.assert_allclose(probs, model.predict_proba(rows), atol=1e-5)
    np.testing.assert_allclose(
        contributions, rows * model.coef_[0], rtol=1e-5, atol=1e-6
    )


def test_export_is_reproducible(adfa_traces):
    sample = [t for t in adfa_traces if t.split == "train"][::20]
    spec = FeatureSpec.fit((list(t.syscalls) for t in sample), "syscalls", 2, 200, 2)
    rows = np.stack([spec.vectorize(Window(syscalls=t.syscalls)) for t in sample])
    labels = np.array([t.label for t in sample])
    first = train.export_onnx(train.fit_model(rows, labels), rows.shape[1])
    second = train.export_onnx(train.fit_model(rows, labels), rows.shape[1])
    assert first == second
