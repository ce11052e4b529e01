from __future__ import annotations

import pytest
import torch

from radiolens.errors import ConfigError
from radiolens.models.registry import available_models, create_model, parameter_blocks, set_trainable_blocks


@pytest.mark.parametrize("arch", ["lenet5", "small_cnn", "resnet18", "efficientnet_b0", "densenet121",
                                  "alexnet", "googlenet"])
def test_blocks_cover_every_parameter_and_end_with_the_head(arch):
    model = create_model(arch, 3)
    blocks = parameter_blocks(model, arch)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(n for b in blocks for n in b) == sorted(names)
    head = dict(model.named_parameters())
    assert all(head[n].shape[0] == 3 for n in blocks[-1])  # the head produces the 3 outputs
    assert len(blocks) >= 3


def test_head_only_then_last_block(arch="resnet18"):
    model = create_model(arch, 2)
    blocks = parameter_blocks(model, arch)
    trainable = set(set_trainable_blocks(model, arch, 0))
    assert trainable == set(blocks[-1])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    trainable = set(set_trainable_blocks(model, arch, 1))
    assert trainable == set(blocks[-1]) | set(blocks[-2])
    assert set(set_trainable_blocks(model, arch, None)) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ConfigError):
        set_trainable_blocks(model, arch, -1)


def test_timm_rgb_weights_are_folded_into_one_channel(tmp_path):
    import timm

    rgb = timm.create_model("resnet18", num_classes=1000, in_chans=3)
    path = tmp_path / "resnet18_rgb.pth"
    torch.save(rgb.state_dict(), path)
    grey = create_model("resnet18", 2, weights=path)
    assert grey.conv1.weight.shape[1] == 1
    torch.testing.assert_close(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.layer3[0].conv1.weight, rgb.layer3[0].conv1.weight)
    assert grey.fc.out_features == 2


def test_torchvision_rgb_weights_are_folded(tmp_path):
    from torchvision.models import alexnet

    rgb = alexnet(weights=None)
    path = tmp_path / "alexnet_rgb.pth"
    torch.save(rgb.state_dict(), path)
    grey = create_model("alexnet", 1, weights=path)
    torch.testing.assert_close(grey.features[0].weight, rgb.features[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.features[3].weight, rgb.features[3].weight)


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="weights file not found"):
        create_model("resnet18", 1, weights=tmp_path / "absent.pth")


def test_every_registry_model_takes_one_channel():
    assert {"lenet5", "small_cnn", "resnet18", "resnet50", "densenet121", "efficientnet_b0", "vgg16", "alexnet",
            "googlenet"} <= set(available_models())
    for arch in ("lenet5", "small_cnn"):
        assert create_model(arch, 4)(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_three_stages_head_then_last_blocks_then_everything():
    from radiolens.train.config import OptimConfig
    from radiolens.train.module import StagedFinetuning

    staged = StagedFinetuning("efficientnet_lite0", head_epochs=1, unfreeze_blocks=2, unfreeze_all_from=3)
    assert [staged.blocks_at(e) for e in range(5)] == [0, 2, 2, None, None]
    assert StagedFinetuning("resnet18", 1, 1).blocks_at(9) == 1  # without the third stage: as before
    model = create_model("efficientnet_lite0", 1)
    names = {n for n, _ in model.named_parameters()}
    sizes = [len(set(set_trainable_blocks(model, "efficientnet_lite0", staged.blocks_at(e)))) for e in range(4)]
    assert sizes[0] < sizes[1] < sizes[3] == len(names) and sizes[1] == sizes[2]
    with pytest.raises(ValueError, match="unfreeze_all_from"):
        OptimConfig(head_epochs=2, unfreeze_all_from=1)
