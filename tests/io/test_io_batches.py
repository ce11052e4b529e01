"""The batch functions behind ``radiolens preview`` and ``radiolens deid``, called as a library on real files:
bad files are counted and reported through ``on_error``, the rest is written."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from radiolens.errors import BurnedInAnnotationError, InputError, RadiolensError
from radiolens.io import read_image
from radiolens.io.deid import Deidentifier
from radiolens.io.deid_batch import deidentify_sources
from radiolens.io.preview import preview_files, render_preview

pytestmark = pytest.mark.realdata
SECRET = "a-test-secret-of-32-bytes-length"


def test_preview_files_walks_folders_and_reports_bad_files(siim_dicom, pydicom_dir, data_dir, tmp_path):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    shutil.copy(siim_dicom, src / "nested" / "Doe_John.dcm")
    kermany = sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))[0]
    shutil.copy(kermany, src / "chest.jpeg")
    (src / "IM0002").write_bytes(b"\x00" * 300)  # extension-less and unrecognised: reported, not skipped
    (src / "notes.txt").write_text("not an image")  # never walked
    missing = tmp_path / "missing.dcm"
    errors: list[tuple[str, RadiolensError]] = []

    summary = preview_files([src, pydicom_dir / "SC_rgb_2frame.dcm", missing], tmp_path / "out", all_frames=True,
                            on_error=lambda path, exc: errors.append((path.name, exc)))

    assert summary.failed == len(errors) == 2
    assert sorted(name for name, _ in errors) == ["IM0002", "missing.dcm"]
    assert all(isinstance(exc, RadiolensError) for _, exc in errors)
    # two single-frame images and the two frames of the multi-frame file
    assert len(summary.written) == 4 and sorted(summary.written) == sorted((tmp_path / "out").glob("*.png"))
    expected = np.rint(read_image(siim_dicom).pixels * 255).astype(np.uint8)
    assert any(np.array_equal(np.asarray(Image.open(p)), expected) for p in summary.written)
    # the same names as one file at a time
    assert render_preview(kermany, tmp_path / "single")[0].name in {p.name for p in summary.written}


def test_deidentify_sources_counts_match_the_report(siim_dicom, pydicom_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("RG1_UNCR.dcm", "US1_UNCR.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"):
        shutil.copy(pydicom_dir / name, folder / name)
    out = tmp_path / "out"
    errors: list[tuple[str, RadiolensError]] = []
    deid = Deidentifier(SECRET)

    summary = deidentify_sources([siim_dicom, folder], out, deid,
                                 on_error=lambda path, exc: errors.append((path.name, exc)))

    with open(summary.csv_path, newline="", encoding="utf-8") as fh:
        report = list(csv.DictReader(fh))
    assert [r["status"] for r in report] == [r["status"] for r in summary.rows]
    assert summary.total == len(report) == 4
    assert summary.ok == sum(r["status"] == "ok" for r in report) == len(list(out.glob("*.dcm")))
    assert summary.refused == sum(isinstance(exc, BurnedInAnnotationError) for _, exc in errors)
    assert "US1_UNCR.dcm" in {name for name, exc in errors if isinstance(exc, BurnedInAnnotationError)}
    assert summary.failed == summary.total - summary.ok == len(errors)
    assert summary.json_path.is_file() and summary.csv_path.parent == out


def test_deidentify_sources_checks_every_source_before_writing(siim_dicom, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="nope.dcm"):
        deidentify_sources([siim_dicom, tmp_path / "nope.dcm"], out, Deidentifier(SECRET))
    assert not out.exists()
