"""The NIH builder reads the public release's layout: images in images_001/images ... images_012/images, the
official Data_Entry_2017.csv columns, and train_val_list.txt / test_list.txt for the official split. Built here
from the real NIH images of RADIOLENS_DATA_DIR, copied into that layout."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from radiolens.data.builders import NIH_FINDINGS, NIH_SPLIT_LISTS, from_nih
from radiolens.errors import ManifestError


@pytest.fixture
def public_layout(data_dir, tmp_path):
    nih = data_dir / "nih_chestxray14"
    rows = pd.read_csv(nih / "manifest.csv", dtype=str).head(60)
    root = tmp_path / "ChestX-ray14"
    for i, r in enumerate(rows.itertuples()):
        folder = root / f"images_{1 + i % 12:03d}" / "images"  # spread over the release's 12 folders
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(nih / r.path, folder / r.image_index)
    table = pd.DataFrame({"Image Index": rows["image_index"], "Finding Labels": rows["finding_labels"],
                          "Follow-up #": rows["follow_up"], "Patient ID": rows["patient_id"].str.zfill(5),
                          "Patient Age": rows["age"], "Patient Gender": rows["sex"], "View Position": rows["view"],
                          "OriginalImage[Width": rows["orig_width"], "Height]": rows["orig_height"]})
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    patients = sorted(set(rows["patient_id"]))
    test_patients = set(patients[: len(patients) // 4])  # the release's lists are patient-disjoint too
    is_test = rows["patient_id"].isin(test_patients)
    (root / NIH_SPLIT_LISTS[0]).write_text("\n".join(rows.loc[~is_test, "image_index"]) + "\n")
    (root / NIH_SPLIT_LISTS[1]).write_text("\n".join(rows.loc[is_test, "image_index"]) + "\n")
    return root, rows, is_test


def test_public_layout_with_the_official_split(public_layout, tmp_path):
    root, rows, is_test = public_layout
    m = from_nih(root / "Data_Entry_2017.csv", root, tmp_path / "nih.csv")
    f = m.frame
    assert len(f) == len(rows) and set(NIH_FINDINGS) <= set(f.columns)
    assert all(str(p).count("images_0") == 1 for p in f["path"])  # found in the nested release folders
    by_image = dict(zip(rows["image_index"], is_test, strict=True))
    names = [p.rsplit("/", 1)[-1] for p in f["path"].astype(str)]
    assert [("test" if by_image[n] else "train_val") for n in names] == list(f["official_split"])
    assert set(f.loc[f["official_split"] == "test", "split"]) == {"test"}
    assert set(f.loc[f["official_split"] == "train_val", "split"]) <= {"train", "val"}
    assert f.groupby("patient_id")["split"].nunique().max() == 1  # no patient in two splits
    assert (f["split"] == "train").any()


def test_an_image_in_neither_list_is_refused(public_layout):
    root, rows, _ = public_layout
    listed = (root / NIH_SPLIT_LISTS[0]).read_text().splitlines()
    (root / NIH_SPLIT_LISTS[0]).write_text("\n".join(listed[1:]) + "\n")
    with pytest.raises(ManifestError, match="in neither train_val_list.txt nor test_list.txt"):
        from_nih(root / "Data_Entry_2017.csv", root)


def test_without_the_lists_no_split_is_invented(public_layout):
    root, _, _ = public_layout
    for name in NIH_SPLIT_LISTS:
        (root / name).unlink()
    f = from_nih(root / "Data_Entry_2017.csv", root).frame
    assert "split" not in f.columns and "official_split" not in f.columns
