"""EMA / SWA weight averaging and MixUp in training: the saved model holds the averaged weights, SWA's late
start never reverts a run to its initial weights, and MixUp trains on convex blends of batch pairs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from radiolens.errors import ConfigError
from radiolens.train.config import OptimConfig, config_from_dict
from radiolens.train.module import AveragedWeights, ClassifierModule
from radiolens.train.pipeline import train_model


class _Toy(L.LightningModule):
    """A linear model on fixed random data; ``seen`` records its weight after every optimizer step."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen.append((self.current_epoch, self.net.weight.detach().clone()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback, epochs=2) -> _Toy:
    L.seed_everything(0, verbose=False)
    x = torch.randn(64, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
    toy = _Toy()
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(toy, data)
    return toy


def test_swa_final_weights_are_the_mean_of_the_steps_from_its_start_epoch():
    toy = _fit(AveragedWeights("swa", swa_from_epoch=1))
    late = [w for epoch, w in toy.seen if epoch >= 1]
    assert len(late) == 4
    torch.testing.assert_close(toy.net.weight.detach(), torch.stack(late).mean(0))
    assert not torch.allclose(toy.net.weight.detach(), toy.seen[-1][1])  # not simply the last step


def test_swa_that_never_started_keeps_the_trained_weights_not_the_initial_ones():
    toy = _fit(AveragedWeights("swa", swa_from_epoch=5))  # e.g. a run cut short by max_minutes
    torch.testing.assert_close(toy.net.weight.detach(), toy.seen[-1][1])


def test_ema_follows_the_exponential_average_of_the_steps():
    decay = 0.5
    toy = _fit(AveragedWeights("ema", ema_decay=decay), epochs=1)
    expected = toy.seen[0][1]
    for _, w in toy.seen[1:]:
        expected = decay * expected + (1 - decay) * w
    torch.testing.assert_close(toy.net.weight.detach(), expected)


def test_swa_start_must_fall_inside_training():
    base = {"name": "t", "data": {"manifest": "m.csv", "label": {"task": "binary", "columns": ["label"]}}}
    with pytest.raises(ConfigError, match="swa_from_epoch"):
        config_from_dict({**base, "optim": {"epochs": 3, "weight_averaging": "swa", "swa_from_epoch": 3}})


def test_trained_bundle_holds_the_averaged_weights(pneumonia_tiny, tmp_path, tiny_config):
    """An EMA this slow stays at the weights of its first update (after one AdamW step of lr 0.003, so within
    0.003 of the initial weights), and the saved model must too; the same run without it moves several steps
    away (the checkpoint would otherwise hold the raw weights)."""
    from radiolens.models.registry import create_model

    L.seed_everything(0, verbose=False)
    init = create_model("small_cnn", 1).state_dict()
    slow = train_model(config_from_dict(tiny_config(pneumonia_tiny, weight_averaging="ema", ema_decay=0.99999999)),
                       tmp_path / "ema").bundle.model.state_dict()
    raw = train_model(config_from_dict(tiny_config(pneumonia_tiny)), tmp_path / "raw").bundle.model.state_dict()
    key = "features.0.0.weight"
    assert (slow[key] - init[key]).abs().max() < 0.0031
    assert (raw[key] - init[key]).abs().max() > 0.01


def test_mixup_trains_on_convex_blends_of_batch_pairs_with_the_blended_loss():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1).sum(1, keepdim=True) - 8

    loss_fn = nn.BCEWithLogitsLoss()
    module = ClassifierModule(Recorder(), "small_cnn", "binary", loss_fn, OptimConfig(mixup_alpha=0.4))
    module.log = lambda *a, **k: None
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1], dtype=torch.float32).view(-1, 1)
    torch.manual_seed(1)
    loss = module.training_step((x, y), 0)
    torch.manual_seed(1)  # the same draws: one Beta(alpha, alpha) weight per batch, then a partner per row
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(8)
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(8))
    torch.testing.assert_close(seen[0], lam * x + (1 - lam) * x[perm])
    out = seen[0].flatten(1).sum(1, keepdim=True) - 8
    torch.testing.assert_close(loss, lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y[perm]))
    assert not torch.allclose(loss, loss_fn(out, y))  # the partner's label counts


def test_mixup_off_trains_on_the_batch_itself():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.flatten(1).sum(1, keepdim=True)

    module = ClassifierModule(Recorder(), "small_cnn", "binary", nn.BCEWithLogitsLoss(), OptimConfig())
    module.log = lambda *a, **k: None
    x = torch.rand(4, 1, 2, 2)
    module.training_step((x, torch.ones(4, 1)), 0)
    assert seen[0] is x
