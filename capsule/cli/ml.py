"""`capsule ml train|eval|classify`: the escalation classifier's model and its figures."""

import json
import sys
from pathlib import Path

import typer

from capsule.cli.main import app
from capsule.errors import CapsuleError

ml_app = typer.Typer(help="Train, evaluate and try the escalation classifier.",
                     no_args_is_help=True)
app.add_typer(ml_app, name="ml")

_DATA = typer.Option(None, "--data", metavar="DIR",
                     help="ADFA-LD folder (default: $CAPSULE_ADFA_DIR or "
                          "../shared/data/adfa-ld).")
_MODEL = typer.Option("adfa-syscalls", "--model", metavar="NAME|FILE.onnx",
                      help="A shipped model name or a .onnx file.")


@ml_app.command("train")
def train(
    data: Path = _DATA,
    out: Path = typer.Option(None, "--out", metavar="DIR",
                             help="Where to write NAME.onnx and NAME.json "
                                  "(default: the package's models folder)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train the ADFA-LD model and write it with its metadata."""
    from capsule.ml import model, train as training

    meta = training.train(data, out or model.MODELS_DIR, seed=seed)
    val = meta["validation"]
    typer.echo(f"trained in {meta['training']['seconds']} s; validation ROC-AUC "
               f"{val['roc_auc']:.4f}, recall {val['recall']:.3f} at FPR {val['fpr']:.3f} "
               f"(threshold {meta['threshold']:.4f})")


@ml_app.command("eval")
def evaluate(
    data: Path = _DATA,
    model: str = _MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Report ROC-AUC and precision/recall at the model's threshold on held-out splits."""
    from capsule.ml.eval import evaluate as run_eval

    report = run_eval(data, model)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"model {report['model']}, threshold {report['threshold']:.4f}, "
               f"data {report['data']}")
    for split, r in report["splits"].items():
        typer.echo(f"{split:>5}: {r['traces']} traces ({r['attacks']} attacks)  "
                   f"ROC-AUC {r['roc_auc']:.4f}  precision {r['precision']:.3f}  "
                   f"recall {r['recall']:.3f}  FPR {r['fpr']:.3f}")
        families = ", ".join(f"{f} {v:.2f}" for f, v in r["recall_by_family"].items())
        typer.echo(f"       recall by family: {families}")
        if not report["data_matches_training"][split]:
            typer.echo(f"       note: the {split} data differ from the training run's")


@ml_app.command("classify")
def classify(
    window: Path = typer.Argument(..., metavar="WINDOW.json|-",
                                  help="A window as JSON (syscalls or events, "
                                       "resources, task), or - for stdin."),
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
    verdict = load_classifier(model).classify(Window.from_dict(data, where))
    typer.echo(json.dumps(verdict.to_dict()))
