"""PneumoniaMNIST end to end: train (2 CPU threads) -> evaluate -> report. Target: test AUROC >= 0.97,
accuracy >= 0.90, training <= 15 min on 2 CPU cores.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/train_pneumoniamnist.py [--out out/bench_pmnist]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_common import fmt, run_job, setup

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_pneumoniamnist"))
    ap.add_argument("--config", default=str(ROOT / "configs" / "pneumoniamnist.yaml"))
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    setup(2)
    s = run_job(Path(args.config), Path(args.out), {"optim.epochs": args.epochs})
    h, cfg = s["headline"], s["cfg"]
    print(f"\nPneumoniaMNIST ({cfg.model.arch} @ {cfg.model.input_size}px, 2 threads; load avg before/after "
          f"{s['load_before']} -> {s['load_after']} on a 2-core machine shared with other jobs)\n")
    print("| metric | value | target |\n|---|---|---|")
    rows = [("test AUROC", h.get("auroc"), ">= 0.97"), ("AUROC 95% CI", h.get("auroc_ci"), ""),
            ("accuracy @ val-chosen threshold", h.get("accuracy"), ">= 0.90"),
            ("balanced accuracy", h.get("balanced_accuracy"), ""), ("sensitivity", h.get("sensitivity"), ""),
            ("specificity", h.get("specificity"), ""), ("temperature (val)", s["temperature"], ""),
            ("epochs run / best", f"{s['epochs_run']} / {s['best_epoch']}", ""),
            ("training wall time (s, shared CPU)", s["timings_s"]["fit_s"], "<= 900"),
            ("training CPU time / 2 threads (s)", s["timings_s"].get("fit_cpu_s", float("nan")) / 2, "<= 900"),
            ("whole job incl. data+eval+report (s)", s["wall_s"], "")]
    for name, v, target in rows:
        print(f"| {name} | {fmt(v)} | {target} |")
    fit = min(s["timings_s"]["fit_s"], s["timings_s"].get("fit_cpu_s", 1e9) / 2)
    ok = (h.get("auroc") or 0) >= 0.97 and (h.get("accuracy") or 0) >= 0.90 and fit <= 900
    print(f"\ntargets met: {ok}\nreport: {s['report']}")


if __name__ == "__main__":
    main()
