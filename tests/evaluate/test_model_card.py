from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from radiolens.errors import InputError
from radiolens.evaluate.model_card import ADVISORY, build_card, write_card
from radiolens.evaluate.subgroups import audit_subgroups
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model


def test_card_json_and_html(tmp_path, data_dir):
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["abnormal"], input_size=(32, 32),
                      triage={"margin": 0.05, "budget": 0.2})
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    bundle.save(tmp_path / "m.pt")
    bundle = ModelBundle.load(tmp_path / "m.pt")
    manifest = data_dir / "nih_chestxray14" / "manifest.csv"
    m = pd.read_csv(manifest)
    y = m.label_abnormal.to_numpy()
    p = np.random.default_rng(0).random(len(y))
    (tmp_path / "sub.json").write_text(json.dumps(audit_subgroups(y, p, m, ["sex"], n_bootstrap=50), default=float))
    png = tmp_path / "ex.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(png, np.random.default_rng(1).random((8, 8)))
    card = build_card(bundle, subgroups_json=tmp_path / "sub.json", manifest=manifest, images=[png])
    jp, hp = write_card(card, tmp_path / "card", [png])
    data = json.loads(jp.read_text())
    assert data["model"]["sha256"] == bundle.sha256 and len(data["training_data"]["manifest_sha256"]) == 64
    assert data["triage"]["budget"] == 0.2
    html = hp.read_text()
    assert ADVISORY in html and "data:image/png;base64," in html and "equalized-odds" in html
    with pytest.raises(InputError):
        build_card(bundle, eval_json=tmp_path / "missing.json")
