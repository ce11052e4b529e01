"""PneumoniaMNIST recipes side by side on the same test split (the published test images, train/val re-split by
patient; see docs/training.md), each with one fit wall-time budget on 2 CPU threads: test AUROC with its
bootstrap 95 % CI, accuracy at the threshold chosen on validation, fit wall and CPU time.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/pneumoniamnist_ablation.py [--minutes 10] [--only lite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fit_times, fmt, run_metrics, run_recipes, setup, split_sizes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pneumoniamnist.yaml"


def recipes(minutes: float) -> dict[str, dict]:
    lite = {"model.arch": "efficientnet_lite0", "model.weights": "imagenet", "optim.batch_size": 64,
            "optim.lr": 0.003, "optim.head_epochs": 1, "optim.unfreeze_blocks": 2, "optim.finetune_lr_factor": 0.1}
    return {
        "small_cnn 28 px (configs/pneumoniamnist.yaml)": {"optim.max_minutes": minutes},
        "lite0 ImageNet, 28 px upsampled to 64 px, 3 stages": {
            **lite, "model.input_size": 64, "optim.epochs": 10, "optim.unfreeze_all_from": 3,
            "optim.early_stopping_patience": 10, "optim.max_minutes": minutes},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_pneumoniamnist_ablation"))
    ap.add_argument("--minutes", type=float, default=10.0, help="fit wall-time budget per recipe")
    ap.add_argument("--only", default=None, help="run the recipes whose name contains this")
    args = ap.parse_args()
    setup(2)
    rows = run_recipes(CONFIG, Path(args.out), recipes(args.minutes), args.minutes, args.only)
    print("\n| recipe | n train/val/test | test AUROC (95% CI) | accuracy @ val threshold | sens / spec | "
          "epochs (best) | fit wall s | fit CPU s / 2 |\n|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        h = s["headline"]
        print(f"| {name} | {split_sizes(run_metrics(s))} | {fmt(h.get('auroc'))} {fmt(h.get('auroc_ci'))} | "
              f"{fmt(h.get('accuracy'))} | {fmt(h.get('sensitivity'))} / {fmt(h.get('specificity'))} | "
              f"{s['epochs_run']} ({s['best_epoch']}) | {fit_times(s)} |")


if __name__ == "__main__":
    main()
