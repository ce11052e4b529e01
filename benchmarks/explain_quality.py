"""Explanation quality per CAM method on real boxed images (NIH BBox rows + TBX11K), with a trained bundle.

    python benchmarks/explain_quality.py --model out/trust/nih/model.pt

Prints pointing-game hit rate, mean energy inside the box (and the box-area baseline a flat map would score),
and ROAD faithfulness (grad-cam package; higher = more faithful). "random" is grad-cam's RandomCAM baseline.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radiolens.explain.cam import cam_target, compute_cams, upsample_map
from radiolens.explain.quality import box_mask, energy_in_box, parse_boxes, pointing_hit, road_score
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--methods", default="gradcam,gradcam++,scorecam,eigencam,random")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = Path(os.environ["RADIOLENS_DATA_DIR"])
    bundle = ModelBundle.load(args.model)
    nih = pd.read_csv(data / "nih_chestxray14" / "manifest.csv")
    cases = [("nih", data / "nih_chestxray14" / r.path, r.bbox_orig_coords, r.width / 1024)
             for r in nih[nih.bbox_orig_coords.notna()].itertuples()]
    tbx = pd.read_csv(data / "tbx11k" / "manifest.csv")
    cases += [("tbx11k", data / "tbx11k" / r.path, r.bbox_xywh, 1.0) for r in tbx[tbx.bbox_xywh.notna()].itertuples()]
    rows = []
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        for src, path, text, scale in cases:
            img = read_image(path).first_frame()
            mask = box_mask(parse_boxes(text, scale), img.shape)
            x = bundle.preprocess(img)[None]
            heat = compute_cams(bundle.model, x, [cam_target(0)], method, arch=bundle.info.arch)
            up = upsample_map(heat[0], img.shape)
            road = road_score(bundle.model, x, heat, [cam_target(0, probability=True)])[0]
            rows.append(dict(method=method, source=src, hit=pointing_hit(up, mask), energy=energy_in_box(up, mask),
                             box_area=float(mask.mean()), road=road))
        rows[-1]["seconds"] = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    table = df.groupby("method", sort=False).agg(n=("hit", "size"), pointing_game=("hit", "mean"),
                                                  energy_in_box=("energy", "mean"), box_area=("box_area", "mean"),
                                                  road=("road", "mean"), road_sd=("road", "std"),
                                                  seconds=("seconds", "max"))
    print(table.round(3).to_string())
    print("\nper source:")
    print(df.groupby(["method", "source"], sort=False)[["hit", "energy", "box_area"]].mean().round(3).to_string())
    print(f"\nmodel {bundle.info.arch} sha256 {bundle.sha256[:12]}; positive class '{bundle.info.class_names[0]}';"
          f" n_boxed_images={len(cases)}; seed 0")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
