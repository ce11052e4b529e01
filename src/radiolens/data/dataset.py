"""Manifest rows -> tensors, decoded once.

Every image goes through :func:`radiolens.io.read_image` (DICOM, PNG, JPEG alike) and
:func:`resize_unit`, then is kept in memory as uint8 at the model's input size: decoding a JPEG costs far
more than a small CNN's forward pass on a CPU, so decoding once per run (and optionally once per machine
through ``cache_dir``) is what makes CPU training fast. 4,000 images at 224 px take ~200 MB.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from radiolens.data.manifest import Manifest
from radiolens.data.transforms import resize_unit
from radiolens.errors import InputError, ManifestError
from radiolens.io import read_image


def _cache_key(paths: list[Path], size: tuple[int, int]) -> str:
    h = hashlib.sha256(f"{size}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:20]


def decode_images(paths: list[Path], size: tuple[int, int], cache_dir: str | Path | None = None,
                  progress: bool = False, write_cache: bool = True) -> torch.Tensor:
    """All images as a (N, 1, H, W) uint8 tensor at ``size``; unreadable files raise ManifestError.
    ``write_cache=False`` reads a cached copy but never writes one (the processes of a distributed run other
    than the first share the cache folder and must not race to write the same file)."""
    size = (int(size[0]), int(size[1]))
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"decoded-{_cache_key(paths, size)}.pt"
        if cache_file.is_file():
            return torch.load(cache_file, weights_only=True)
    out = torch.empty((len(paths), 1, *size), dtype=torch.uint8)
    out_np = out.numpy()  # filled through numpy: per-image torch ops pay thread wake-ups (see resize_unit)
    iterator = range(len(paths))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="decoding images", unit="img", leave=False)
    for i in iterator:
        try:
            pixels = read_image(paths[i]).first_frame()
        except InputError as exc:
            raise ManifestError(f"CSV line {i + 2}: {exc}") from exc
        out_np[i] = np.rint(resize_unit(pixels, size).numpy() * 255.0)
    if cache_file is not None and write_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(out, tmp)
        tmp.replace(cache_file)
    return out


class ImageTensorDataset(Dataset):
    """Decoded uint8 images + targets; augments (on [0, 1] pixels) then normalises per item."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, mean: float, std: float,
                 augment: torch.nn.Module | None = None):
        if len(images) != len(targets):
            raise ManifestError("images and targets differ in length")
        self.images = images
        self.targets = torch.as_tensor(targets)
        self.mean, self.std = float(mean), float(std)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, self.targets[i]


def manifest_images(manifest: Manifest, size: tuple[int, int], cache_dir: str | Path | None = None,
                    progress: bool = False, write_cache: bool = True) -> torch.Tensor:
    manifest.check_files_exist()
    return decode_images(manifest.absolute_paths(), size, cache_dir, progress, write_cache)


def intensity_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of [0, 1] pixels of a uint8 image stack (the bundle's normalisation)."""
    x = images.float().div_(255.0)
    std = float(x.std())
    return float(x.mean()), std if std > 1e-6 else 1.0
