"""Explanation quality per CAM method on real boxed images, with a trained bundle.

    # radiologists' boxes: NIH BBox rows (9, at 64 px) + TBX11K TB boxes (2 images, 512 px)
    python benchmarks/explain_quality.py --model out/trust/kermany64/model.pt
    # sanity row: a small_cnn trained here on NIH radiographs where the label is a planted checkerboard at a
    # random, recorded place (the evidence location is known, so a working CAM must hit the box)
    python benchmarks/explain_quality.py --planted-markers --out out/trust/markers [--no-augment]
    # the same for a registry model: is its automatically found target layer the right one?
    python benchmarks/explain_quality.py --planted-markers --arch resnet18 --input-size 128 --out out/trust/m-r18

Prints the pointing-game hit rate (strict, and within the usual tolerance of 15/224 of the shorter side), mean
energy inside the box, the box-area baseline (what a flat map scores for energy and a uniformly random maximum
scores for the strict pointing game), and ROAD faithfulness (grad-cam package; higher = more faithful).
"random" is grad-cam's RandomCAM: random channel weights on the model's real activations, so it is a stronger
baseline than the box area. The model's AUROC is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from radiolens.explain.cam import cam_target, compute_cams, upsample_map
from radiolens.explain.quality import (
    POINTING_TOLERANCE,
    box_mask,
    energy_in_box,
    parse_boxes,
    pointing_hit,
    road_score,
)
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle


def boxed_cases(data: Path) -> list[tuple[str, Path, str, float]]:
    nih = pd.read_csv(data / "nih_chestxray14" / "manifest.csv")
    cases = [("nih", data / "nih_chestxray14" / r.path, r.bbox_orig_coords, r.width / 1024)
             for r in nih[nih.bbox_orig_coords.notna()].itertuples()]
    tbx = pd.read_csv(data / "tbx11k" / "manifest.csv")
    cases += [("tbx11k", data / "tbx11k" / r.path, r.bbox_xywh, 1.0) for r in tbx[tbx.bbox_xywh.notna()].itertuples()]
    return cases


def auroc_lines(bundle: ModelBundle, data: Path) -> list[str]:
    """The bundle's own test AUROC and, for honesty about domain shift, its AUROC on NIH label_abnormal."""
    lines = []
    head = (bundle.info.metrics or {}).get("per_class", {})
    for name, m in head.items():
        lo, hi = m.get("auroc_ci") or (None, None)
        ci = f" ({lo:.3f}-{hi:.3f})" if lo is not None else ""
        lines.append(f"model test AUROC ({name}, its own test split, n={bundle.info.metrics.get('n_test')}): "
                     f"{m['auroc']:.3f}{ci}")
    nih = pd.read_csv(data / "nih_chestxray14" / "manifest.csv")
    probs = []
    for i in range(0, len(nih), 128):
        batch = torch.stack([bundle.preprocess(read_image(data / "nih_chestxray14" / p).first_frame())
                             for p in nih.path.iloc[i:i + 128]])
        probs.append(bundle.predict_batch(batch)[:, 0])
    auc = roc_auc_score(nih.label_abnormal, np.concatenate(probs))
    lines.append(f"AUROC of output '{bundle.info.class_names[0]}' against NIH label_abnormal (all {len(nih)} "
                 f"NIH images, any finding vs none): {auc:.3f}")
    return lines


def evaluate(bundle: ModelBundle, cases: list[tuple[str, np.ndarray, np.ndarray]], methods: list[str],
             target: int = 0) -> pd.DataFrame:
    rows = []
    for method in methods:
        np.random.seed(0)  # grad-cam's RandomCAM draws its channel weights from numpy's global generator
        torch.manual_seed(0)
        t0 = time.perf_counter()
        for src, img, mask in cases:
            x = bundle.preprocess(img)[None]
            heat = compute_cams(bundle.model, x, [cam_target(target)], method, arch=bundle.info.arch)
            up = upsample_map(heat[0], img.shape)
            road = road_score(bundle.model, x, heat, [cam_target(target, probability=True)])[0]
            tol = POINTING_TOLERANCE * min(img.shape)
            rows.append(dict(method=method, source=src, hit=pointing_hit(up, mask),
                             hit_tol=pointing_hit(up, mask, tolerance=tol), energy=energy_in_box(up, mask),
                             box_area=float(mask.mean()), road=road))
        rows[-1]["seconds"] = time.perf_counter() - t0
    return pd.DataFrame(rows)


def print_tables(df: pd.DataFrame) -> None:
    table = df.groupby("method", sort=False).agg(n=("hit", "size"), pointing_game=("hit", "mean"),
                                                  pointing_tol=("hit_tol", "mean"),
                                                  energy_in_box=("energy", "mean"), box_area=("box_area", "mean"),
                                                  road=("road", "mean"), road_sd=("road", "std"),
                                                  seconds=("seconds", "max"))
    print(table.round(3).to_string())
    if df.source.nunique() > 1:
        print("\nper source:")
        print(df.groupby(["method", "source"], sort=False)[["hit", "hit_tol", "energy", "box_area"]].mean()
              .round(3).to_string())


def planted_marker_model(data: Path, out: Path, size: int, epochs: int, augment: bool, arch: str = "small_cnn",
                         input_size: int | None = None) -> tuple[ModelBundle, Path]:
    from radiolens.explain.quality import write_marker_set
    from radiolens.train.config import config_from_dict
    from radiolens.train.job import run_training_job

    manifest = write_marker_set(data / "nih_chestxray14" / "manifest.csv", out / "data", ("checker",), size=size,
                                seed=0)
    cfg = {"name": "planted-checker", "data": {"manifest": str(manifest), "label": {
        "task": "binary", "columns": ["checker"], "positive": "1", "positive_name": "marker",
        "negative_name": "none"}},
        "model": {"arch": arch, "input_size": input_size or size},
        "optim": {"epochs": epochs, "batch_size": 32, "lr": 0.003},
        "augment": {"enabled": augment}, "eval": {"n_bootstrap": 200}, "seed": 0,
        "mlflow": False, "progress_bar": False, "num_threads": 2}
    summary = run_training_job(config_from_dict(cfg), out / "model", echo=lambda *a: None)
    print(f"trained planted-marker {arch} @ {input_size or size} px (augmentation {'on' if augment else 'off'}) in "
          f"{summary.timings_s['job_total_s']} s: {out / 'model' / 'model.pt'}")
    return ModelBundle.load(out / "model" / "model.pt"), manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="bundle to explain on the NIH + TBX11K boxes")
    ap.add_argument("--planted-markers", action="store_true",
                    help="train a model (--arch) on planted-checkerboard NIH images and score it on the test split")
    ap.add_argument("--arch", default="small_cnn", help="--planted-markers: registry architecture (random init)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="--planted-markers: model input size (default --size; the images are --size px)")
    ap.add_argument("--out", default="out/trust/markers", help="--planted-markers: data + model folder")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-augment", action="store_true", help="--planted-markers: train without augmentation")
    ap.add_argument("--methods", default="gradcam,gradcam++,scorecam,eigencam,random")
    args = ap.parse_args()
    if bool(args.model) == bool(args.planted_markers):
        ap.error("give --model or --planted-markers")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = Path(os.environ["RADIOLENS_DATA_DIR"])
    methods = args.methods.split(",")
    if args.planted_markers:
        bundle, manifest = planted_marker_model(data, Path(args.out), args.size, args.epochs, not args.no_augment,
                                                args.arch, args.input_size)
        frame = pd.read_csv(manifest)
        frame = frame[(frame.split == "test") & (frame.checker == 1)]
        cases = []
        for r in frame.itertuples():
            img = read_image(manifest.parent / r.path).first_frame()
            cases.append(("planted", img, box_mask(parse_boxes(r.checker_box), img.shape)))
        lines = auroc_lines(bundle, data)[:1]
    else:
        bundle = ModelBundle.load(args.model)
        cases = []
        for src, path, text, scale in boxed_cases(data):
            img = read_image(path).first_frame()
            cases.append((src, img, box_mask(parse_boxes(text, scale), img.shape)))
        lines = auroc_lines(bundle, data)
    print_tables(evaluate(bundle, cases, methods))
    print()
    for line in lines:
        print(line)
    print(f"model {bundle.info.arch} @ {bundle.info.input_size[0]} px, sha256 {bundle.sha256[:12]}; positive class "
          f"'{bundle.info.class_names[0]}'; n_boxed_images={len(cases)}; pointing_tol: within "
          f"{POINTING_TOLERANCE:.3f} x the shorter side; ROAD percentiles 20/40/60/80; seed 0")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
