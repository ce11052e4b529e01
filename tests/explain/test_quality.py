from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiolens.errors import InputError
from radiolens.explain.cam import cam_target, compute_cams
from radiolens.explain.quality import box_mask, energy_in_box, parse_boxes, pointing_hit, road_score
from radiolens.io import read_image
from radiolens.models.registry import create_model


def test_pointing_and_energy_on_known_map():
    heat = np.zeros((10, 10))
    heat[2, 3] = 1.0
    heat[8, 8] = 0.5
    m = box_mask(parse_boxes("a:2,1,3,3"), (10, 10))
    assert pointing_hit(heat, m) is True
    assert energy_in_box(heat, m) == pytest.approx(1 / 1.5)
    off = np.zeros((10, 10))
    off[7, 6] = 1.0  # the box covers rows 1-3, cols 2-4: the maximum is 4 rows below and 2 cols right of (3, 4)
    assert pointing_hit(off, m) is False
    assert pointing_hit(off, m, tolerance=4.4) is False  # distance sqrt(16 + 4) = 4.47
    assert pointing_hit(off, m, tolerance=4.5) is True


def test_box_outside_image_is_an_error():
    with pytest.raises(InputError, match="outside"):
        box_mask(parse_boxes("a:60,60,10,10"), (64, 64))
    with pytest.raises(InputError):
        parse_boxes("a:1,2,3")


def test_real_boxes_nih_and_tbx11k(data_dir):
    torch.manual_seed(0)
    model = create_model("small_cnn", 1)
    nih = pd.read_csv(data_dir / "nih_chestxray14" / "manifest.csv")
    rows = nih[nih.bbox_orig_coords.notna()]
    assert len(rows) == 9
    cases = [(data_dir / "nih_chestxray14" / r.path, r.bbox_orig_coords, r.width / 1024) for r in rows.itertuples()]
    tbx = pd.read_csv(data_dir / "tbx11k" / "manifest.csv")
    cases += [(data_dir / "tbx11k" / r.path, r.bbox_xywh, 1.0) for r in tbx[tbx.bbox_xywh.notna()].itertuples()]
    for path, text, scale in cases:
        img = read_image(path).first_frame()
        mask = box_mask(parse_boxes(text, scale), img.shape)
        x = ((torch.nn.functional.interpolate(torch.as_tensor(img)[None, None], size=(64, 64)) - 0.5) / 0.25)
        heat = compute_cams(model, x, [cam_target(0)], "eigencam", arch="small_cnn")[0]
        up = torch.nn.functional.interpolate(torch.as_tensor(heat)[None, None], size=img.shape)[0, 0].numpy()
        e = energy_in_box(up, mask)
        assert 0.0 <= e <= 1.0 and isinstance(pointing_hit(up, mask), bool)
        r = road_score(model, x, heat[None], [cam_target(0, probability=True)], percentiles=(50,))
        assert r.shape == (1,) and -1 <= r[0] <= 1
