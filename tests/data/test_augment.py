from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchvision.transforms import v2

from radiolens.data.transforms import AugmentConfig, RandomRot90, build_augmentation, resize_unit
from radiolens.io import read_image


def _ops(aug) -> list:
    return list(aug.transforms) if hasattr(aug, "transforms") else [aug]


@pytest.fixture(scope="module")
def cxr(data_dir) -> torch.Tensor:
    """A real chest radiograph at 64 px."""
    path = next((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))
    return resize_unit(read_image(path).pixels, (64, 64))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_defaults_are_anatomically_plausible():
    cfg = AugmentConfig()
    assert not (cfg.hflip or cfg.vflip or cfg.rot90)
    assert cfg.rotation_deg <= 10 and cfg.translate <= 0.1 and 0.85 <= cfg.scale[0] <= cfg.scale[1] <= 1.15
    kinds = {type(op) for op in _ops(build_augmentation(cfg))}
    assert not kinds & {v2.RandomVerticalFlip, v2.RandomHorizontalFlip, RandomRot90}
    affine = next(op for op in _ops(build_augmentation(cfg)) if isinstance(op, v2.RandomAffine))
    assert max(abs(d) for d in affine.degrees) == cfg.rotation_deg


def test_flips_and_rot90_only_when_asked():
    kinds = {type(op) for op in _ops(build_augmentation(AugmentConfig(vflip=True, rot90=True, hflip=True)))}
    assert {v2.RandomVerticalFlip, v2.RandomHorizontalFlip, RandomRot90} <= kinds


def test_out_of_range_settings_are_rejected():
    with pytest.raises(ValidationError):
        AugmentConfig(rotation_deg=90)
    with pytest.raises(ValidationError):
        AugmentConfig(scale=(1.2, 0.8))


def test_augmented_real_image_stays_upright_and_in_range(cxr):
    torch.manual_seed(0)
    aug = build_augmentation(AugmentConfig())
    flipped_v = torch.flip(cxr, dims=(-2,))  # upside down
    rotated = torch.rot90(cxr, 1, dims=(-2, -1))
    for _ in range(40):
        out = aug(cxr.clone())
        assert out.shape == cxr.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        c = _corr(out, cxr)
        assert c > _corr(out, flipped_v) and c > _corr(out, rotated)
        assert c > 0.4  # still the same radiograph, only gently moved / re-exposed


def test_disabled_is_identity(cxr):
    out = build_augmentation(AugmentConfig(enabled=False))(cxr)
    assert torch.equal(out, cxr)
