from __future__ import annotations

import numpy as np
import pytest
import torch

from radiolens.data.dataset import ImageTensorDataset, decode_images, intensity_stats
from radiolens.errors import ManifestError


@pytest.fixture(scope="module")
def mixed_files(data_dir):
    """One real DICOM, one real JPEG, one real PNG."""
    dcm = next((data_dir / "siim_acr_pneumothorax" / "dicom").rglob("*.dcm"))
    jpg = next((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))
    png = next((data_dir / "nih_chestxray14" / "images_64px").glob("*.png"))
    return [dcm, jpg, png]


def test_dicom_jpeg_png_decode_alike(mixed_files, tmp_path):
    x = decode_images(mixed_files, (32, 32))
    assert x.shape == (3, 1, 32, 32) and x.dtype == torch.uint8
    for img in x:  # real radiographs: not blank, use a good part of the grey range
        assert int(img.max()) - int(img.min()) > 100
    cached = decode_images(mixed_files, (32, 32), cache_dir=tmp_path)
    assert torch.equal(cached, x) and len(list(tmp_path.glob("decoded-*.pt"))) == 1
    assert torch.equal(decode_images(mixed_files, (32, 32), cache_dir=tmp_path), x)  # read back from disk


def test_unreadable_file_names_its_line(mixed_files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ManifestError, match="CSV line 3"):
        decode_images([mixed_files[0], bad], (16, 16))


def test_dataset_normalises_with_given_stats(mixed_files):
    x = decode_images(mixed_files, (16, 16))
    mean, std = intensity_stats(x)
    ds = ImageTensorDataset(x, np.array([0, 1, 0]), mean, std)
    stacked = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(float(stacked.mean())) < 1e-4 and abs(float(stacked.std()) - 1) < 0.01
    assert ds[1][1].item() == 1
