"""The model's most confident mistakes on test, as small de-identified thumbnails for the evaluation report.

Why: three false positives seen side by side tell a reader more about a model (chest drains, markers, lateral
films, paediatric images) than another decimal of AUROC. What a thumbnail carries: the decoded pixels only,
downsampled to at most :data:`THUMB_PX` on the long side and labelled with the class, the kind of error and the
probability; never a file name, path, manifest row or header value. Images whose header says they carry
burned-in annotation are left out, because their pixels can hold a name or a date.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiolens.errors import InputError
from radiolens.evaluate.metrics import probabilities

THUMB_PX = 128
PER_KIND = 3  #: errors of each kind shown per class
MAX_CLASSES = 6  #: a 14-finding model shows its most frequent findings only, to keep the report readable


@dataclass(frozen=True)
class ErrorCase:
    index: int  #: row of the evaluated split (never shown)
    class_name: str
    kind: str  #: "false positive" | "false negative"
    probability: float
    threshold: float


def _indicators(task: str, targets: np.ndarray, k: int) -> np.ndarray:
    t = np.asarray(targets)
    if task == "multiclass":
        return np.eye(k, dtype=int)[t.astype(int).reshape(-1)]
    return t.reshape(len(t), -1).astype(int)


def select_errors(task: str, class_names: list[str], logits, targets, temperature: float,
                  thresholds: list[float], per_kind: int = PER_KIND,
                  max_classes: int = MAX_CLASSES) -> list[ErrorCase]:
    """The ``per_kind`` most confident false positives (highest probability among negatives at or above the
    threshold) and false negatives (lowest probability among positives below it) per class, with the
    report's calibrated probabilities and validation-chosen thresholds. Classes with the most positives come
    first when there are more than ``max_classes``."""
    probs = probabilities(np.asarray(logits), task, temperature)
    y = _indicators(task, targets, len(class_names))
    order = sorted(range(len(class_names)), key=lambda c: -int(y[:, c].sum()))[:max_classes]
    cases: list[ErrorCase] = []
    for c in order:
        p, thr = probs[:, c], float(thresholds[c])
        fp = np.flatnonzero((y[:, c] == 0) & (p >= thr))
        fn = np.flatnonzero((y[:, c] == 1) & (p < thr))
        for i in fp[np.argsort(-p[fp], kind="stable")][:per_kind]:
            cases.append(ErrorCase(int(i), class_names[c], "false positive", float(p[i]), thr))
        for i in fn[np.argsort(p[fn], kind="stable")][:per_kind]:
            cases.append(ErrorCase(int(i), class_names[c], "false negative", float(p[i]), thr))
    return cases


def _png_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    img = Image.fromarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), mode="L")
    img.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(cases: list[ErrorCase], paths: list[Path]) -> list[dict]:
    """``[{"class_name", "kind", "probability", "threshold", "uri"}]`` for the cases whose image reads and does
    not declare burned-in annotation; ``paths`` are the evaluated split's image files in row order."""
    from radiolens.io.formats import read_image

    out = []
    for case in cases:
        try:
            image = read_image(paths[case.index])
        except (InputError, IndexError):
            continue  # an unreadable image has its own error elsewhere; the report just shows one fewer
        if (image.meta.burned_in_annotation or "").upper() == "YES":
            continue
        out.append({"class_name": case.class_name, "kind": case.kind, "probability": case.probability,
                    "threshold": case.threshold, "uri": _png_uri(image.first_frame())})
    return out


def report_examples(task: str, class_names: list[str], logits, targets, temperature: float,
                    thresholds: list[float], paths: list[Path]) -> list[dict]:
    """Selection and thumbnails in one call; nothing when ``paths`` does not match the rows evaluated."""
    if len(paths) != len(np.asarray(targets)):
        return []
    return thumbnails(select_errors(task, class_names, logits, targets, temperature, thresholds), paths)
