"""One record per architecture: everything the rest of the toolkit needs to know about a network.

The record plays the part timm's ``PretrainedCfg`` plays for timm: training, staged fine-tuning, class
activation maps, export and the embedding tap read the facts about an architecture from here (its builder,
default input size, CAM layer, block groups, first conv, classifier) instead of keeping their own tables,
so adding an architecture is one :func:`~radiolens.models.registry.register_architecture` call.

Module paths are dotted ``named_modules`` names of the *built* (1-channel) model. Block groups list the body
from input to output; the classifier is always the last group (the head of staged fine-tuning), so it is
not repeated in the groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from radiolens.errors import ConfigError, ModelError

#: ``weights=`` value meaning "download the library's ImageNet weights" (instead of a local file path)
IMAGENET = "imagenet"

#: ``builder(num_outputs, *, weights=None, dropout=...) -> nn.Module``. The built model may still have the
#: library's RGB first conv and its 1000-way classifier: :meth:`Architecture.build` adapts both (see there).
Builder = Callable[..., nn.Module]
#: Body block groups: parameter-name prefixes per group (input -> output), or a function of the built model
#: returning parameter names per group (timm models describe their own stages).
BlockGroups = Sequence[Sequence[str]] | Callable[[nn.Module], list[list[str]]]
Source = Literal["custom", "timm", "torchvision"]


@dataclass(frozen=True)
class Architecture:
    """What the toolkit knows about one classifier architecture.

    ``source`` says where pretrained weights come from: ``custom`` has none (trained from scratch);
    ``timm`` / ``torchvision`` accept ``weights="imagenet"`` (downloaded by that library) or a local file.
    ``cam_layer`` is the layer whose activations a CAM weighs (a dotted path, or a function of the model).
    """

    name: str
    builder: Builder
    default_input_size: int
    cam_layer: str | Callable[[nn.Module], nn.Module]
    first_conv: str
    classifier: str
    blocks: BlockGroups
    source: Source = "custom"
    description: str = ""
    #: The timm model name of a timm architecture (where its ImageNet weights are looked up in timm's cache).
    timm_name: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.default_input_size < 1:
            raise ModelError("an architecture needs a name and a positive default input size")
        if self.source not in ("custom", "timm", "torchvision"):
            raise ModelError(f"{self.name}: unknown weights source '{self.source}'")

    @property
    def has_pretrained(self) -> bool:
        """Whether ``weights="imagenet"`` (or an RGB weights file) applies to this architecture."""
        return self.source != "custom"

    # ------------------------------------------------------------------------------------------ building
    def build(self, num_outputs: int, *, weights: str | Path | None = None,
              dropout: float | None = None) -> nn.Module:
        """The model with 1 input channel and ``num_outputs`` logits.

        The builder's model is adapted through the record: a 3-channel first conv is folded to one channel
        (keeping pretrained RGB weights usable) and a classifier of another width is replaced, so a builder
        may return a library model as is.
        """
        if num_outputs < 1:
            raise ModelError("num_outputs must be >= 1")
        if weights is not None and not self.has_pretrained:
            raise ConfigError(f"{self.name} has no pretrained weights (it is trained from scratch); drop --weights")
        if weights is not None and weights != IMAGENET and not Path(weights).is_file():
            raise ConfigError(f"weights file not found: {weights} (or use '{IMAGENET}' to download)")
        kwargs = {} if dropout is None else {"dropout": dropout}
        model = self.builder(num_outputs, weights=weights, **kwargs)
        conv = self.first_conv_layer(model)
        if conv.in_channels == 3:
            _set_submodule(model, self.first_conv, fold_rgb_conv(conv))
        elif conv.in_channels != 1:
            raise ModelError(f"{self.name}: first conv takes {conv.in_channels} channels (1 or 3 expected)")
        head = self.classifier_layer(model)
        if head.out_features != num_outputs:
            _set_submodule(model, self.classifier, nn.Linear(head.in_features, num_outputs))
        return model

    # ------------------------------------------------------------------------------------------ layers
    def first_conv_layer(self, model: nn.Module) -> nn.Conv2d:
        layer = _module(model, self.first_conv, self.name, "first conv")
        if not isinstance(layer, nn.Conv2d):
            raise ModelError(f"{self.name}: first conv '{self.first_conv}' is a {type(layer).__name__}, not Conv2d")
        return layer

    def classifier_layer(self, model: nn.Module) -> nn.Linear:
        """The layer producing the logits (its input is the model's embedding)."""
        layer = _module(model, self.classifier, self.name, "classifier")
        if not isinstance(layer, nn.Linear):
            raise ModelError(f"{self.name}: classifier '{self.classifier}' is a {type(layer).__name__}, not Linear")
        return layer

    def cam_target_layer(self, model: nn.Module) -> nn.Module:
        if callable(self.cam_layer):
            return self.cam_layer(model)
        return _module(model, self.cam_layer, self.name, "CAM layer")

    # ------------------------------------------------------------------------------------------ blocks
    def parameter_blocks(self, model: nn.Module) -> list[list[str]]:
        """Parameter names in groups from input to output; the last group is the classifier (the head).

        Raises :class:`ModelError` unless the groups cover every parameter exactly once (guards edits of
        the record against silently frozen or doubly counted weights).
        """
        names = [n for n, _ in model.named_parameters()]
        head_prefix = self.classifier + "."
        head = [n for n in names if n.startswith(head_prefix)]
        if not head:
            raise ModelError(f"{self.name}: classifier '{self.classifier}' has no parameters")
        head_set = set(head)
        if callable(self.blocks):
            groups = self.blocks(model)
        else:
            groups = [[n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
                      for prefixes in self.blocks]
        body = [kept for g in groups if (kept := [n for n in g if n not in head_set])]
        listed = [n for g in body for n in g] + head
        if len(listed) != len(set(listed)) or set(listed) != set(names):
            raise ModelError(f"{self.name}: block groups do not cover every parameter exactly once")
        return [*body, head]


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


def _module(model: nn.Module, dotted: str, arch: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(dotted)
    except AttributeError as exc:
        raise ModelError(f"{arch}: {what} '{dotted}' is not a module of this model") from exc


def _set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_path, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)
