"""Kermany 224 px JPEGs end to end: binary pneumonia and 3-class normal/bacterial/viral, each trained,
evaluated on a patient-level test split carved from train, with wall time.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/train_kermany.py [--input-size 64] [--epochs 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fmt, run_job, setup

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_kermany"))
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--only", choices=["binary", "3class"], default=None)
    args = ap.parse_args()
    setup(2)
    cache = str(Path(args.out) / "decoded_cache")
    rows = []
    for name in ("binary", "3class"):
        if args.only and args.only != name:
            continue
        s = run_job(ROOT / "configs" / f"kermany_{name}.yaml", Path(args.out) / name,
                    {"optim.epochs": args.epochs, "model.input_size": args.input_size, "data.cache_dir": cache})
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
        import json

        m = json.loads(Path(s["metrics"]).read_text())
        n = f"{m['model_info']['n_train']}/{m['model_info']['n_val']}/{m['model_info']['n_test']}"
        print(f"| {name} | {cfg.model.arch}@{cfg.model.input_size}px | {n} | {auc} | {other} | {s['epochs_run']} "
              f"({s['best_epoch']}) | {s['timings_s']['fit_s']:.0f} | {s['timings_s']['fit_cpu_s'] / 2:.0f} | "
              f"{s['wall_s']:.0f} | {s['load_after']} |")
        if name == "3class":
            print("\nper class (3-class):\n| class | AUROC | 95% CI |\n|---|---|---|")
            for c in m["per_class"]:
                print(f"| {c['name']} | {fmt(c['auroc']['estimate'])} | "
                      f"{fmt([c['auroc']['lower'], c['auroc']['upper']])} |")


if __name__ == "__main__":
    main()
