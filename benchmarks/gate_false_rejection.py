"""The input gate's false-rejection rate on patients nobody saw: how it was calibrated before (images split at
random, so one patient's images could both fit the density and set the threshold; plain quantile) and now
(patients split; split-conformal threshold), and whether the rate `monitor baseline` reports, with its Wilson
interval, predicts what unseen patients get. Run by hand; prints a table; asserts nothing.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/gate_false_rejection.py \\
        --model runs/kermany/model.pt --manifest runs/kermany/manifest_used.csv [--seeds 20]

The manifest is `radiolens train --config configs/kermany_binary.yaml`'s manifest_used.csv: its val split is
the baseline, its test split (20 % of the training patients, carved out before training) holds patients
that neither the model nor the gate ever saw. Each seed draws another fit/calibration split of the baseline.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _train_common import load_average, setup  # noqa: E402


def rows_of(manifest: Path, split: str) -> list[dict]:
    with open(manifest) as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == split]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True, help="manifest_used.csv with val and test splits")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.02)
    args = ap.parse_args()
    setup()
    from radiolens.io import read_image
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.embedding import EmbeddingTap
    from radiolens.monitor import FeatureDensity, GateConfig
    from radiolens.monitor.gate import conformal_threshold
    from radiolens.monitor.profile import heldout_rejections, model_outputs, patient_halves, wilson_interval

    print(f"load before: {load_average()}")
    bundle = ModelBundle.load(args.model)
    val, unseen = rows_of(args.manifest, "val"), rows_of(args.manifest, "test")
    tap = EmbeddingTap(bundle.model, bundle.info.num_outputs)
    t0 = time.perf_counter()
    _, emb_val = model_outputs(bundle, tap, [read_image(r["path"]) for r in val])
    _, emb_new = model_outputs(bundle, tap, [read_image(r["path"]) for r in unseen])
    tap.close()
    groups = np.array([r["patient_id"] for r in val])
    print(f"embeddings of {len(val)} baseline images ({len(set(groups))} patients) and {len(unseen)} unseen "
          f"images ({len({r['patient_id'] for r in unseen})} patients) in {time.perf_counter() - t0:.0f} s")
    cfg = GateConfig(target_false_rejection=args.target)
    n = len(val)
    old, new, reported, covered = [], [], [], 0
    for seed in range(args.seeds):
        # before: a random half of the images, the plain (1 - target) quantile of the other half
        order = np.random.default_rng(seed).permutation(n)
        d = FeatureDensity.fit(emb_val, cfg, fit_index=order[: n // 2], calibration_index=order[n // 2:])
        thr = float(np.quantile(d.score(emb_val[order[n // 2:]]), 1.0 - args.target))
        old.append(np.mean(d.score(emb_new) > thr))
        # now: half of the patients fit, the others calibrate (conformal) and measure (cross-fitted)
        fit, cal = patient_halves(groups, seed)
        d = FeatureDensity.fit(emb_val, cfg, fit_index=fit, calibration_index=cal)
        assert d.threshold == conformal_threshold(d.score(emb_val[cal]), args.target)
        held = heldout_rejections(d.score(emb_val[cal]), np.zeros(len(cal), bool), groups[cal], args.target, seed)
        lo, hi = wilson_interval(int(held.sum()), len(cal))
        rate = np.mean(d.score(emb_new) > d.threshold)
        new.append(rate)
        reported.append((held.mean(), lo, hi))
        covered += lo <= rate <= hi

    def line(name, rates):
        # one split's rate is a binomial proportion over the unseen images (Wilson CI); the splits share those
        # images, so over splits only the mean and range are given
        k0 = int(round(rates[0] * len(unseen)))
        lo, hi = wilson_interval(k0, len(unseen))
        print(f"| {name} | {k0}/{len(unseen)} = {rates[0]:.4f} [{lo:.4f}, {hi:.4f}] | {np.mean(rates):.4f} | "
              f"{np.min(rates):.4f} - {np.max(rates):.4f} |")

    print(f"\nfalse rejection on {len(unseen)} images of unseen patients, target {args.target}, "
          f"{args.seeds} baseline splits\n")
    print("| calibration | split 0 [95 % Wilson CI] | mean over splits | range over splits |")
    print("|---|---|---|---|")
    line("before: random image halves, plain quantile", old)
    line("now: patient halves, conformal threshold", new)
    rep = np.array(reported)
    print(f"\nreported by the baseline (held-out patients, cross-fitted): mean {rep[:, 0].mean():.4f}, "
          f"mean 95 % CI [{rep[:, 1].mean():.4f}, {rep[:, 2].mean():.4f}]; the unseen patients' rate fell inside "
          f"the reported interval in {covered} of {args.seeds} splits")
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
