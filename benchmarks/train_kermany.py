"""Kermany 224 px JPEGs end to end: binary pneumonia and 3-class normal/bacterial/viral, each trained,
evaluated on a patient-level test split carved from train, with wall time.

Default: resnet18 (timm, random init: no pretrained weights offline) at the images' full 224 px, 3 epochs,
batch 32 -- measured 17 and 30 min per model on 2 shared CPU cores (docs/training.md). The configs
(configs/kermany_*.yaml) keep a quick CPU setting (small_cnn at 48 px, 5 epochs, ~5 min per model);
`--arch small_cnn --input-size 48 --epochs 5 --batch-size 64 --lr 0.002` reproduces it.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/train_kermany.py [--only binary] [--epochs 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fit_times, fmt, run_job, run_metrics, setup, split_sizes

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_kermany"))
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--only", choices=["binary", "3class"], default=None)
    args = ap.parse_args()
    setup(2)
    cache = str(Path(args.out) / "decoded_cache")
    rows = []
    for name in ("binary", "3class"):
        if args.only and args.only != name:
            continue
        s = run_job(ROOT / "configs" / f"kermany_{name}.yaml", Path(args.out) / name,
                    {"model.arch": args.arch, "optim.epochs": args.epochs, "model.input_size": args.input_size,
                     "optim.batch_size": args.batch_size, "optim.lr": args.lr, "data.cache_dir": cache})
        rows.append((name, s))
    print("\n| task | model | n train/val/test | test AUROC (95% CI) | other | epochs (best) | fit wall s | "
          "fit CPU s / 2 | job wall s | load avg |\n|---|---|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        h, cfg = s["headline"], s["cfg"]
        if name == "binary":
            auc = f"{fmt(h.get('auroc'))} {fmt(h.get('auroc_ci'))}"
            other = f"sens {fmt(h.get('sensitivity'))}, spec {fmt(h.get('specificity'))}, acc {fmt(h.get('accuracy'))}"
        else:
            auc = f"macro {fmt(h.get('macro_auroc'))} {fmt(h.get('macro_auroc_ci'))}"
            other = f"micro {fmt(h.get('micro_auroc'))}"
        m = run_metrics(s)
        print(f"| {name} | {cfg.model.arch}@{cfg.model.input_size}px | {split_sizes(m)} | {auc} | {other} | "
              f"{s['epochs_run']} ({s['best_epoch']}) | {fit_times(s)} | {s['wall_s']:.0f} | {s['load_after']} |")
        if name == "3class":
            print("\nper class (3-class):\n| class | AUROC | 95% CI |\n|---|---|---|")
            for c in m["per_class"]:
                print(f"| {c['name']} | {fmt(c['auroc']['estimate'])} | "
                      f"{fmt([c['auroc']['lower'], c['auroc']['upper']])} |")


if __name__ == "__main__":
    main()
