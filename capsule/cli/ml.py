"""`capsule ml train|eval|classify`: the escalation classifier and its figures."""

import json
import sys
from pathlib import Path

import typer

from capsule.cli.main import app
from capsule.errors import CapsuleError

ml_app = typer.Typer(
    help="Train, evaluate and try the escalation classifier.", no_args_is_help=True
)
app.add_typer(ml_app, name="ml")

_DATA = typer.Option(
    None,
    "--data",
    metavar="DIR",
    help="ADFA-LD folder (default: $CAPSULE_ADFA_DIR or ../shared/data/adfa-ld).",
)
_MODEL = typer.Option(
    "auto",
    "--model",
    metavar="NAME|FILE.onnx",
    help="A shipped model name or a .onnx file (auto: by the window's tokens).",
)


_RECORDINGS = typer.Option(
    None,
    "--recordings",
    metavar="DIR",
    help="Scenario recordings (default: capsule/ml/recordings).",
)
_WHICH = typer.Option(
    "all", "--only", metavar="adfa|events|all", help="Which model to train or evaluate."
)
_KINDS = ("adfa", "events")


def _chosen(which: str) -> tuple[str, ...]:
    if which not in (*_KINDS, "all"):
        raise CapsuleError(
            f"failed to parse --only {which!r}: expected adfa, events or all"
        )
    return _KINDS if which == "all" else (which,)


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


@ml_app.command("train")
def train(
    data: Path = _DATA,
    recordings: Path = _RECORDINGS,
    which: str = _WHICH,
    out: Path = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Where to write NAME.onnx and NAME.json "
        "(default: the package's models folder).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train the ADFA-LD and agent-scenario models and write them with metadata."""
    from capsule.ml import model
    from capsule.ml import train as training

    for kind in _chosen(which):
        if kind == "adfa":
            meta = training.train(data, out or model.MODELS_DIR, seed=seed)
        else:
            meta = training.train_events(recordings, out or model.MODELS_DIR, seed=seed)
        val = meta["validation"]
        typer.echo(
            f"{kind}: trained in {meta['training']['seconds']} s; validation ROC-AUC "
            f"{_fmt(val['roc_auc'], '.4f')}, recall {_fmt(val['recall'])} at FPR "
            f"{_fmt(val['fpr'])} (threshold {meta['threshold']:.4f})"
        )


@ml_app.command("eval")
def evaluate(
    data: Path = _DATA,
    recordings: Path = _RECORDINGS,
    which: str = _WHICH,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Report ROC-AUC and precision/recall at each threshold on held-out splits."""
    from capsule.ml import eval as evaluation

    reports = {}
    for kind in _chosen(which):
        if kind == "adfa":
            reports[kind] = evaluation.evaluate(data)
        else:
            reports[kind] = evaluation.evaluate_events(recordings)
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
        return
    for report in reports.values():
        _print_report(report)


def _print_report(report: dict) -> None:
    typer.echo(
        f"model {report['model']}, threshold {report['threshold']:.4f}, "
        f"data {report['data']}"
    )
    for split, r in report["splits"].items():
        typer.echo(
            f"{split:>5}: {r['traces']} windows ({r['attacks']} risky)  "
            f"ROC-AUC {_fmt(r['roc_auc'], '.4f')}  precision {_fmt(r['precision'])}  "
            f"recall {_fmt(r['recall'])}  FPR {_fmt(r['fpr'])}"
        )
        recalls = ", ".join(f"{f} {v:.2f}" for f, v in r["recall_by_family"].items())
        typer.echo(f"       recall by group: {recalls}")
        if r["false_positives_by_group"]:
            typer.echo(f"       false positives: {r['false_positives_by_group']}")
        if report["data_matches_training"][split] is False:
            typer.echo(f"       note: the {split} data differ from the training run's")


@ml_app.command("classify")
def classify(
    window: Path = typer.Argument(
        ...,
        metavar="WINDOW.json|-",
        help="A window as JSON (syscalls or events, resources, task), or - for stdin.",
    ),
    model: str = _MODEL,
) -> None:
    """Classify one window and print the verdict as JSON."""
    from capsule.ml.features import Window
    from capsule.ml.model import load_classifier

    where = "stdin" if str(window) == "-" else str(window)
    try:
        text = sys.stdin.read() if where == "stdin" else window.read_text()
        data = json.loads(text)
    except OSError as err:
        raise CapsuleError(f"failed to read {where}: {err.strerror}") from err
    except ValueError as err:
        raise CapsuleError(f"failed to read {where}: {err}") from err
    if not isinstance(data, dict):
        raise CapsuleError(f"failed to read {where}: expected a JSON object")
    from capsule.ml.model import Escalation

    classifier = Escalation() if model == "auto" else load_classifier(model)
    verdict = classifier.classify(Window.from_dict(data, where))
    typer.echo(json.dumps(verdict.to_dict()))
