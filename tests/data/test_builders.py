from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radiolens.data.builders import (
    NIH_FINDINGS,
    from_image_folder,
    from_kermany,
    from_medmnist,
    from_nih,
    kermany_patient_and_type,
)
from radiolens.data.manifest import load_manifest
from radiolens.data.splits import check_leakage
from radiolens.errors import ManifestError


def test_kermany_file_names():
    assert kermany_patient_and_type("person1514_bacteria_3964.jpeg") == ("person1514", "bacterial")
    assert kermany_patient_and_type("person886_virus_1536.jpeg") == ("person886", "viral")
    assert kermany_patient_and_type("IM-0001-0001.jpeg") == ("IM-0001", "normal")
    assert kermany_patient_and_type("NORMAL2-IM-0246-0001-0001.jpeg") == ("NORMAL2-IM-0246", "normal")
    with pytest.raises(ManifestError):
        kermany_patient_and_type("scan.jpeg")


def test_kermany_builder_matches_published_patient_ids(kermany_dir, kermany_frame, tmp_path):
    m = from_kermany(kermany_dir / "images", tmp_path / "k.csv")
    assert len(m) == len(kermany_frame)
    built = m.frame.assign(key=[Path(p).name for p in m.frame.path]).set_index("key")
    ref = kermany_frame.assign(key=[Path(p).name for p in kermany_frame.path]).set_index("key")
    built = built.loc[ref.index]
    assert (built.patient_id == ref.patient_id).all()
    assert (built.label == ref.label.str.lower()).all()
    expected = ref.pneumonia_type.map({"none": "normal", "bacteria": "bacterial", "virus": "viral"})
    assert (built.subtype == expected).all()
    again = load_manifest(tmp_path / "k.csv")  # the written CSV is a valid manifest whose paths resolve
    again.check_files_exist()


def test_image_folder_builder(kermany_dir, kermany_frame, tmp_path):
    root = tmp_path / "tree"
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label.lower()).mkdir(parents=True)
        for p in kermany_frame[kermany_frame.label == label].path.head(3):
            shutil.copy(kermany_dir / p, root / label.lower() / Path(p).name)
    m = from_image_folder(root, tmp_path / "out" / "m.csv")
    assert sorted(m.frame.label.unique()) == ["normal", "pneumonia"]
    assert len(m) == 6 and m.frame.patient_id.nunique() == 6
    load_manifest(tmp_path / "out" / "m.csv").check_files_exist()
    with pytest.raises(ManifestError, match="no images"):
        from_image_folder(tmp_path / "out")


def test_nih_official_data_entry_layout(data_dir, tmp_path):
    nih = data_dir / "nih_chestxray14"
    ref = pd.read_csv(nih / "manifest.csv", dtype=str).head(6)
    # The official Data_Entry_2017_v2020.csv header, with two rows whose images we do not hold.
    official = pd.DataFrame({
        "Image Index": list(ref.image_index) + ["99999999_000.png", "99999999_001.png"],
        "Finding Labels": list(ref.finding_labels) + ["Hernia", "No Finding"],
        "Follow-up #": list(ref.follow_up) + ["0", "1"],
        "Patient ID": [f"{int(p):08d}" for p in ref.patient_id] + ["99999999", "99999999"],
        "Patient Age": list(ref.age) + ["40", "41"],
        "Patient Gender": list(ref.sex) + ["M", "M"],
        "View Position": list(ref.view) + ["PA", "PA"],
        "OriginalImage[Width": "2048", "Height]": "2048",
        "OriginalImagePixelSpacing[x": "0.14", "y]": "0.14",
    })
    csv = tmp_path / "Data_Entry_2017_v2020.csv"
    official.to_csv(csv, index=False)
    m = from_nih(csv, nih / "images_64px", tmp_path / "nih.csv")
    assert len(m) == 6  # absent images dropped
    assert list(m.frame.patient_id) == [str(int(p)) for p in ref.patient_id]
    for i, labels in enumerate(ref.finding_labels):
        present = set(labels.split("|")) - {"No Finding"}
        assert {f for f in NIH_FINDINGS if m.frame.loc[i, f] == 1} == present
    assert (m.frame.age.to_numpy() == ref.age.astype(float).to_numpy()).all()
    load_manifest(tmp_path / "nih.csv").check_files_exist()
    with pytest.raises(ManifestError, match="not in images_64px"):
        from_nih(csv, nih / "images_64px", require_all=True)


def test_nih_shared_manifest_layout_keeps_split(data_dir, tmp_path):
    nih = data_dir / "nih_chestxray14"
    ref = pd.read_csv(nih / "manifest.csv", dtype=str)
    ref64 = ref[ref.path.str.startswith("images_64px/")]
    m = from_nih(nih / "manifest.csv", nih / "images_64px", tmp_path / "nih.csv")
    assert len(m) == len(ref64)
    counts = {f: int(ref64.finding_labels.str.split("|").map(lambda fs, f=f: f in fs).sum()) for f in NIH_FINDINGS}
    assert {f: int(m.frame[f].sum()) for f in NIH_FINDINGS} == counts
    assert set(m.frame.split) == {"train", "val", "test"}
    check_leakage(m)


def test_medmnist_offline_subset_becomes_patient_disjoint_manifest(data_dir, tmp_path):
    npz = np.load(data_dir / "medmnist" / "pneumoniamnist.npz")
    m = from_medmnist("pneumoniamnist", data_dir / "medmnist", tmp_path, download=False)
    check_leakage(m)  # the published splits leak patients; the builder's must not
    test = m.frame[m.frame.split == "test"]
    assert len(test) == len(npz["test_images"])  # the published test split is kept whole
    assert (test.published_split == "test").all()
    # a train image is never from a test patient
    assert not set(m.frame[m.frame.split != "test"].patient_id) & set(test.patient_id)
    # labels survive the PNG round trip
    again = load_manifest(tmp_path / "manifest.csv")
    row = again.frame[again.frame.path == "images/test_000007.png"].iloc[0]
    assert row.label == ("pneumonia" if npz["test_labels"][7, 0] == 1 else "normal")
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / row.path)), npz["test_images"][7])


def test_medmnist_missing_offline_file_is_clear(tmp_path):
    from radiolens.errors import ConfigError

    with pytest.raises(ConfigError, match="offline"):
        from_medmnist("pneumoniamnist", tmp_path, tmp_path / "cache", download=False)
