"""Paired comparison of trained runs on their shared test split: each run folder (``radiolens train --out``)
holds ``model.pt`` and the ``manifest_used.csv`` it trained on; every model scores the same test cases and the
table gives each AUROC (macro for multi-class / multi-label) with the paired bootstrap difference against the
first run. Separate CIs of models scored on the same cases overlap far more often than their paired
difference crosses zero, so this is the table to read when asking whether one recipe beats another.

    python benchmarks/compare_runs.py out/run_a out/run_b [out/run_c ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _train_common import setup, split_logits


def main() -> None:
    from radiolens.evaluate.bootstrap import paired_auroc_difference, paired_macro_auroc_difference

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the reference")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    args = ap.parse_args()
    setup(2, need_data=False)
    scored = {run: split_logits(run, splits=("test",))["test"] for run in args.runs}
    ref_logits, y = scored[args.runs[0]]
    print(f"\nreference: {args.runs[0].name}; {len(y)} test cases\n")
    print("| run | AUROC | minus reference (paired 95% CI) | share of resamples better |\n|---|---|---|---|")
    for run, (logits, targets) in scored.items():
        if not np.array_equal(targets, y):
            raise SystemExit(f"{run.name}: a different test split than the reference; no paired comparison")
        if logits.shape[1] == 1:
            d = paired_auroc_difference(y, ref_logits[:, 0], logits[:, 0], args.n_bootstrap)
        else:
            onehot = y if y.ndim == 2 else np.eye(logits.shape[1], dtype=int)[y]
            d = paired_macro_auroc_difference(onehot, ref_logits, logits, args.n_bootstrap)
        cell = "-" if run == args.runs[0] else f"{d.difference:+.3f} ({d.lower:+.3f} to {d.upper:+.3f})"
        share = "-" if run == args.runs[0] else f"{d.share_b_better:.2f}"
        print(f"| {run.name} | {d.auroc_b:.3f} | {cell} | {share} |")


if __name__ == "__main__":
    main()
