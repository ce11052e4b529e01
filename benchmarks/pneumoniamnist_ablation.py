"""PneumoniaMNIST recipes side by side on the same test split (the published test images, train/val re-split by
patient; see docs/training.md), each with one fit wall-time budget on 2 CPU threads.

Every row is scored the same way from its saved model(s): logits on validation and test, temperature and the
Youden threshold fitted on validation, test AUROC with its stratified bootstrap 95 % CI, accuracy / sensitivity
/ specificity at that threshold, and the paired bootstrap difference in AUROC against the first recipe (the
shipped config), which is the comparison to read: separate CIs of models scored on the same cases overlap far
more often than their paired difference crosses zero.

Two rows need no training of their own:
- test-time augmentation (TTA): the baseline model's logits averaged over the image and its mirror image;
- an ensemble: the mean logits of the baseline and ``--ensemble - 1`` more seeds of it (their fit times add).

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/pneumoniamnist_ablation.py [--minutes 9] [--only ema]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _train_common import fmt, load_average, run_recipes, setup, split_logits

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pneumoniamnist.yaml"
BASELINE = "small_cnn 28 px (configs/pneumoniamnist.yaml)"


def recipes(minutes: float) -> dict[str, dict]:
    budget = {"optim.max_minutes": minutes}
    lite = {"model.arch": "efficientnet_lite0", "model.weights": "imagenet", "optim.batch_size": 64,
            "optim.lr": 0.003, "optim.head_epochs": 1, "optim.unfreeze_blocks": 2, "optim.finetune_lr_factor": 0.1}
    return {
        BASELINE: budget,
        "+ EMA of the weights (decay 0.99)": {**budget, "optim.weight_averaging": "ema", "optim.ema_decay": 0.99},
        "+ SWA from epoch 10": {**budget, "optim.weight_averaging": "swa", "optim.swa_from_epoch": 10},
        "+ MixUp (alpha 0.2)": {**budget, "optim.mixup_alpha": 0.2},
        "+ MixUp (alpha 0.2) for 30 epochs": {**budget, "optim.mixup_alpha": 0.2, "optim.epochs": 30,
                                           "optim.early_stopping_patience": 10},
        "small_cnn at 56 px (28 px upsampled)": {**budget, "model.input_size": 56},
        "lite0 ImageNet, 28 px upsampled to 64 px, 3 stages": {
            **lite, "model.input_size": 64, "optim.epochs": 10, "optim.unfreeze_all_from": 3,
            "optim.early_stopping_patience": 10, **budget},
    }


def score(logits: dict, seed: int = 0) -> dict:
    from radiolens.evaluate import evaluate_predictions
    from radiolens.train.job import headline_metrics

    (vl, vt), (tl, tt) = logits["val"], logits["test"]
    ev = evaluate_predictions("binary", ["pneumonia"], tl, tt, vl, vt, operating_point="youden",
                              n_bootstrap=1000, seed=seed)
    return headline_metrics(ev.to_dict())


def main() -> None:
    from radiolens.evaluate.bootstrap import paired_auroc_difference

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_pneumoniamnist_ablation"))
    ap.add_argument("--minutes", type=float, default=9.0, help="fit wall-time budget per trained model")
    ap.add_argument("--only", default=None, help="train only the recipes whose name contains this")
    ap.add_argument("--ensemble", type=int, default=5, help="members of the ensemble row (0: no ensemble)")
    args = ap.parse_args()
    setup(2)
    out = Path(args.out)
    todo = recipes(args.minutes)
    if args.only:  # the baseline always runs: every row is compared with it
        todo = {k: v for k, v in todo.items() if k == BASELINE or args.only in k}
    members = {f"baseline seed {s}": {"optim.max_minutes": args.minutes, "seed": s} for s in range(1, args.ensemble)}
    trained = dict(run_recipes(CONFIG, out, {**todo, **members}, args.minutes))

    def folder(name: str) -> Path:
        return Path(trained[name]["model"]).parent

    rows: list[tuple[str, dict, float]] = []  # (name, logits, fit seconds)
    for name in todo:
        rows.append((name, split_logits(folder(name)), trained[name]["timings_s"]["fit_s"]))
    base_logits = rows[0][1]
    rows.insert(1, (f"{BASELINE} + TTA (mirror)", split_logits(folder(BASELINE), mirrored=True), rows[0][2]))
    if members:
        names = [BASELINE, *members]
        logits = [split_logits(folder(n)) for n in names]
        mean = {s: (np.mean([lg[s][0] for lg in logits], axis=0), logits[0][s][1]) for s in ("val", "test")}
        fit = sum(trained[n]["timings_s"]["fit_s"] for n in names)
        rows.insert(2, (f"ensemble of {len(names)} small_cnn seeds (mean logits)", mean, fit))

    y = base_logits["test"][1]
    print(f"\nload average at the end {load_average()}")
    print("\n| recipe | test AUROC (95% CI) | AUROC - baseline (paired 95% CI) | accuracy @ val threshold | "
          "sens / spec | fit wall s |\n|---|---|---|---|---|---|")
    for name, logits, fit_s in rows:
        h = score(logits)
        assert np.array_equal(logits["test"][1], y), "every row must score the same test cases"
        d = paired_auroc_difference(y, base_logits["test"][0], logits["test"][0], n_bootstrap=1000)
        diff = "-" if name == BASELINE else (f"{d.difference:+.3f} ({d.lower:+.3f} to {d.upper:+.3f})")
        print(f"| {name} | {fmt(h.get('auroc'))} {fmt(h.get('auroc_ci'))} | {diff} | {fmt(h.get('accuracy'))} | "
              f"{fmt(h.get('sensitivity'))} / {fmt(h.get('specificity'))} | {fit_s:.0f} |")
    print(f"\nval / test images: {len(base_logits['val'][0])} / {len(y)}")


if __name__ == "__main__":
    main()
