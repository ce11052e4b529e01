"""Evaluation of a saved model bundle on a manifest: the job behind ``radiolens evaluate``.

Temperature and thresholds are fitted on the validation split (never on the evaluated one); without one the
evaluator uses T = 1 and 0.5 thresholds and the report says so. The label definition is the one the bundle
was trained with unless the caller names the column(s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiolens.data.manifest import LabelSpec, Manifest, load_manifest
from radiolens.data.splits import check_leakage
from radiolens.errors import ConfigError, InputError, ManifestError
from radiolens.evaluate.evaluator import evaluate_predictions
from radiolens.evaluate.result import EvaluationResult
from radiolens.models.bundle import ModelBundle


@dataclass
class BundleEvaluationOptions:
    """What to evaluate and how. ``split`` / ``val_split`` None: every row / no validation fit (T = 1, 0.5)."""

    split: str | None = "test"
    val_split: str | None = "val"
    operating_point: str | None = None  #: default: the bundle's own rule, or youden when it has the default
    n_bootstrap: int = 1000
    label_columns: list[str] | None = None  #: default: the label definition stored in the bundle
    positive: str | None = None  #: binary, with ``label_columns``: the positive value
    seed: int = 0
    triage_json: Path | None = None  #: a ``triage-fit`` result for this bundle, added to the report


@dataclass
class BundleEvaluation:
    report: Path  #: report.html
    metrics: Path  #: metrics.json
    result: EvaluationResult


def model_logits(bundle: ModelBundle, manifest: Manifest, label_spec: LabelSpec, batch_size: int = 256,
                 cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K), targets) of ``bundle``'s raw model over every image of ``manifest``; refused when the
    manifest's classes under ``label_spec`` are not the model's."""
    from torch.utils.data import DataLoader

    from radiolens.data.dataset import ImageTensorDataset, manifest_images
    from radiolens.models.logits import stack_logits

    targets, names = manifest.targets(label_spec)
    if list(names) != list(bundle.info.class_names):
        raise ManifestError(f"the manifest's classes ({', '.join(names)}) differ from the model's "
                            f"({', '.join(bundle.info.class_names)})")
    images = manifest_images(manifest, bundle.info.input_size, cache_dir)
    loader = DataLoader(ImageTensorDataset(images, targets, bundle.info.mean, bundle.info.std),
                        batch_size=batch_size)
    return stack_logits(bundle.model, loader)


def bundle_label_spec(bundle: ModelBundle, label_columns: list[str] | None = None,
                      positive: str | None = None) -> LabelSpec:
    """The label definition to evaluate ``bundle`` with: ``label_columns`` (with ``positive``) when given, else
    the one stored at training; a bundle that stores none needs the columns (``ConfigError``)."""
    info = bundle.info
    stored = info.training.get("label")
    if label_columns:
        return LabelSpec(task=info.task, columns=list(label_columns),
                         positive=positive or (stored or {}).get("positive", "1"),
                         negative=None if positive else (stored or {}).get("negative"),
                         classes=info.class_names if info.task == "multiclass" else None,
                         positive_name=info.class_names[0] if info.task == "binary" else None)
    if stored:
        return LabelSpec.model_validate(stored)
    raise ConfigError("this model does not record its label column(s): pass --label-column")


def read_triage(path: Path, model_sha256: str) -> dict:
    """A ``triage-fit`` triage.json for the report; refused when it was fitted on another model."""
    if not path.is_file():
        raise InputError(f"triage file not found: {path.name}")
    try:
        triage = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"triage file {path.name} is not JSON") from exc
    if not isinstance(triage, dict) or "rule" not in triage:
        raise InputError(f"{path.name} is not a triage-fit result (no 'rule')")
    fitted_on = triage.get("model_sha256")
    if fitted_on and fitted_on != model_sha256:
        raise InputError(f"{path.name} was fitted on another model (sha256 {fitted_on[:12]}... is not this "
                         f"model's {model_sha256[:12]}...)")
    return triage


def evaluate_bundle(model_path: Path, manifest_path: Path, out: Path,
                    options: BundleEvaluationOptions | None = None) -> BundleEvaluation:
    """Evaluate the bundle at ``model_path`` on ``manifest_path`` (patient leakage refused) and write
    ``report.html`` + ``metrics.json`` into ``out``."""
    from radiolens.evaluate.error_examples import report_examples
    from radiolens.evaluate.report import write_report

    opts = options or BundleEvaluationOptions()
    bundle = ModelBundle.load(model_path)
    info = bundle.info
    spec = bundle_label_spec(bundle, opts.label_columns, opts.positive)
    manifest = load_manifest(manifest_path)
    check_leakage(manifest)
    split, val_split = opts.split, opts.val_split
    test_m = manifest.subset(split) if split else manifest
    val_logits = val_targets = None
    if val_split:
        val_logits, val_targets = model_logits(bundle, manifest.subset(val_split), spec)
    test_logits, test_targets = model_logits(bundle, test_m, spec)
    op = opts.operating_point or (info.operating_point if not info.operating_point.startswith("default")
                                  else "youden")
    ev = evaluate_predictions(task=info.task, class_names=info.class_names, test_logits=test_logits,
                              test_targets=test_targets, val_logits=val_logits, val_targets=val_targets,
                              history=info.training.get("history"), operating_point=op,
                              n_bootstrap=opts.n_bootstrap, seed=opts.seed)
    model_info = {"arch": info.arch, "task": info.task, "model_file": model_path.name, "sha256": bundle.sha256,
                  "input_size": list(info.input_size), "classes": info.class_names,
                  "evaluated_split": split or "all", "threshold_split": val_split or "none (T=1, 0.5)"}
    triage = read_triage(opts.triage_json, bundle.sha256) if opts.triage_json else None
    examples = report_examples(info.task, info.class_names, test_logits, test_targets, ev.temperature,
                               ev.thresholds, test_m.absolute_paths())
    paths = write_report(ev, out, title=f"{info.name}: evaluation on {manifest_path.name} ({split or 'all'})",
                         model_info=model_info, triage=triage, examples=examples)
    return BundleEvaluation(report=paths["html"], metrics=paths["json"], result=ev)
