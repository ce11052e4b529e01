"""ImageNet transfer learning on Kermany at 224 px on CPU, side by side at one wall-time budget:

* EfficientNet-Lite0 from the offline ImageNet weights (``weights: imagenet``, the weights package), fine-tuned
  in three stages: the head, then the last blocks, then everything, the body at a lower learning rate;
* the same architecture from random initialisation (same budget, same schedule length, no staging);
* the 48 px small CNN of ``configs/kermany_binary.yaml``.

Every row: the same patient-disjoint test split carved from train (``carve_test_from_train: 0.2``, seed 0),
test AUROC with its bootstrap 95 % CI, sensitivity / specificity at the threshold chosen on validation
(Youden), epochs run, fit wall and CPU time, and the load average.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/transfer_kermany.py [--minutes 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fit_times, fmt, run_metrics, run_recipes, setup, split_sizes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "kermany_binary.yaml"


def recipes(minutes: float, epochs: int) -> dict[str, dict]:
    at224 = {"model.input_size": 224, "optim.batch_size": 32, "optim.epochs": epochs, "optim.max_minutes": minutes,
             "optim.early_stopping_patience": epochs}
    return {
        "lite0 imagenet, 3 stages": {**at224, "model.arch": "efficientnet_lite0", "model.weights": "imagenet",
                                     "optim.lr": 0.003, "optim.head_epochs": 1, "optim.unfreeze_blocks": 2,
                                     "optim.unfreeze_all_from": 2, "optim.finetune_lr_factor": 0.1},
        "lite0 random init": {**at224, "model.arch": "efficientnet_lite0", "optim.lr": 0.003},
        # the same recipe at 128 px: about 3x the epochs in the same budget
        "lite0 imagenet 128 px, 3 stages": {**at224, "model.input_size": 128, "optim.epochs": 2 * epochs,
                                            "optim.early_stopping_patience": 2 * epochs,
                                            "model.arch": "efficientnet_lite0", "model.weights": "imagenet",
                                            "optim.lr": 0.003, "optim.head_epochs": 1, "optim.unfreeze_blocks": 2,
                                            "optim.unfreeze_all_from": 3, "optim.finetune_lr_factor": 0.1},
        "small_cnn 48 px (default)": {"optim.max_minutes": minutes},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_transfer_kermany"))
    ap.add_argument("--minutes", type=float, default=8.0, help="fit wall-time budget per recipe")
    ap.add_argument("--epochs", type=int, default=4, help="schedule length of the 224 px recipes")
    ap.add_argument("--only", default=None, help="run the recipes whose name contains this")
    args = ap.parse_args()
    setup(2)
    cache = str(Path(args.out) / "decoded_cache")
    rows = run_recipes(CONFIG, Path(args.out), recipes(args.minutes, args.epochs), args.minutes, args.only,
                       {"data.cache_dir": cache})
    print("\n| recipe | n train/val/test | test AUROC (95% CI) | sens / spec @ val threshold | epochs (best) | "
          "fit wall s | fit CPU s / 2 | load avg after |\n|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        h = s["headline"]
        print(f"| {name} | {split_sizes(run_metrics(s))} | {fmt(h.get('auroc'))} {fmt(h.get('auroc_ci'))} | "
              f"{fmt(h.get('sensitivity'))} / {fmt(h.get('specificity'))} | {s['epochs_run']} ({s['best_epoch']}) | "
              f"{fit_times(s)} | {s['load_after']} |")


if __name__ == "__main__":
    main()
