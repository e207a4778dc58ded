"""Load the shipped escalation model and classify windows with onnxruntime on the CPU.

A model is two files in capsule/ml/models/: NAME.onnx and NAME.json (feature spec,
threshold, data hashes, the .onnx file's sha256). A missing, truncated or altered file
is a CapsuleError when the model is loaded, so that enforcement fails at start-up
instead of treating every escalation as harmless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsule.errors import CapsuleError
from capsule.ml.features import FeatureSpec, Window

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).with_name("models")
DEFAULT_MODEL = "adfa-syscalls"
EVENTS_MODEL = "agent-events"
TOP_FEATURES = 5
_HINT = "reinstall capsule, or rebuild the model with `capsule ml train`"


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one escalation."""

    risky: bool
    score: float  # probability of "risky", 0..1
    latency_ms: float  # features + inference, as the caller waited
    top_features: tuple[tuple[str, float], ...]  # (name, contribution to the logit)

    def to_dict(self) -> dict:
        return {
            "verdict": "risky" if self.risky else "harmless",
            "score": round(self.score, 4),
            "latency_ms": round(self.latency_ms, 3),
            "top_features": [[name, round(w, 3)] for name, w in self.top_features],
        }


def model_paths(name_or_path: str | Path = DEFAULT_MODEL) -> tuple[Path, Path]:
    """(onnx, metadata) for a model name in MODELS_DIR or a path to a .onnx file."""
    path = Path(name_or_path)
    if path.suffix != ".onnx":
        path = MODELS_DIR / f"{name_or_path}.onnx"
    return path, path.with_suffix(".json")


def _read_metadata(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CapsuleError(
            f"failed to load model metadata {path}: file not found", hint=_HINT
        ) from err
    except (OSError, ValueError) as err:
        raise CapsuleError(
            f"failed to load model metadata {path}: {err}", hint=_HINT
        ) from err
    for key in ("onnx_sha256", "threshold", "features"):
        if key not in meta:
            raise CapsuleError(
                f"failed to load model metadata {path}: no {key!r}", hint=_HINT
            )
    return meta


def _read_onnx(path: Path, expected_sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise CapsuleError(
            f"failed to load model {path}: file not found", hint=_HINT
        ) from err
    except OSError as err:
        raise CapsuleError(
            f"failed to load model {path}: {err.strerror}", hint=_HINT
        ) from err
    # the checksum catches a damaged file that onnxruntime might still parse
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CapsuleError(
            f"failed to load model {path}: checksum does not match "
            f"its metadata (corrupted or replaced)",
            hint=_HINT,
        )
    return data


def _session(data: bytes, path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    # one thread: an escalation is a single row, and threads only add jitter
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CapsuleError(f"failed to load model {path}: {first}", hint=_HINT) from err


class Classifier:
    """An escalation classifier: features from FeatureSpec, scores from ONNX."""

    def __init__(self, name_or_path: str | Path = DEFAULT_MODEL) -> None:
        self.path, meta_path = model_paths(name_or_path)
        self.meta = _read_metadata(meta_path)
        self.spec = FeatureSpec.from_dict(self.meta["features"])
        self.threshold = float(self.meta["threshold"])
        self.feature_names = self.spec.names()
        self._session = _session(
            _read_onnx(self.path, self.meta["onnx_sha256"]), self.path
        )
        self._check_signature()
        log.debug(
            "loaded escalation model %s (%d features, threshold %.3f)",
            self.path.name,
            len(self.feature_names),
            self.threshold,
        )

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = {o.name for o in self._session.get_outputs()}
        width = inputs[0].shape[-1] if inputs else None
        if (
            width != len(self.feature_names)
            or not {"probabilities", "contributions"} <= outputs
        ):
            raise CapsuleError(
                f"failed to load model {self.path}: its inputs or outputs do not match "
                f"the metadata ({width} columns, {len(self.feature_names)} expected)",
                hint=_HINT,
            )
        self._input = inputs[0].name

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """P(risky) for each feature row."""
        (probabilities,) = self._session.run(["probabilities"], {self._input: rows})
        return probabilities[:, 1]

    def classify(self, window: Window) -> Verdict:
        """Score one window; risky when the score reaches the threshold."""
        start = time.perf_counter()
        row = self.spec.vectorize(window)[None, :]
        probabilities, contributions = self._session.run(
            ["probabilities", "contributions"], {self._input: row}
        )
        score = float(probabilities[0, 1])
        latency_ms = (time.perf_counter() - start) * 1000.0
        return Verdict(
            score >= self.threshold, score, latency_ms, self._top(contributions[0])
        )

    def _top(self, contributions: np.ndarray) -> tuple[tuple[str, float], ...]:
        order = np.argsort(-np.abs(contributions))[:TOP_FEATURES]
        return tuple(
            (self.feature_names[i], float(contributions[i]))
            for i in order
            if contributions[i] != 0.0
        )


def load_classifier(name_or_path: str | Path = DEFAULT_MODEL) -> Classifier:
    """Load a shipped model by name or a .onnx file; CapsuleError if unusable."""
    return Classifier(name_or_path)


class Escalation:
    """Both shipped models: a window goes to the one that reads its kind of tokens.

    Loading fails (CapsuleError) if either model is missing or damaged, so that a
    policy with escalate rules cannot start with half a classifier.
    """

    def __init__(
        self, syscalls: str | Path = DEFAULT_MODEL, events: str | Path = EVENTS_MODEL
    ) -> None:
        self.syscalls = Classifier(syscalls)
        self.events = Classifier(events)

    def classify(self, window: Window) -> Verdict:
        chosen = self.syscalls if window.syscalls else self.events
        return chosen.classify(window)
