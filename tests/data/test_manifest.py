from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radiolens.data.manifest import LabelSpec, load_manifest
from radiolens.data.splits import check_ready_for_training
from radiolens.errors import DataLeakageError, ManifestError

BINARY = LabelSpec(task="binary", columns=["label"], positive="PNEUMONIA", positive_name="pneumonia")
THREE = LabelSpec(task="multiclass", columns=["pneumonia_type"], classes=["normal", "bacterial", "viral"],
                  aliases={"none": "normal", "bacteria": "bacterial", "virus": "viral"})


def _write(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    return path


def _with_splits(frame: pd.DataFrame) -> pd.DataFrame:
    """Alternate patients between train and val, keeping each patient on one side."""
    pids = {p: i for i, p in enumerate(dict.fromkeys(frame.patient_id))}
    return frame.assign(split=["train" if pids[p] % 2 == 0 else "val" for p in frame.patient_id])


def test_real_kermany_manifest_loads_and_passes_training_checks(kermany_dir):
    m = load_manifest(kermany_dir / "manifest.csv")
    assert len(m) == len(pd.read_csv(kermany_dir / "manifest.csv"))
    names = check_ready_for_training(m, BINARY, {"train": "train", "val": "val"})
    assert names == ["pneumonia"]
    names3 = check_ready_for_training(m, THREE, {"train": "train", "val": "val"}, check_files=False)
    assert names3 == ["normal", "bacterial", "viral"]
    y, _ = m.targets(THREE)
    raw = m.frame["pneumonia_type"].to_numpy()
    assert (y[raw == "none"] == 0).all() and (y[raw == "bacteria"] == 1).all() and (y[raw == "virus"] == 2).all()


def test_binary_targets_follow_positive_value(real_rows, tmp_path):
    m = load_manifest(_write(real_rows, tmp_path))
    y, names = m.targets(BINARY)
    assert names == ["pneumonia"]
    assert y.dtype == np.int64 and y.shape == (24,)
    np.testing.assert_array_equal(y, (real_rows.label == "PNEUMONIA").to_numpy().astype(int))


def test_multilabel_targets_shape(real_rows, tmp_path):
    frame = real_rows.assign(a=[0, 1] * 12, b=[1.0, 0.0] * 12)
    m = load_manifest(_write(frame, tmp_path))
    y, names = m.targets(LabelSpec(task="multilabel", columns=["a", "b"]))
    assert names == ["a", "b"] and y.shape == (24, 2)
    np.testing.assert_array_equal(y[:, 0] + y[:, 1], np.ones(24))


def test_missing_required_column(real_rows, tmp_path):
    with pytest.raises(ManifestError, match="patient_id"):
        load_manifest(_write(real_rows.drop(columns=["patient_id"]), tmp_path))


def test_missing_files_named_by_line(real_rows, tmp_path):
    frame = real_rows.copy()
    frame.loc[3, "path"] = str(tmp_path / "nope.png")
    m = load_manifest(_write(_with_splits(frame), tmp_path))
    with pytest.raises(ManifestError, match=r"1 image file\(s\) not found \(CSV lines 5\)"):
        check_ready_for_training(m, BINARY, {"train": "train", "val": "val"})


def test_unknown_label(real_rows, tmp_path):
    frame = _with_splits(real_rows)
    frame.loc[5, "pneumonia_type"] = "fungal"
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError, match="unknown label.*fungal"):
        check_ready_for_training(m, THREE, {"train": "train", "val": "val"})


def test_empty_class(real_rows, tmp_path):
    frame = _with_splits(real_rows)
    frame = frame[frame.pneumonia_type != "virus"]
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError, match="no example: viral"):
        check_ready_for_training(m, THREE, {"train": "train", "val": "val"})


def test_split_with_one_class(real_rows, tmp_path):
    frame = _with_splits(real_rows)
    frame.loc[frame.label == "NORMAL", "split"] = "train"
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError, match="split 'val' holds only one class"):
        check_ready_for_training(m, BINARY, {"train": "train", "val": "val"})


def test_patient_in_two_splits(real_rows, tmp_path):
    frame = _with_splits(real_rows)
    frame = pd.concat([frame, frame.iloc[[0]].assign(split="val")])  # same patient, other split
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(DataLeakageError, match="1 patient"):
        check_ready_for_training(m, BINARY, {"train": "train", "val": "val"})
    # the message names CSV lines, never the patient identifier
    with pytest.raises(DataLeakageError) as info:
        check_ready_for_training(m, BINARY, {"train": "train", "val": "val"})
    assert str(frame.iloc[0].patient_id) not in str(info.value)


def test_bad_row_types_reported_with_line(real_rows, tmp_path):
    frame = real_rows.assign(age=[5] * 24, sex=["F"] * 24)
    frame.loc[2, "age"] = -3
    with pytest.raises(ManifestError, match="line 4 column 'age'"):
        load_manifest(_write(frame, tmp_path))
    frame.loc[2, "age"] = 4
    frame.loc[7, "sex"] = "X"
    with pytest.raises(ManifestError, match="line 9 column 'sex'"):
        load_manifest(_write(frame, tmp_path))


def test_relative_paths_resolve_against_manifest_folder(kermany_dir, tmp_path):
    m = load_manifest(kermany_dir / "manifest.csv")
    assert m.absolute_paths()[0] == (kermany_dir / m.frame.path[0]).resolve()  # the data dir may be a symlink
    sub = m.with_frame(m.frame.head(5))
    saved = sub.save(tmp_path / "copy.csv")  # elsewhere: paths become absolute and still resolve
    again = load_manifest(saved)
    again.check_files_exist()
    assert [p.resolve() for p in again.absolute_paths()] == [p.resolve() for p in sub.absolute_paths()]


# ---------------------------------------------------------------- unknown labels never become a class
def test_binary_third_value_is_refused_with_counts_and_first_line(real_rows, tmp_path):
    frame = _with_splits(real_rows)
    frame.loc[[14, 20], "label"] = "FUNGAL"  # CSV lines 16 and 22
    frame.loc[17, "label"] = "Pneumonia"  # wrong case, CSV line 19
    m = load_manifest(_write(frame, tmp_path))
    declared = BINARY.model_copy(update={"negative": "NORMAL"})
    with pytest.raises(ManifestError) as info:
        check_ready_for_training(m, declared, {"train": "train", "val": "val"})
    msg = str(info.value)
    assert "3 row(s) have an unknown label in column 'label'" in msg
    assert "'FUNGAL' x2 (first CSV line 16)" in msg
    assert "'Pneumonia' x1 (first CSV line 19, differs from 'PNEUMONIA' only in case)" in msg
    assert "allowed: NORMAL, PNEUMONIA" in msg
    # without a declared negative the column has 3 values besides... and is refused as well
    with pytest.raises(ManifestError, match=r"holds 3 value\(s\) besides the positive 'PNEUMONIA'.*"
                                            r"declare label.negative"):
        m.targets(BINARY)
    # the old behaviour made FUNGAL a silent negative; the clean rows still give exact targets
    clean = load_manifest(_write(real_rows, tmp_path))
    y, _ = clean.targets(declared)
    np.testing.assert_array_equal(y, (real_rows.label == "PNEUMONIA").to_numpy().astype(int))


def test_binary_only_case_variant_as_other_value_is_refused(real_rows, tmp_path):
    frame = real_rows[real_rows.label == "PNEUMONIA"].copy()
    frame.iloc[0, frame.columns.get_loc("label")] = "pneumonia"
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError, match="'pneumonia' x1 .*only in case"):
        m.targets(BINARY)  # inferring the lone other value as negative would make it "normal"


def test_binary_zero_one_column_refuses_other_codes(real_rows, tmp_path):
    frame = real_rows.assign(target=(real_rows.label == "PNEUMONIA").astype(int))
    frame.loc[3, "target"] = 2
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError, match=r"'2' x1 \(first CSV line 5\); allowed: 0, 1"):
        m.targets(LabelSpec(task="binary", columns=["target"]))


def test_negative_only_for_binary_and_not_the_positive():
    with pytest.raises(ValueError, match="binary. only"):
        LabelSpec(task="multiclass", columns=["x"], negative="a")
    with pytest.raises(ValueError, match="also listed as negative"):
        LabelSpec(task="binary", columns=["x"], positive="a", negative=["a", "b"])


def test_learned_classes_must_occur_in_train(real_rows, tmp_path):
    learned = LabelSpec(task="multiclass", columns=["pneumonia_type"])
    frame = _with_splits(real_rows)
    m = load_manifest(_write(frame, tmp_path))
    assert check_ready_for_training(m, learned, {"train": "train", "val": "val"}) == ["bacteria", "none"]
    val_rows = frame.index[frame.split == "val"]
    frame.loc[val_rows[:2], "pneumonia_type"] = "fungal"
    m = load_manifest(_write(frame, tmp_path))
    with pytest.raises(ManifestError) as info:
        check_ready_for_training(m, learned, {"train": "train", "val": "val"})
    msg = str(info.value)
    assert "val split 'val' has label value(s) never seen in the train split" in msg
    assert f"'fungal' x2 (first CSV line {val_rows[0] + 2})" in msg and "train: bacteria, none (" in msg
