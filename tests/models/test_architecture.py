"""Every registered architecture's record resolves on a built model; the registry guards its names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radiolens.errors import ConfigError, ModelError
from radiolens.models.architecture import Architecture
from radiolens.models.embedding import classifier_layer
from radiolens.models.registry import (
    available_models,
    create_model,
    get_architecture,
    register_architecture,
    unregister_architecture,
)


@pytest.mark.parametrize("arch", available_models())
def test_record_resolves_on_the_built_model(arch):
    rec = get_architecture(arch)
    model = create_model(arch, 3)
    conv = rec.first_conv_layer(model)
    assert conv.in_channels == 1
    # the first conv is the one the input meets first
    assert conv is next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    head = rec.classifier_layer(model)
    assert head.out_features == 3
    assert head is classifier_layer(model, 3)  # the record names the layer the embedding search finds
    assert isinstance(rec.cam_target_layer(model), nn.Module)
    blocks = rec.parameter_blocks(model)
    assert sorted(n for b in blocks for n in b) == sorted(n for n, _ in model.named_parameters())
    assert rec.has_pretrained == (rec.source != "custom")


@pytest.mark.parametrize("arch", [a for a in available_models() if get_architecture(a).source == "timm"])
def test_timm_records_agree_with_timms_own_config(arch):
    """First conv and classifier of a timm entry are what timm's ``pretrained_cfg`` says."""
    model = create_model(arch, 2)
    cfg = model.pretrained_cfg
    rec = get_architecture(arch)
    assert (rec.first_conv, rec.classifier) == (cfg["first_conv"], cfg["classifier"])
    assert rec.default_input_size == cfg["input_size"][-1]


def test_registry_refuses_duplicates_and_unknown_names():
    rec = get_architecture("small_cnn")
    with pytest.raises(ModelError, match="already registered"):
        register_architecture(rec)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        get_architecture("nope")
    with pytest.raises(ModelError, match="unknown model"):
        create_model("nope", 1)
    with pytest.raises(ModelError):
        Architecture("bad", rec.builder, 0, "x", "x", "x", ())


def test_a_record_that_misses_parameters_is_refused():
    rec = Architecture("partial_test", get_architecture("small_cnn").builder, 64, cam_layer="features.2.5",
                       first_conv="features.0.0", classifier="classifier.2", blocks=(("features.0",),))
    register_architecture(rec)
    try:
        model = create_model("partial_test", 1)
        with pytest.raises(ModelError, match="cover every parameter"):
            rec.parameter_blocks(model)
    finally:
        unregister_architecture("partial_test")


def test_custom_architecture_refuses_weights(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({}, path)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_model("lenet5", 1, weights=path)
