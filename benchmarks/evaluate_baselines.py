"""Real-data demonstration and timing of radiolens.evaluate on quick scikit-learn baselines.

No trained radiolens model is needed: a logistic regression on raw down-sampled pixels gives real logits
(``decision_function``) for three tasks, which go through ``evaluate_predictions`` + ``write_report``:

- binary: PneumoniaMNIST 28x28 (train -> fit, val -> temperature/thresholds, test -> report);
- multilabel: NIH ChestX-ray14 64 px, 14 findings, one logistic regression per finding on 32x32 pixels
  (rare findings: some have no positive in val or test, which the report must show as undefined, not crash);
- binary with training curves: a torch MLP trained on only 500 PneumoniaMNIST training images for 60 epochs with
  no regularisation (built to over-fit), its per-epoch train/val loss and val AUROC recorded, so the
  over/under-fitting diagnosis runs on a real history;
- multiclass: Kermany normal / bacterial / viral at 32x32 (the shared folder has train/val only: 20 % of the
  train patients become validation and the shared ``val`` split is the test set).

Usage: RADIOLENS_DATA_DIR=/work/shared/data python benchmarks/evaluate_baselines.py [--out DIR] [--n-bootstrap N]
Prints a table; reports land in DIR/<task>/report.html (+ metrics.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.preprocessing import StandardScaler

from radiolens.evaluate import evaluate_predictions, write_report
from radiolens.settings import data_dir

NIH_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def _pixels(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size * size), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            out[i] = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32).ravel() / 255
    return out


def pneumoniamnist(root: Path):
    d = np.load(root / "medmnist" / "pneumoniamnist.npz")
    splits = ("train", "val", "test")
    X = {s: d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1).astype(np.float32) / 255 for s in splits}
    y = {s: d[f"{s}_labels"].reshape(-1).astype(int) for s in ("train", "val", "test")}
    scaler = StandardScaler().fit(X["train"])
    clf = LogisticRegression(C=0.01, max_iter=3000).fit(scaler.transform(X["train"]), y["train"])
    logits = {s: clf.decision_function(scaler.transform(X[s]))[:, None] for s in ("val", "test")}
    return "binary", ["pneumonia"], logits, y


def pneumoniamnist_mlp(root: Path, epochs: int = 60, n_train: int = 500):
    from sklearn.metrics import roc_auc_score

    d = np.load(root / "medmnist" / "pneumoniamnist.npz")
    X = {s: torch.tensor(d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1) / 255.0, dtype=torch.float32)
         for s in ("train", "val", "test")}
    y = {s: d[f"{s}_labels"].reshape(-1).astype(int) for s in ("train", "val", "test")}
    keep = np.random.default_rng(0).choice(len(y["train"]), n_train, replace=False)
    X["train"], y["train"] = X["train"][keep], y["train"][keep]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    yt = torch.tensor(y["train"], dtype=torch.float32)[:, None]
    yv = torch.tensor(y["val"], dtype=torch.float32)[:, None]
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(yt))
        total = 0.0
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(X["train"][b]), yt[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            zv = model(X["val"])
        history.append({"epoch": epoch, "train_loss": total / len(yt), "val_loss": float(loss_fn(zv, yv)),
                        "val_auroc": float(roc_auc_score(y["val"], zv[:, 0].numpy())), "lr": 1e-3})
    with torch.no_grad():
        logits = {s: model(X[s]).double().numpy() for s in ("val", "test")}
    return "binary", ["pneumonia"], logits, y, history


def nih_multilabel(root: Path, size: int = 32):
    folder = root / "nih_chestxray14"
    m = pd.read_csv(folder / "manifest.csv")
    Y = np.stack([m.finding_labels.str.split("|").apply(lambda s, f=f: f in s).to_numpy(int) for f in NIH_FINDINGS], 1)
    X = _pixels([folder / p for p in m.path], size)
    split = m.split.to_numpy()
    scaler = StandardScaler().fit(X[split == "train"])
    Xs = scaler.transform(X)
    logits = {s: np.zeros((int((split == s).sum()), len(NIH_FINDINGS))) for s in ("val", "test")}
    for k in range(len(NIH_FINDINGS)):
        yk = Y[split == "train", k]
        if yk.sum() < 2:  # e.g. Hernia: no training positive -> constant log-odds (AUROC 0.5 by construction)
            const = np.log((yk.sum() + 0.5) / (len(yk) - yk.sum() + 0.5))
            for s in logits:
                logits[s][:, k] = const
            continue
        clf = LogisticRegression(C=0.005, max_iter=3000, class_weight="balanced").fit(Xs[split == "train"], yk)
        for s in logits:
            logits[s][:, k] = clf.decision_function(Xs[split == s])
    targets = {s: Y[split == s] for s in ("val", "test")}
    return "multilabel", NIH_FINDINGS, logits, targets


def kermany_multiclass(root: Path, size: int = 32):
    folder = root / "kermany_pediatric_pneumonia"
    m = pd.read_csv(folder / "manifest.csv")
    classes = ["none", "bacteria", "virus"]
    y_all = m.pneumonia_type.map({c: i for i, c in enumerate(classes)}).to_numpy(int)
    X = _pixels([folder / p for p in m.path], size)
    train_idx = np.flatnonzero(m.split.to_numpy() == "train")
    test_idx = np.flatnonzero(m.split.to_numpy() == "val")
    fit_rel, val_rel = next(GroupShuffleSplit(1, test_size=0.2, random_state=0).split(
        train_idx, groups=m.patient_id.to_numpy()[train_idx]))
    fit_idx, val_idx = train_idx[fit_rel], train_idx[val_rel]
    scaler = StandardScaler().fit(X[fit_idx])
    clf = LogisticRegression(C=0.005, max_iter=3000).fit(scaler.transform(X[fit_idx]), y_all[fit_idx])
    logits = {"val": clf.decision_function(scaler.transform(X[val_idx])),
              "test": clf.decision_function(scaler.transform(X[test_idx]))}
    return "multiclass", ["normal", "bacterial", "viral"], logits, {"val": y_all[val_idx], "test": y_all[test_idx]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/radiolens_eval_reports")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--only", choices=["binary", "binary_mlp", "multilabel", "multiclass"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = data_dir()
    jobs = {"binary": ("PneumoniaMNIST 28px", pneumoniamnist),
            "binary_mlp": ("PneumoniaMNIST 28px, MLP on 500 images", pneumoniamnist_mlp),
            "multilabel": ("NIH CXR14 64px->32px", nih_multilabel),
            "multiclass": ("Kermany 224px->32px", kermany_multiclass)}
    rows = []
    for key, (label, loader) in jobs.items():
        if args.only and key != args.only:
            continue
        t0 = time.perf_counter()
        task, names, logits, targets, *rest = loader(root)
        history = rest[0] if rest else None
        t_fit = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = evaluate_predictions(task, names, logits["test"], targets["test"], logits["val"], targets["val"],
                                      history=history, operating_point="youden", n_bootstrap=args.n_bootstrap,
                                      seed=0)
        t_eval = time.perf_counter() - t1
        t2 = time.perf_counter()
        paths = write_report(result, Path(args.out) / key, title=f"Logistic-regression baseline: {label}",
                             model_info={"model": "torch MLP 784-1024-1 on raw pixels" if history
                                         else "scikit-learn LogisticRegression on raw pixels", "data": label})
        t_report = time.perf_counter() - t2
        h = result.summary["headline"]
        auc = h.get("auroc") or h.get("macro_auroc")
        ap = h.get("average_precision") or h.get("macro_average_precision")
        ci = f"{auc['estimate']:.3f} [{auc['lower']:.3f}, {auc['upper']:.3f}]"
        rows.append((label, task, result.n_test, ci, f"{ap['estimate']:.3f}", f"{result.temperature:.2f}",
                     f"{result.calibration['test']['ece_before']:.3f} -> {result.calibration['test']['ece_after']:.3f}",
                     f"{t_fit:.1f}", f"{t_eval:.1f}", f"{t_report:.1f}", len(result.warnings), str(paths["html"])))
        if task == "binary":
            at = result.per_class[0]["at_threshold"]
            print(f"[{label}] Youden threshold {result.thresholds[0]:.3f} (chosen on val): "
                  f"sens {at['sensitivity']:.3f} "
                  f"spec {at['specificity']:.3f} PPV {at['ppv']:.3f} NPV {at['npv']:.3f}; accuracy {h['accuracy']:.3f} "
                  f"balanced {h['balanced_accuracy']:.3f}")
        if history:
            print(f"[{label}] training diagnosis: {result.training['diagnosis']['message']}")
        for w in result.warnings:
            print(f"[{label}] warning: {w}")
    header = ("data", "task", "n_test", "AUROC (macro) [95% CI]", "AP (macro)", "T", "ECE before->after",
              "fit s", "evaluate s", "report s", "warnings", "report")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
