"""The intensity contract at the model boundary.

Every model in radiolens receives 1-channel tensors built here from [0, 1] pixels, then normalised with
the bundle's mean/std. Inputs outside [0, 1] are rejected loudly, because silently mis-scaled input is
the commonest cause of constant predictions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from radiolens.data.model_input import check_unit_range


def resize_unit(pixels: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) [0,1] pixels -> a NEW (1, h, w) float tensor, antialiased area-preserving resize.

    The caller's array is never written to (an earlier version clamped it in place when no resize was
    needed, because ``torch.as_tensor`` shares memory with a float32 array). Clamping runs in numpy, not
    as a torch op: with 2+ torch threads on a busy machine every small torch op pays an intra-op thread
    wake-up of milliseconds, which made reading 224^2 JPEGs 12x slower than the resize-free naive loop
    (docs/io.md). The antialiased interpolation itself stays in torch: Pillow's float resampler uses the same
    filter but rounds differently (~1e-5), and these are the numbers training and evaluation see; the
    torch-free serving path uses Pillow's (radiolens.data.model_input).
    """
    size = (int(size[0]), int(size[1]))
    if isinstance(pixels, torch.Tensor):
        t = pixels.detach().to(device="cpu", dtype=torch.float32)
        if t.ndim == 2:
            t = t[None]
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
            return t.clamp_(0.0, 1.0)  # a fresh tensor: in place is safe
        return t.clamp(0.0, 1.0)  # out of place: never the caller's storage
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if tuple(arr.shape[-2:]) == size:
        return torch.from_numpy(np.ascontiguousarray(np.clip(arr, 0.0, 1.0)))  # np.clip: a new array
    t = F.interpolate(torch.from_numpy(np.ascontiguousarray(arr))[None], size=size, mode="bilinear",
                      antialias=True, align_corners=False)[0]
    out = t.numpy()  # shares t's (new) storage
    np.clip(out, 0.0, 1.0, out=out)
    return t


def to_model_tensor(pixels: np.ndarray | torch.Tensor, size: tuple[int, int], mean: float, std: float,
                    what: str = "image") -> torch.Tensor:
    """Validate, resize and normalise one image -> (1, h, w)."""
    check_unit_range(pixels, what)
    t = resize_unit(pixels, size)  # a fresh tensor: normalised in place, in numpy (see resize_unit)
    out = t.numpy()
    out -= np.float32(mean)
    out /= np.float32(std)
    return t


# ------------------------------------------------------------------------------------------- augmentation
class AugmentConfig(BaseModel):
    """Training-time augmentation, anatomically plausible by default.

    A chest radiograph is never upside down and the heart sits on the patient's left, so vertical flips,
    90-degree rotations and (by default) horizontal flips produce images no scanner makes; they are
    opt-in only. The defaults mimic real variation: patient positioning (small rotation, scale, shift)
    and exposure/processing (brightness, contrast, gamma).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    rotation_deg: float = Field(7.0, ge=0, le=45)
    scale: tuple[float, float] = (0.92, 1.08)
    translate: float = Field(0.05, ge=0, le=0.3)  # fraction of width/height
    brightness: float = Field(0.1, ge=0, le=0.5)
    contrast: float = Field(0.1, ge=0, le=0.5)
    gamma: tuple[float, float] = (0.85, 1.15)
    hflip: bool = False  # opt-in: mirrors the heart to the right side
    vflip: bool = False  # opt-in: anatomically impossible
    rot90: bool = False  # opt-in: anatomically impossible

    @field_validator("scale", "gamma")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError("range must be (low, high) with 0 < low <= high")
        return v


class RandomGamma(torch.nn.Module):
    """Gamma on [0, 1] pixels (torchvision has adjust_gamma but no random transform for it)."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = float(torch.empty(1).uniform_(self.low, self.high))
        return x.clamp(0.0, 1.0).pow(g)


class RandomRot90(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(0, 4, (1,))), dims=(-2, -1))


def build_augmentation(cfg: AugmentConfig | None = None) -> torch.nn.Module:
    """torchvision v2 pipeline on (1, H, W) [0, 1] tensors, output clamped to [0, 1]."""
    from torchvision.transforms import v2

    cfg = cfg or AugmentConfig()
    if not cfg.enabled:
        return torch.nn.Identity()
    ops: list[torch.nn.Module] = [
        v2.RandomAffine(degrees=cfg.rotation_deg, translate=(cfg.translate, cfg.translate), scale=cfg.scale,
                        interpolation=v2.InterpolationMode.BILINEAR, fill=0.0),
    ]
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.vflip:
        ops.append(v2.RandomVerticalFlip())
    if cfg.rot90:
        ops.append(RandomRot90())
    if cfg.brightness or cfg.contrast:
        ops.append(v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast))
    if cfg.gamma != (1.0, 1.0):
        ops.append(RandomGamma(*cfg.gamma))
    ops.append(v2.Lambda(lambda t: t.clamp(0.0, 1.0)))
    return v2.Compose(ops)
