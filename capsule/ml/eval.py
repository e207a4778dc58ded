"""Evaluate a shipped model on the held-out splits: ROC-AUC and precision/recall.

Only numpy and onnxruntime are needed, so `capsule ml eval` runs without the training
extras. The scores come from the same ONNX session that enforcement uses.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from capsule.ml import adfa
from capsule.ml.features import Window
from capsule.ml.model import DEFAULT_MODEL, EVENTS_MODEL, Classifier

log = logging.getLogger(__name__)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None if one class."""
    labels = np.asarray(labels)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([positives, negatives])
    for value in np.unique(values):  # average ranks of tied scores
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    rank_sum = ranks[: len(positives)].sum()
    u = rank_sum - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(positives) * len(negatives)))


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Confusion counts, precision, recall and false-positive rate at a threshold."""
    flagged = scores >= threshold
    tp = int(np.sum(flagged & (labels == 1)))
    fp = int(np.sum(flagged & (labels == 0)))
    positives, negatives = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    return {
        "tp": tp,
        "fp": fp,
        "fn": positives - tp,
        "tn": negatives - fp,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / positives if positives else None,
        "fpr": fp / negatives if negatives else None,
    }


def threshold_for_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold that flags at most max_fpr of the negatives."""
    negatives = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(max_fpr * len(negatives)))
    if allowed >= len(negatives):
        return float(negatives[-1])
    # just above the first negative that must not be flagged
    return float(np.nextafter(np.float32(negatives[allowed]), np.float32(2.0)))


def split_report(labels, scores, families, threshold: float) -> dict:
    """Metrics of one split, with recall per attack family."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    report = {
        "traces": len(labels),
        "attacks": int(labels.sum()),
        "roc_auc": roc_auc(labels, scores),
        **at_threshold(labels, scores, threshold),
    }
    per_family = defaultdict(list)
    for family, label, score in zip(families, labels, scores):
        if label == 1:
            per_family[family].append(score >= threshold)
    report["recall_by_family"] = {
        f: float(np.mean(v)) for f, v in sorted(per_family.items())
    }
    flagged = defaultdict(int)
    for group, label, score in zip(families, labels, scores):
        if label == 0 and score >= threshold:
            flagged[group] += 1
    report["false_positives_by_group"] = dict(sorted(flagged.items()))
    return report


def score_traces(classifier: Classifier, traces: list[adfa.Trace]) -> np.ndarray:
    rows = np.stack(
        [classifier.spec.vectorize(Window(syscalls=t.syscalls)) for t in traces]
    )
    return classifier.scores(rows)


def evaluate(
    data_dir: Path | None = None,
    model: str | Path = DEFAULT_MODEL,
    splits: tuple[str, ...] = ("val", "test"),
) -> dict:
    """Score the ADFA-LD model on held-out splits; warn if the data changed."""
    classifier = Classifier(model)
    root = Path(data_dir or adfa.default_data_dir())
    traces = adfa.load(root)
    labelled = {
        split: ([t.label for t in chosen], score_traces(classifier, chosen), chosen)
        for split in splits
        for chosen in [[t for t in traces if t.split == split]]
    }
    groups = {s: [t.family for t in v[2]] for s, v in labelled.items()}
    return _report(classifier, root, labelled, groups, adfa.split_hashes(root, traces))


def evaluate_events(
    recordings_dir: Path | None = None,
    model: str | Path = EVENTS_MODEL,
    splits: tuple[str, ...] = ("val", "test", "fresh", "holdout", "holdout2"),
) -> dict:
    """Score the agent-scenario model on its held-out (variant, task) pairs."""
    from capsule.ml import scenarios
    from capsule.ml.train import scenario_hashes

    classifier = Classifier(model)
    root = Path(recordings_dir or scenarios.RECORDINGS_DIR)
    all_pairs = scenarios.pairs(scenarios.load_recordings(root))
    labelled = {}
    for split in splits:
        chosen = [p for p in all_pairs if p.split == split]
        if not chosen:  # not recorded (yet)
            continue
        rows = np.stack([classifier.spec.vectorize(p.window) for p in chosen])
        labelled[split] = ([p.label for p in chosen], classifier.scores(rows), chosen)
    groups = {
        s: [f"{p.scenario}{'' if p.label else ' (harmless)'}" for p in v[2]]
        for s, v in labelled.items()
    }
    return _report(classifier, root, labelled, groups, scenario_hashes(root))


def _report(classifier, root, labelled, groups, hashes) -> dict:
    trained_on = classifier.meta.get("data", {}).get("hashes", {})
    report = {
        "model": classifier.path.name,
        "threshold": classifier.threshold,
        "data": str(root),
        "splits": {},
        "data_matches_training": {},
    }
    for split, (labels, scores, _) in labelled.items():
        report["splits"][split] = split_report(
            labels, scores, groups[split], classifier.threshold
        )
        if split not in trained_on:  # recorded after the model was trained
            report["data_matches_training"][split] = None
            continue
        report["data_matches_training"][split] = hashes.get(split) == trained_on[split]
        if not report["data_matches_training"][split]:
            log.warning(
                "the %s split differs from the one %s was trained with; "
                "figures are not comparable to docs/ml.md",
                split,
                classifier.path.name,
            )
    return report
