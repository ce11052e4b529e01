"""resize_unit: never writes to the caller's pixels, clamps its own output, same numbers either path."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from radiolens.data.dataset import decode_images
from radiolens.data.transforms import resize_unit, to_model_tensor
from radiolens.io import read_image


def _real_224(data_dir) -> np.ndarray:
    path = next((data_dir / "kermany_pediatric_pneumonia" / "images" / "PNEUMONIA").glob("*.jpeg"))
    px = read_image(path).pixels
    assert px.dtype == np.float32 and px.shape == (224, 224)  # the shape that skips the resize
    return px


def test_same_size_input_is_not_modified(data_dir):
    px = _real_224(data_dir)
    px[0, :5] = [-0.25, 1.5, 2.0, -1.0, 0.5]  # out-of-range values the clamp must not write back
    before = px.copy()
    out = resize_unit(px, (224, 224))
    np.testing.assert_array_equal(px, before)
    assert not np.shares_memory(out.numpy(), px)
    assert out.shape == (1, 224, 224) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(out[0, 0, :5].numpy(), [0.0, 1.0, 1.0, 0.0, 0.5])
    np.testing.assert_array_equal(out[0, 1:].numpy(), before[1:])  # in-range pixels pass through exactly


def test_resized_and_tensor_inputs_are_not_modified(data_dir):
    px = _real_224(data_dir)
    before = px.copy()
    small = resize_unit(px, (64, 64))
    np.testing.assert_array_equal(px, before)
    # same numbers as plain torch antialiased bilinear + clamp
    ref = F.interpolate(torch.from_numpy(before)[None, None], size=(64, 64), mode="bilinear", antialias=True,
                        align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(small, ref, rtol=0, atol=0)
    t = torch.from_numpy(before.copy())
    t[0, 0] = 3.0
    t_before = t.clone()
    for size in ((224, 224), (32, 32)):
        out = resize_unit(t, size)
        assert torch.equal(t, t_before) and float(out.max()) <= 1.0
    # to_model_tensor (bundle / backends) goes through the same path
    to_model_tensor(before, (224, 224), 0.5, 0.25)
    np.testing.assert_array_equal(px, before)


def test_non_contiguous_and_float64_inputs(data_dir):
    px = _real_224(data_dir)
    flipped = px[:, ::-1]  # negative strides
    np.testing.assert_array_equal(resize_unit(flipped, (224, 224))[0].numpy(), np.clip(flipped, 0, 1))
    as64 = px.astype(np.float64)
    np.testing.assert_array_equal(resize_unit(as64, (224, 224))[0].numpy(), px)


def test_decode_images_matches_torch_rounding(data_dir):
    paths = sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))[:3]
    got = decode_images(paths, (48, 48))
    for i, p in enumerate(paths):
        x = resize_unit(read_image(p).pixels, (48, 48))
        assert torch.equal(got[i], (x * 255.0).round_().to(torch.uint8))


def test_to_model_tensor_matches_torch_formula(data_dir):
    px = _real_224(data_dir)
    for size in ((224, 224), (64, 64)):
        got = to_model_tensor(px, size, 0.48, 0.23)
        ref = (resize_unit(px.copy(), size) - 0.48) / 0.23
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        assert got.dtype == torch.float32 and got.shape == (1, *size)
