"""CAMs for every registry architecture, randomly initialised, small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from radiolens.errors import InputError, ModelError
from radiolens.explain.cam import cam_target, compute_cam, compute_cams, find_target_layer, upsample_map
from radiolens.models.registry import available_models, create_model, get_architecture

SIZES = {"lenet5": 32, "small_cnn": 64, "alexnet": 128}


def _non_degenerate(h: np.ndarray) -> bool:
    return bool(np.isfinite(h).all() and h.max() > 0 and h.std() > 1e-3)


@pytest.mark.parametrize("arch", available_models())
def test_every_registry_model_gets_a_named_layer_and_non_degenerate_maps(arch):
    torch.manual_seed(0)
    model = create_model(arch, 1)
    layer = find_target_layer(model, arch)
    assert layer is model.get_submodule(get_architecture(arch).cam_layer)
    s = SIZES.get(arch, 96)
    x = torch.randn(1, 1, s, s)
    for method in ("gradcam++", "eigencam"):
        h = compute_cam(model, x, 0, method, arch=arch)
        assert h.shape == (s, s) and h.min() >= 0 and h.max() <= 1
        assert _non_degenerate(h), (arch, method)
    # Plain Grad-CAM of a random net may be all-negative for one sign; one of the two classes must show evidence.
    pos = compute_cam(model, x, 0, "gradcam", arch=arch)
    neg = compute_cam(model, x, 0, "gradcam", arch=arch, negative=True)
    assert _non_degenerate(pos) or _non_degenerate(neg)
    # hooks released: no forward hooks left behind on any module
    assert all(not m._forward_hooks for m in model.modules())


def test_scorecam_and_multilabel_targets_small_cnn():
    torch.manual_seed(1)
    model = create_model("small_cnn", 3)
    x = torch.randn(1, 1, 64, 64)
    maps = compute_cams(model, x, [cam_target(k) for k in range(3)], "scorecam", arch="small_cnn")
    assert maps.shape == (3, 64, 64)
    assert not np.allclose(maps[0], maps[1])


def test_negative_class_map_differs_from_positive():
    torch.manual_seed(2)
    model = create_model("small_cnn", 1)
    x = torch.randn(1, 1, 64, 64)
    pos = compute_cam(model, x, 0, "gradcam", arch="small_cnn")
    neg = compute_cam(model, x, 0, "gradcam", arch="small_cnn", negative=True)
    assert not np.allclose(pos, neg)


def test_bad_inputs():
    with pytest.raises(ModelError):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)))
    model = create_model("small_cnn", 1)
    with pytest.raises(InputError):
        compute_cam(model, torch.randn(1, 1, 64, 64), 0, "nosuchcam")
    with pytest.raises(InputError):
        cam_target(1, negative=True)


def test_upsample_to_original_size():
    h = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    up = upsample_map(h, (100, 60))
    assert up.shape == (100, 60) and 0 <= up.min() and up.max() <= 1


def test_explainer_uses_the_registry_layer_of_the_bundle_arch():
    """explain_pixels passes the bundle's arch: efficientnet_b0's map comes from bn2 (after its activation),
    not from the last Conv2d that the no-arch fallback would pick."""
    from radiolens.explain.explainer import explain_pixels
    from radiolens.models.bundle import BundleInfo, ModelBundle

    torch.manual_seed(0)
    model = create_model("efficientnet_b0", 1)
    bundle = ModelBundle(info=BundleInfo(arch="efficientnet_b0", task="binary", class_names=["abnormal"],
                                         input_size=(96, 96)), model=model)
    pixels = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    (e,) = explain_pixels(bundle, pixels, "gradcam++")
    x = bundle.preprocess(pixels)[None]
    named = compute_cam(model, x, 0, "gradcam++", arch="efficientnet_b0")
    fallback = compute_cam(model, x, 0, "gradcam++")
    assert find_target_layer(model) is not find_target_layer(model, "efficientnet_b0")
    np.testing.assert_allclose(e.heatmap, named, atol=1e-6)
    assert not np.allclose(named, fallback, atol=1e-3)
