"""One registry of classifiers, all taking 1-channel input.

timm models use ``in_chans=1`` (timm folds pretrained RGB first-conv weights into one channel itself) and
``pretrained_cfg_overlay=dict(file=PATH)`` for an offline weights file. torchvision-only architectures
(AlexNet, GoogLeNet) get the same folding done here, because torchvision has no ``in_chans`` option.

Pretrained weights: a local file (offline), or the name ``imagenet``, downloaded (and cached) by timm from
the Hugging Face hub or by torchvision from download.pytorch.org; without network and cache that raises
:class:`~radiolens.errors.WeightsUnavailableError` naming the offline alternative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from radiolens.errors import ConfigError, ModelError, WeightsUnavailableError

#: ``weights=`` value meaning "download the library's ImageNet weights" (instead of a local file path)
IMAGENET = "imagenet"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    default_input_size: int
    source: str  # "custom" | "timm" | "torchvision"
    builder: Callable[..., nn.Module]
    description: str = ""


class LeNet5(nn.Module):
    """LeNet-5 adapted to 1-channel input of any size >= 28 (adaptive pooling before the classifier)."""

    def __init__(self, num_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 25, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout), nn.Linear(84, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class SmallCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU x2 + pool) for 28-64 px inputs; fast on a laptop CPU."""

    def __init__(self, num_outputs: int, width: int = 32, dropout: float = 0.2):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(1, width), block(width, width * 2), block(width * 2, width * 4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width * 4, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _timm(arch: str) -> Callable[..., nn.Module]:
    def build(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.0) -> nn.Module:
        import timm

        kwargs: dict = dict(num_classes=num_outputs, in_chans=1, drop_rate=dropout)
        if weights == IMAGENET:
            try:  # timm downloads through huggingface_hub (cached under HF_HOME)
                return timm.create_model(arch, pretrained=True, **kwargs)
            except Exception as exc:  # network/cache errors come from several libraries; all mean "not here"
                raise _unavailable(arch, exc) from exc
        if weights is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
        return timm.create_model(arch, **kwargs)

    return build


def fold_rgb_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Replace a 3-channel first conv by a 1-channel one whose kernel is the sum over RGB.

    Summing (as timm does) keeps activations on the same scale for a grey image replicated to RGB.
    """
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _unavailable(arch: str, exc: BaseException) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {arch} could not be downloaded ({type(exc).__name__}: offline, or not in the "
        "cache?); offline, pass a local weights file instead (--weights PATH / model.weights)")


def _torchvision_imagenet_state(arch: str) -> dict:
    import torchvision.models as tvm

    enum = {"alexnet": tvm.AlexNet_Weights, "googlenet": tvm.GoogLeNet_Weights}[arch].IMAGENET1K_V1
    try:  # cached under TORCH_HOME after the first download
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib / socket / hash errors all mean "not available here"
        raise _unavailable(arch, exc) from exc


def _load_torchvision_weights(model: nn.Module, weights: str | Path | None, arch: str = "alexnet") -> None:
    if weights is None:
        return
    if weights == IMAGENET:
        model.load_state_dict(_torchvision_imagenet_state(arch))
        return
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def _alexnet(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.5) -> nn.Module:
    from torchvision.models import alexnet

    m = alexnet(weights=None, dropout=dropout)
    _load_torchvision_weights(m, weights)
    m.features[0] = fold_rgb_conv(m.features[0])
    m.classifier[-1] = nn.Linear(m.classifier[-1].in_features, num_outputs)
    return m


def _googlenet(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.2) -> nn.Module:
    from torchvision.models import googlenet

    m = googlenet(weights=None, aux_logits=False, init_weights=weights is None, dropout=dropout)
    if weights is not None:
        state = (_torchvision_imagenet_state("googlenet") if weights == IMAGENET
                 else torch.load(Path(weights), map_location="cpu", weights_only=True))
        state = {k: v for k, v in state.items() if not k.startswith("aux")}
        m.load_state_dict(state)
    m.transform_input = False  # ImageNet RGB re-normalisation makes no sense for 1-channel input
    m.conv1.conv = fold_rgb_conv(m.conv1.conv)
    m.fc = nn.Linear(m.fc.in_features, num_outputs)
    return m


MODELS: dict[str, ModelSpec] = {
    "lenet5": ModelSpec("lenet5", 32, "custom", lambda n, weights=None, dropout=0.0: LeNet5(n, dropout),
                        "LeNet-5, 1-channel"),
    "small_cnn": ModelSpec("small_cnn", 64, "custom",
                           lambda n, weights=None, dropout=0.2: SmallCNN(n, dropout=dropout),
                           "3-block CNN for 28-64 px inputs"),
    "resnet18": ModelSpec("resnet18", 224, "timm", _timm("resnet18"), "ResNet-18"),
    "resnet50": ModelSpec("resnet50", 224, "timm", _timm("resnet50"), "ResNet-50"),
    "densenet121": ModelSpec("densenet121", 224, "timm", _timm("densenet121"), "DenseNet-121 (CheXNet's model)"),
    "efficientnet_b0": ModelSpec("efficientnet_b0", 224, "timm", _timm("efficientnet_b0"), "EfficientNet-B0"),
    "vgg16": ModelSpec("vgg16", 224, "timm", _timm("vgg16"), "VGG-16"),
    "alexnet": ModelSpec("alexnet", 224, "torchvision", _alexnet, "AlexNet"),
    "googlenet": ModelSpec("googlenet", 224, "torchvision", _googlenet, "GoogLeNet (Inception v1), no aux heads"),
}


def has_pretrained(name: str) -> bool:
    """Whether ``weights="imagenet"`` (or an RGB weights file) applies to this architecture."""
    return MODELS[name].source != "custom"


def available_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, num_outputs: int, *, weights: str | Path | None = None,
                 dropout: float | None = None) -> nn.Module:
    """Build a registry model with 1 input channel and ``num_outputs`` logits.

    ``weights``: a local pretrained file, or ``"imagenet"`` to download the library's ImageNet weights
    (RGB weights are folded to 1 channel either way).
    """
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")
    if num_outputs < 1:
        raise ModelError("num_outputs must be >= 1")
    if weights is not None and spec.source == "custom":
        raise ConfigError(f"{name} has no pretrained weights (it is trained from scratch); drop --weights")
    if weights is not None and weights != IMAGENET and not Path(weights).is_file():
        raise ConfigError(f"weights file not found: {weights} (or use '{IMAGENET}' to download)")
    kwargs = {} if dropout is None else {"dropout": dropout}
    return spec.builder(num_outputs, weights=weights, **kwargs)


# --------------------------------------------------------------------------- staged fine-tuning
# Blocks (input -> output) of the non-timm models, as parameter-name prefixes; the last entry is the head.
_BLOCKS: dict[str, list[tuple[str, ...]]] = {
    "lenet5": [("features.0",), ("features.3",), ("classifier.1", "classifier.4"), ("classifier.7",)],
    "small_cnn": [("features.0",), ("features.1",), ("features.2",), ("classifier",)],
    "alexnet": [("features.0",), ("features.3",), ("features.6",), ("features.8",), ("features.10",),
                ("classifier.1", "classifier.4"), ("classifier.6",)],
    "googlenet": [("conv1",), ("conv2", "conv3"), ("inception3a", "inception3b"),
                  ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
                  ("inception5a", "inception5b"), ("fc",)],
}


def parameter_blocks(model: nn.Module, name: str) -> list[list[str]]:
    """Parameter names grouped into blocks from input to output; the last block is the classifier head.

    timm models describe their own blocks (``group_matcher(coarse=True)``: stem, stages, head), so staged
    fine-tuning knows every architecture's structure without a hand-kept list for them.
    """
    names = [n for n, _ in model.named_parameters()]
    if MODELS.get(name) is None:
        raise ModelError(f"unknown model '{name}'")
    if MODELS[name].source == "timm":
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        blocks = [list(v) for _, v in sorted(grouped.items())]
        head_names = {f"{n}" for n, _ in model.get_classifier().named_parameters(prefix=_classifier_prefix(model))}
        # timm's last group can hold a final norm with the head; keep only the classifier as "head"
        last = blocks[-1]
        rest = [n for n in last if n not in head_names]
        blocks = blocks[:-1] + ([rest] if rest else []) + [[n for n in last if n in head_names]]
        return [b for b in blocks if b]
    blocks = []
    for prefixes in _BLOCKS[name]:
        blocks.append([n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)])
    covered = {n for b in blocks for n in b}
    if covered != set(names):
        raise ModelError(f"{name}: block table does not cover every parameter")  # guards registry edits
    return blocks


def _classifier_prefix(model: nn.Module) -> str:
    head = model.get_classifier()
    for n, m in model.named_modules():
        if m is head:
            return n
    raise ModelError("classifier module not found")


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
