"""End-to-end check of CAM target layers and the box metrics on a model whose evidence location is known.

The model (conftest ``marker_model``) learned two labels on real NIH radiographs: "a checkerboard patch is
present" and "a stripes patch is present", each planted at a random recorded place. A working explanation
pipeline (registry target layer -> per-class target -> upsampling -> pointing game / box energy) must put each
class's map on that class's own patch, far above the random baselines.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.explain.cam import cam_target, compute_cams, upsample_map
from radiolens.explain.explainer import explain_pixels
from radiolens.explain.quality import box_mask, energy_in_box, parse_boxes, pointing_hit
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle

MARKERS = ("checker", "stripes")  # the marker_model's classes (conftest)


def _test_rows(marker_set, pattern):
    frame = pd.read_csv(marker_set)
    return frame[(frame.split == "test") & (frame[pattern] == 1)]


def test_the_marker_model_learned_both_labels(marker_model):
    per_class = ModelBundle.load(marker_model).info.metrics["per_class"]
    assert all(per_class[m]["auroc"] > 0.95 for m in MARKERS), per_class


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_points_at_the_planted_marker_of_its_own_class(marker_model, marker_set, method):
    bundle = ModelBundle.load(marker_model)
    for pattern in MARKERS:
        rows = _test_rows(marker_set, pattern)
        other = next(m for m in MARKERS if m != pattern)
        assert len(rows) >= 20
        hits, energy, area, random_hits, random_energy, other_hits = [], [], [], [], [], []
        for r in rows.itertuples():
            pixels = read_image(marker_set.parent / r.path).first_frame()
            mask = box_mask(parse_boxes(getattr(r, f"{pattern}_box")), pixels.shape)
            (e,) = explain_pixels(bundle, pixels, method, [pattern])
            assert e.heatmap.shape == pixels.shape
            hits.append(pointing_hit(e.heatmap, mask))
            energy.append(energy_in_box(e.heatmap, mask))
            area.append(mask.mean())
            # grad-cam's RandomCAM: random channel weights on the same activations
            x = bundle.preprocess(pixels)[None]
            rnd = upsample_map(compute_cams(bundle.model, x, [cam_target(MARKERS.index(pattern))], "random",
                                            arch="small_cnn")[0],
                               pixels.shape)
            random_hits.append(pointing_hit(rnd, mask))
            random_energy.append(energy_in_box(rnd, mask))
            if getattr(r, other) == 1:  # both patches on the image: this class's map must not pick the other
                other_hits.append(pointing_hit(e.heatmap, box_mask(parse_boxes(getattr(r, f"{other}_box")),
                                                                   pixels.shape)))
        box_area = float(np.mean(area))  # what a uniformly random maximum / a flat map scores
        assert np.mean(hits) >= 0.9, (pattern, np.mean(hits))
        assert np.mean(energy) >= 5 * box_area, (pattern, np.mean(energy), box_area)
        assert np.mean(hits) > np.mean(random_hits) + 0.3 and np.mean(energy) > np.mean(random_energy) + 0.05
        assert len(other_hits) >= 5 and np.mean(other_hits) <= 0.2, (pattern, other_hits)


def test_heatmaps_come_back_at_the_original_size_of_a_non_square_image(marker_model, data_dir):
    """A 1024 px NIH radiograph cropped to 700 x 1024 (rows x cols); the model sees it at 48 x 48. Every
    class's map must come back at 700 x 1024, with its maximum where the model-resolution map has it (rows and
    columns not swapped or shifted by the upsampling)."""
    bundle = ModelBundle.load(marker_model)
    full = read_image(data_dir / "nih_chestxray14" / "images_fullres" / "00000001_000.png").first_frame()
    pixels = full[:700]
    x = bundle.preprocess(pixels)[None]
    for method in ("gradcam", "eigencam"):
        out = explain_pixels(bundle, pixels, method)
        assert [e.class_name for e in out] == list(MARKERS)  # multi-label default: every class
        for k, e in enumerate(out):
            assert e.heatmap.shape == (700, 1024) and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
            low = compute_cams(bundle.model, x, [cam_target(k)], method, arch="small_cnn")[0]
            assert low.shape == (48, 48)
            if low.max() <= 0:
                continue  # no evidence for this class anywhere: nothing to locate
            r, c = np.unravel_index(np.argmax(low), low.shape)
            R, C = np.unravel_index(np.argmax(e.heatmap), e.heatmap.shape)
            assert abs(R - (r + 0.5) * 700 / 48) <= 1.5 * 700 / 48 and abs(C - (c + 0.5) * 1024 / 48) <= 1.5 * 1024 / 48
    assert explain_pixels(bundle, pixels, "eigencam")[0].heatmap.max() > 0  # eigencam always locates something


def test_explain_cli_multilabel_per_class_overlays_on_nih_images(marker_model, marker_set, data_dir, tmp_path):
    both = pd.read_csv(marker_set)
    row = both[(both.split == "test") & (both.checker == 1) & (both.stripes == 1)].iloc[0]
    full = data_dir / "nih_chestxray14" / "images_fullres" / "00000002_000.png"
    r = CliRunner().invoke(app, ["explain", str(marker_set.parent / row.path), str(full), "--model",
                                 str(marker_model), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "o").glob("*.png"))
    assert names == [f"image{i:03d}_{m}_gradcam.png" for i in range(2) for m in MARKERS]
    inputs = [marker_set.parent / row.path, full]
    for name in names:
        with Image.open(tmp_path / "o" / name) as im, Image.open(inputs[int(name[5:8])]) as src:
            assert im.size == src.size  # one overlay pixel per image pixel
    r = CliRunner().invoke(app, ["explain", str(full), "--model", str(marker_model), "--out", str(tmp_path / "p"),
                                 "--class", "stripes", "--method", "eigencam"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "p").glob("*.png")] == ["image000_stripes_eigencam.png"]
    r = CliRunner().invoke(app, ["explain", str(full), "--model", str(marker_model), "--out", str(tmp_path / "q"),
                                 "--class", "normal"])  # a multi-label model has no negative class to explain
    assert r.exit_code == 2 and "unknown class" in r.output and "Traceback" not in r.output
