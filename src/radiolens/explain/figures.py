"""Overlay PNGs at the image's own size, optional side-by-side figures (image beside the heatmap, colour bar,
class and probability), and first-layer filter / feature-map grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ADVISORY = "Advisory only: where the model looked, not a diagnosis"


def _check_same_size(pixels: np.ndarray, heat: np.ndarray) -> None:
    if np.shape(heat) != np.shape(pixels):
        from radiolens.errors import InputError

        # a smaller map stretched over the image without complaint would misplace the evidence
        raise InputError(f"heatmap {np.shape(heat)} and image {np.shape(pixels)} differ in size")


def overlay_rgb(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W) windowed [0, 1] image and (H, W) map in [0, 1] -> (H, W, 3) uint8: the grey image with the map's
    jet colours blended in at ``alpha``, pixel for pixel (no figure, no resampling)."""
    import matplotlib

    _check_same_size(pixels, heat)
    grey = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)[..., None]
    colour = matplotlib.colormaps["jet"](np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0))[..., :3]
    blend = (1.0 - alpha) * grey + alpha * colour
    return np.clip(np.rint(blend * 255.0), 0, 255).astype(np.uint8)


def save_overlay(pixels: np.ndarray, heat: np.ndarray, path: str | Path, class_name: str, probability: float,
                 method: str) -> Path:
    """The overlay as a PNG of exactly the image's width x height (one output pixel per image pixel), so it
    can be laid over the original in a viewer. Class, probability, method and the advisory line go into the
    PNG's text chunks (nothing is drawn over the image)."""
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for key, value in (("radiolens:class", class_name), ("radiolens:probability", f"{probability:.6f}"),
                       ("radiolens:method", method), ("Comment", ADVISORY)):
        meta.add_text(key, value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(pixels, heat), mode="RGB").save(path, pnginfo=meta)
    return path


def save_overlay_figure(pixels: np.ndarray, heat: np.ndarray, path: str | Path, class_name: str,
                        probability: float, method: str) -> Path:
    """A side-by-side figure for reading (windowed image beside the overlay, colour bar, class and probability,
    advisory line); its size is the figure's, not the image's."""
    _check_same_size(pixels, heat)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 4.2))
    axes[0].imshow(pixels, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image (windowed)")
    axes[1].imshow(pixels, cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[1].set_title(f"{method}: {class_name}  p={probability:.2f}")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="relative importance")
    fig.suptitle(ADVISORY, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _grid(maps: np.ndarray, path: Path, title: str, cmap: str = "gray") -> Path:
    plt = _plt()
    n = len(maps)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[i], cmap=cmap)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def first_conv(model: nn.Module) -> nn.Conv2d:
    from radiolens.errors import ModelError

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ModelError("model has no convolutional layer")


def save_filters(model: nn.Module, path: str | Path) -> Path:
    """First-layer kernels as a grid (1-channel input: one kernel per output channel)."""
    w = first_conv(model).weight.detach().cpu().numpy()[:, 0]
    return _grid(w[:64], Path(path), f"first-layer filters ({w.shape[0]} x {w.shape[1]}x{w.shape[2]})", "gray")


@torch.no_grad()
def save_feature_maps(model: nn.Module, x: torch.Tensor, path: str | Path) -> Path:
    """Activations of the first conv layer for one (1, 1, H, W) input."""
    conv = first_conv(model)
    store = {}
    handle = conv.register_forward_hook(lambda m, i, o: store.setdefault("a", o.detach()))
    try:
        model.eval()
        model(x)
    finally:
        handle.remove()
    a = store["a"][0].cpu().numpy()
    return _grid(a[:64], Path(path), f"first-layer feature maps ({a.shape[0]} channels)", "viridis")
