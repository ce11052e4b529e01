"""Adding an architecture is one record: a newly registered one trains (with staged fine-tuning), explains
(CAM), exports to ONNX with parity and exposes its blocks, with no other change anywhere.

Two new entries: a small custom network whose builder returns it with an RGB first conv and a 10-way
classifier (the record adapts both, as for a torchvision model), and timm's ``resnet10t`` (random init,
its stages from timm's own group matcher).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from radiolens.explain.cam import compute_cam, find_target_layer
from radiolens.io.formats import read_image
from radiolens.models.architecture import Architecture
from radiolens.models.builders import timm_blocks, timm_builder
from radiolens.models.embedding import EmbeddingTap
from radiolens.models.export import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, export_onnx
from radiolens.models.registry import (
    available_models,
    create_model,
    get_architecture,
    parameter_blocks,
    register_architecture,
    set_trainable_blocks,
    unregister_architecture,
)
from radiolens.train.config import config_from_dict
from radiolens.train.pipeline import train_model


class RgbTinyNet(nn.Module):
    """Shaped like a library ImageNet model: 3-channel stem, 10-way classifier (the record adapts both)."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.body(self.stem(x))).flatten(1)))


NEW = {
    "tiny_rgb_test": Architecture(
        "tiny_rgb_test", lambda n, weights=None, dropout=0.0: RgbTinyNet(dropout), 32,
        cam_layer="body.2", first_conv="stem.0", classifier="fc", blocks=(("stem",), ("body",)),
        description="test-only custom net"),
    "resnet10t_test": Architecture(
        "resnet10t_test", timm_builder("resnet10t"), 64, cam_layer="layer4", first_conv="conv1.0",
        classifier="fc", blocks=timm_blocks, source="timm", description="test-only timm ResNet-10-T"),
}


@pytest.fixture(params=sorted(NEW))
def new_arch(request):
    arch = register_architecture(NEW[request.param])
    yield arch
    unregister_architecture(arch.name)
    assert arch.name not in available_models()


def test_staged_fine_tuning_freezes_by_the_record_blocks(new_arch):
    model = create_model(new_arch.name, 2)
    assert new_arch.first_conv_layer(model).in_channels == 1 and new_arch.classifier_layer(model).out_features == 2
    blocks = parameter_blocks(model, new_arch.name)
    assert len(blocks) >= 3  # at least two body groups and the head
    assert blocks[-1] == [n for n, _ in model.named_parameters() if n.startswith(new_arch.classifier + ".")]
    for last_n in range(len(blocks)):
        set_trainable_blocks(model, new_arch.name, last_n)
        grads = dict((n, p.requires_grad) for n, p in model.named_parameters())
        for i, block in enumerate(blocks):
            expected = i >= len(blocks) - 1 - last_n
            assert all(grads[n] is expected for n in block), (last_n, i)


def test_new_architecture_trains_explains_and_exports(new_arch, pneumonia_tiny, tmp_path, tiny_config):
    raw = tiny_config(pneumonia_tiny, arch=new_arch.name, epochs=2, head_epochs=1, unfreeze_blocks=1)
    raw["model"]["input_size"] = None  # the record's default input size is used
    cfg = config_from_dict(raw)
    r = train_model(cfg, tmp_path / "run")
    size = new_arch.default_input_size
    assert r.bundle.info.arch == new_arch.name and r.bundle.info.input_size == (size, size)
    assert len(r.history) == 2 and np.isfinite(r.val.logits).all()

    # staged fine-tuning ran: epoch 1 head only, epoch 2 also the last body group; earlier groups untouched.
    # The returned weights are the best epoch's; the trainable flags are those of the last epoch.
    L.seed_everything(cfg.seed, verbose=False)
    init = create_model(new_arch.name, 1).state_dict()  # the seeded initial weights of the run
    trained = r.bundle.model.state_dict()
    blocks = parameter_blocks(r.bundle.model, new_arch.name)
    flags = {n: p.requires_grad for n, p in r.bundle.model.named_parameters()}
    assert all(not flags[n] for b in blocks[:-2] for n in b) and all(flags[n] for b in blocks[-2:] for n in b)
    assert all(torch.equal(init[n], trained[n]) for b in blocks[:-2] for n in b)
    body_moved = not all(torch.equal(init[n], trained[n]) for n in blocks[-2])
    assert body_moved == (r.best_epoch == 2), r.best_epoch  # the body trains in epoch 2 only
    assert not all(torch.equal(init[n], trained[n]) for n in blocks[-1])

    # CAM on real images, hooked at the record's layer (not the last-conv fallback)
    paths = r.manifest.subset("test").absolute_paths()[:4]
    batch = np.stack([r.bundle.preprocess(read_image(p)).numpy() for p in paths])
    layer = find_target_layer(r.bundle.model, new_arch.name)
    assert layer is r.bundle.model.get_submodule(new_arch.cam_layer)
    heat = compute_cam(r.bundle.model, torch.from_numpy(batch[:1]), 0, "gradcam++", arch=new_arch.name)
    assert heat.shape == (size, size) and np.isfinite(heat).all() and heat.max() > 0

    # ONNX export with the embedding output, outputs equal to PyTorch's
    report = export_onnx(r.bundle, tmp_path / "m.onnx", batch)
    assert report.parity.passed and report.embedding_output
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    logits, emb = sess.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: batch})
    tap = EmbeddingTap(r.bundle.model, 1, new_arch.name)
    assert tap.layer is get_architecture(new_arch.name).classifier_layer(r.bundle.model)
    ref_logits, ref_emb = tap(torch.from_numpy(batch))
    tap.close()
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(emb, ref_emb.numpy(), atol=1e-4, rtol=1e-4)
