from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiolens.errors import ManifestError
from radiolens.evaluate.subgroups import age_band, audit_subgroups, subgroup_table


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sex = np.where(rng.random(n) < 0.5, "F", "M")
    noise = np.where(sex == "M", 0.45, 0.1)  # the model is much worse for M
    p = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 1, n) * noise, 0, 1)
    age = rng.integers(20, 90, n)
    age[:10] = 10  # a tiny paediatric group
    return y, p, pd.DataFrame({"sex": sex, "age": age})


def test_flags_the_worse_group_and_reports_small_groups():
    y, p, df = _data()
    audit = audit_subgroups(y, p, df, ["sex", "age_band"], n_bootstrap=200)
    sex = {r["group"]: r for r in audit["columns"]["sex"]["groups"]}
    assert sex["M"]["status"] == "flagged" and sex["F"]["auroc"] > sex["M"]["auroc"]
    assert 0 <= audit["columns"]["sex"]["equalized_odds_difference"] <= 1
    ages = {r["group"]: r for r in audit["columns"]["age_band"]["groups"]}
    assert ages["paediatric (<18)"]["status"] == "too small to judge"
    table = subgroup_table(audit)
    assert len(table) == 5 and set(table.column) == {"sex", "age_band"}


def test_bad_column_is_clear():
    y, p, df = _data()
    with pytest.raises(ManifestError, match="no column 'site'"):
        audit_subgroups(y, p, df, ["site"])


def test_age_band_edges():
    b = age_band(pd.Series([17, 18, 64, 65, None]))
    assert list(b[:4]) == ["paediatric (<18)", "adult (18-64)", "adult (18-64)", "geriatric (>=65)"]
    assert pd.isna(b[4])


def test_nih_subgroups_real_data(data_dir):
    """Real NIH manifest columns (age, sex, view) with a probability that is honest noise around the label."""
    m = pd.read_csv(data_dir / "nih_chestxray14" / "manifest.csv")
    y = m["label_abnormal"].to_numpy()
    p = np.clip(0.5 + (y - 0.5) * 0.3 + np.random.default_rng(0).normal(0, 0.25, len(y)), 0, 1)
    audit = audit_subgroups(y, p, m, ["age_band", "sex", "view"], n_bootstrap=100)
    for block in audit["columns"].values():
        for r in block["groups"]:
            if r["status"] != "too small to judge":
                assert 0 <= r["auroc"] <= 1 and 0 <= r["ece"] <= 1
    assert {r["group"] for r in audit["columns"]["view"]["groups"]} == {"AP", "PA"}


def test_a_band_with_no_cases_is_listed_not_dropped(data_dir):
    """NIH has no patient under 18: the paediatric band must appear as '0 cases', too small to judge."""
    m = pd.read_csv(data_dir / "nih_chestxray14" / "manifest.csv")
    assert (m.age < 18).sum() == 0
    y = m["label_abnormal"].to_numpy()
    p = np.clip(0.5 + (y - 0.5) * 0.3 + np.random.default_rng(1).normal(0, 0.25, len(y)), 0, 1)
    audit = audit_subgroups(y, p, m, ["age_band", "sex"], n_bootstrap=50)
    bands = {r["group"]: r for r in audit["columns"]["age_band"]["groups"]}
    assert set(bands) == {"paediatric (<18)", "adult (18-64)", "geriatric (>=65)"}
    child = bands["paediatric (<18)"]
    assert child["n"] == 0 and child["n_positive"] == 0 and child["status"] == "too small to judge"
    assert child["reason"].startswith("0 cases")
    # it takes no part in the equalized-odds gaps, which come from the two judged bands
    judged = [r for r in bands.values() if r["status"] != "too small to judge"]
    assert len(judged) == 2
    assert audit["columns"]["age_band"]["tpr_gap"] == abs(judged[0]["sensitivity"] - judged[1]["sensitivity"])
    assert {r["group"] for r in audit["columns"]["sex"]["groups"]} == {"F", "M"}  # no invented groups
    table = subgroup_table(audit)
    assert ((table.group == "paediatric (<18)") & (table.n == 0)).sum() == 1
    none = audit_subgroups(y, p, m, ["age_band"], n_bootstrap=0, expected_groups={})
    assert "paediatric (<18)" not in {r["group"] for r in none["columns"]["age_band"]["groups"]}


@pytest.fixture(scope="module")
def two_sites(data_dir):
    """Real PneumoniaMNIST test scores from a pixel-level logistic regression, split into two 'sites' of equal
    size; site B's labels are 35 % flipped (a site with noisy reference labels), site A's are the real ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    d = np.load(data_dir / "medmnist" / "pneumoniamnist.npz")
    xs = {s: d[f"{s}_images"].reshape(len(d[f"{s}_images"]), -1) / 255.0 for s in ("train", "test")}
    scaler = StandardScaler().fit(xs["train"])
    clf = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(xs["train"]),
                                                        d["train_labels"].reshape(-1))
    p = clf.predict_proba(scaler.transform(xs["test"]))[:, 1]
    y = d["test_labels"].reshape(-1).astype(int).copy()
    rng = np.random.default_rng(0)
    site = np.where(rng.permutation(len(y)) % 2 == 0, "A", "B")
    flip = (site == "B") & (rng.random(len(y)) < 0.35)
    y[flip] = 1 - y[flip]
    return y, p, pd.DataFrame({"site": site})


def test_the_better_site_is_not_flagged_the_worse_one_is(two_sites):
    """Regression: a group whose AUROC CI lay wholly ABOVE overall was flagged as if the model were biased
    against it. Only underperformance is flagged; doing better is a note."""
    from sklearn.metrics import roc_auc_score

    y, p, frame = two_sites
    audit = audit_subgroups(y, p, frame, ["site"], n_bootstrap=300)
    sites = {r["group"]: r for r in audit["columns"]["site"]["groups"]}
    overall = audit["overall"]["auroc"]
    a, b = sites["A"], sites["B"]
    assert a["auroc"] == pytest.approx(roc_auc_score(y[frame.site == "A"], p[frame.site == "A"]))
    assert a["auroc_lower"] > overall > b["auroc_upper"]  # the data really has one better and one worse site
    assert a["status"] == "ok" and a["flags"] == []
    assert len(a["notes"]) == 1 and "better than overall" in a["notes"][0]
    assert b["status"] == "flagged" and any("below overall" in f for f in b["flags"]) and b["notes"] == []
    table = subgroup_table(audit).set_index("group")
    assert table.loc["A", "flags"] == "" and "better than overall" in table.loc["A", "notes"]


def test_model_card_rejudges_an_audit_file_that_flagged_the_better_group(two_sites, tmp_path):
    """A subgroups.json written before the fix (the better site flagged) reads correctly in the model card."""
    import json

    from radiolens.evaluate.model_card import build_card
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.registry import create_model

    y, p, frame = two_sites
    audit = audit_subgroups(y, p, frame, ["site"], n_bootstrap=100)
    rows = {r["group"]: r for r in audit["columns"]["site"]["groups"]}
    rows["A"].update(status="flagged", flags=["95% CI excludes overall"])  # the old file's verdict
    rows["A"].pop("notes")
    path = tmp_path / "subgroups.json"
    path.write_text(json.dumps(audit))
    bundle = ModelBundle(info=BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"],
                                         input_size=(28, 28)),
                         model=create_model("small_cnn", 1))
    card = build_card(bundle, subgroups_json=path)
    groups = {r["group"]: r for r in card["subgroups"]["columns"]["site"]["groups"]}
    assert groups["A"]["status"] == "ok" and groups["A"]["flags"] == [] and groups["A"]["notes"]
    assert groups["B"]["status"] == "flagged"
