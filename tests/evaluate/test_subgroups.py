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
