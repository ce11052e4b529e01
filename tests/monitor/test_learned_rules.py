"""The gate's header rules come from what the model was trained on, and ``monitor baseline`` refuses a gate that
refuses its own validation images. Real data: the README demo's PneumoniaMNIST (28 px) end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.io import read_image
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.monitor import MonitoringProfile

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def mnist_manifest(data_dir: Path, tmp_path_factory) -> Path:
    """The demo's manifest (``make-manifest medmnist pneumoniamnist``): 28 px PNGs, patient-disjoint splits."""
    from radiolens.data.builders import from_medmnist

    out = tmp_path_factory.mktemp("pneumoniamnist_gate")
    from_medmnist("pneumoniamnist", data_dir / "medmnist", out, download=False)
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def mnist_model(mnist_manifest: Path, tmp_path_factory, quick_fit) -> Path:
    """small_cnn at the data's own 28 px, 3 epochs on 800 real training images (a few seconds)."""
    frame = pd.read_csv(mnist_manifest, dtype={"patient_id": str})
    train = frame[frame.split == "train"].sample(n=800, random_state=0)
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(28, 28),
                      name="mnist-gate-test", version="0.test")
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    x = torch.stack([bundle.preprocess(read_image(mnist_manifest.parent / p)) for p in train["path"]])
    y = torch.tensor([[float(v == "pneumonia")] for v in train["label"]])
    quick_fit(bundle, x, y, epochs=3)
    path = tmp_path_factory.mktemp("mnist-model") / "model.pt"
    bundle.save(path)
    return path


def _baseline(model: Path, manifest: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["monitor", "baseline", "--model", str(model), "--manifest", str(manifest),
                                    "--split", "val", "--out", str(out), "--no-labels", *extra])


def test_demo_model_is_accepted_by_its_own_gate(mnist_model, mnist_manifest, tmp_path):
    out = tmp_path / "registered.pt"
    result = _baseline(mnist_model, mnist_manifest, out)
    assert result.exit_code == 0, result.output
    profile = MonitoringProfile.from_bundle(ModelBundle.load(out))
    # the size rule is learned from the images (half their smallest side), not a fixed 32 px
    sides = [min(read_image(mnist_manifest.parent / p).pixels.shape)
             for p in pd.read_csv(mnist_manifest).query("split == 'val'")["path"]]
    rules = profile.input_gate().rules
    assert rules.learned and rules.min_side_px == int(np.floor(0.5 * min(sides))) <= min(sides)
    assert profile.heldout["by_header"] == 0
    lo, hi = profile.heldout["ci"]
    assert not profile.far_above_target and lo <= profile.density.target_false_rejection, result.output
    assert f"{profile.heldout['rejected']} of {profile.heldout['images']} validation images" in result.output

    # batch scoring of the validation images: the gate assesses them (the issue: all 359 were "not assessed")
    results = tmp_path / "val.csv"
    run = CliRunner().invoke(app, ["predict", str(mnist_manifest), "--split", "val", "--model", str(out),
                                   "--out", str(results), "--no-progress", "--workers", "0"])
    assert run.exit_code == 0, run.output
    with open(results, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(sides)
    refused = [r for r in rows if r["status"] == "out_of_distribution"]
    assert len(refused) <= 0.08 * len(rows), (len(refused), refused[:3])  # target 2 %, allowance for ~360 images
    assert not any("smaller than" in r["flag_reason"] for r in refused)


def test_baseline_fails_when_the_gate_refuses_its_own_images(mnist_model, mnist_manifest, tmp_path):
    """A header rule the data contradicts (an explicit 32 px minimum on 28 px images): the gate would refuse
    every validation image, so ``monitor baseline`` exits non-zero, says why, and writes nothing."""
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text("gate:\n  min_side_px: 32\n")
    out = tmp_path / "registered.pt"
    result = _baseline(mnist_model, mnist_manifest, out, "--config", str(cfg))
    assert result.exit_code == 2, result.output
    assert "far above its target" in result.output and "smaller than 32 px" in result.output
    assert "Traceback" not in result.output and not out.exists()
    # registering anyway is possible, and said out loud
    forced = _baseline(mnist_model, mnist_manifest, out, "--config", str(cfg), "--allow-high-rejection")
    assert forced.exit_code == 0 and "ABOVE TARGET" in forced.output, forced.output
    assert MonitoringProfile.from_bundle(ModelBundle.load(out)).far_above_target


def test_a_model_of_large_images_refuses_a_thumbnail(registered, mnist_manifest):
    """The other direction of the same rule: the Kermany model (224 px validation images) refuses a 28 px
    PneumoniaMNIST image of the same kind of chest film, naming the size it was validated on."""
    _, bundle = registered
    gate = MonitoringProfile.from_bundle(bundle).input_gate()
    thumb = read_image(mnist_manifest.parent / pd.read_csv(mnist_manifest)["path"].iloc[0])
    result = gate.check(thumb.meta, thumb.height, thumb.width, None)
    assert not result.passed
    assert any("smaller than" in r and "smallest validation image" in r for r in result.reasons), result.reasons
