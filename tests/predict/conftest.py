"""A real input tree for batch scoring: Kermany JPEGs of both classes, the SIIM DICOM without an extension in a
nested 'PACS export' folder, one planted corrupt file, and a non-image file that must be ignored."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.predict.sources import discover, load_preprocessed


@pytest.fixture(scope="session")
def real_tree(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("archive")
    kermany = data_dir / "kermany_pediatric_pneumonia" / "images"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls.lower()).mkdir()
        for f in sorted((kermany / cls).glob("*.jpeg"))[:18]:
            shutil.copy(f, root / cls.lower() / f.name)
    nested = root / "pacs" / "study1" / "series1"
    nested.mkdir(parents=True)
    dcm = next((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    shutil.copy(dcm, nested / "IM0001")  # extension-less, as PACS exports write them
    good = sorted((kermany / "NORMAL").glob("*.jpeg"))[0].read_bytes()
    (root / "normal" / "zz_corrupt.jpeg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (root / "notes.txt").write_text("not an image")
    return root


def fit_lenet(data_dir, size: int = 32, n: int = 600, epochs: int = 8) -> ModelBundle:
    """LeNet-5 fitted for seconds on real Kermany training images, so flags and heatmaps are meaningful."""
    torch.manual_seed(0)
    info = BundleInfo(arch="lenet5", task="binary", class_names=["pneumonia"], input_size=(size, size))
    items = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="train",
                     label_column="label_int")
    rng = np.random.default_rng(0)
    x, used = load_preprocessed([items[i] for i in rng.choice(len(items), n, replace=False)], info)
    y = torch.tensor([[it.label] for it in used], dtype=torch.float32)
    model = create_model("lenet5", 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt = torch.from_numpy(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is ~10x faster than two on a shared, busy CPU
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(xt[idx]), y[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    return ModelBundle(info, model.eval())


@pytest.fixture(scope="session")
def fitted_pt(tmp_path_factory, data_dir) -> Path:
    path = tmp_path_factory.mktemp("model") / "lenet.pt"
    fit_lenet(data_dir).save(path)
    return path
