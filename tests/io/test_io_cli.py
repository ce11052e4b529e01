"""``radiolens preview`` / ``radiolens deid`` as a user runs them: one line per bad file, no traceback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from PIL import Image

from radiolens.io import read_image

pytestmark = pytest.mark.realdata


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "RADIOLENS_DEID_SECRET"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "radiolens.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


def _assert_clean_errors(proc: subprocess.CompletedProcess, n_lines: int) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == n_lines, proc.stderr
    assert all(ln.startswith("error: ") for ln in lines)


def test_preview_real_files_names_and_bad_file(siim_dicom, pydicom_dir, data_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    named = src / "Doe_John_1961.dcm"  # a PHI-bearing file name must not reach the output names
    shutil.copy(siim_dicom, named)
    (src / "garbage.dcm").write_bytes(b"\x00" * 300)
    nih = next(iter(sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))))
    out = tmp_path / "previews"
    proc = _cli("preview", str(named), str(src / "garbage.dcm"), str(pydicom_dir / "RG1_J2KR.dcm"), str(nih),
                "--out", str(out))
    assert proc.returncode == 1
    _assert_clean_errors(proc, 1)
    assert "garbage.dcm" in proc.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert re.fullmatch(r"img-[0-9a-f]{16}\.png", png.name), png.name
        assert "Doe" not in png.name and "1.2.276" not in png.name
    siim_png = [p for p in pngs if np.asarray(Image.open(p)).shape == (1024, 1024)]
    expected = np.rint(read_image(siim_dicom).pixels * 255).astype(np.uint8)
    assert any(np.array_equal(np.asarray(Image.open(p)), expected) for p in siim_png)


def test_preview_window_and_all_frames(pydicom_dir, tmp_path):
    proc = _cli("preview", str(pydicom_dir / "SC_rgb_2frame.dcm"), "--out", str(tmp_path / "mf"), "--all-frames")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "mf").glob("*_f000[01].png"))) == 2
    a = _cli("preview", str(pydicom_dir / "RG1_UNCR.dcm"), "--out", str(tmp_path / "w1"))
    b = _cli("preview", str(pydicom_dir / "RG1_UNCR.dcm"), "--out", str(tmp_path / "w2"),
             "--window-center", "1500", "--window-width", "500")
    assert a.returncode == b.returncode == 0
    pa, pb = (np.asarray(Image.open(next((tmp_path / d).glob("*.png")))) for d in ("w1", "w2"))
    assert not np.array_equal(pa, pb)
    bad = _cli("preview", str(pydicom_dir / "RG1_UNCR.dcm"), "--out", str(tmp_path / "w3"), "--window-center", "5")
    assert bad.returncode == 2
    _assert_clean_errors(bad, 1)


def test_deid_refuses_without_secret_and_reports_bad_files(pydicom_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("RG1_UNCR.dcm", "US1_UNCR.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"):
        shutil.copy(pydicom_dir / name, src / name)
    (src / "noise").write_bytes(os.urandom(2048))
    proc = _cli("deid", str(src), str(tmp_path / "out"))
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    _assert_clean_errors(proc, 1)
    assert "secret" in proc.stderr
    proc = _cli("deid", str(src), str(tmp_path / "out"), env={"RADIOLENS_DEID_SECRET": "env-secret-123456"})
    assert proc.returncode == 1
    _assert_clean_errors(proc, 3)  # US refused (burned-in), truncated file, noise
    assert "US1_UNCR.dcm: refused" in proc.stderr and "truncated" in proc.stderr
    assert "rerun with --allow-burned-in" in proc.stderr  # the CLI, not the io layer, names its own flag
    rows = (tmp_path / "out" / "deid_report.csv").read_text().splitlines()
    statuses = sorted(r.split(",")[1] for r in rows[1:])
    assert statuses == ["error", "error", "ok", "refused"]
    assert not any(n in "\n".join(rows) for n in ("RG1_UNCR", "US1_UNCR", "too_short", "noise"))
    allowed = _cli("deid", str(src / "US1_UNCR.dcm"), str(tmp_path / "out2"), "--secret", "env-secret-123456",
                   "--allow-burned-in")
    assert allowed.returncode == 0, allowed.stderr


def test_missing_input_is_one_line(tmp_path):
    proc = _cli("preview", str(tmp_path / "absent.dcm"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    _assert_clean_errors(proc, 1)
    # the secret from the environment: --secret on the command line adds a warning line (test_state_permissions.py)
    proc = _cli("deid", str(tmp_path / "absent"), str(tmp_path / "o"),
                env={"RADIOLENS_DEID_SECRET": "long-enough-secret"})
    assert proc.returncode == 2
    _assert_clean_errors(proc, 1)


def test_deid_pixel_text_option(pydicom_dir, tmp_path):
    """--pixel-text: an unknown policy is a usage error listing the choices (exit 2, nothing written);
    ``mask`` processes an ultrasound the header rule would refuse, blacking out the real text of its header
    bar, and the report counts what was masked (never what it said)."""
    env = {"RADIOLENS_DEID_SECRET": "env-secret-123456"}
    src = pydicom_dir / "US1_UNCR.dcm"
    bad = _cli("deid", str(src), str(tmp_path / "bad"), "--pixel-text", "blur", env=env)
    assert bad.returncode == 2 and "--pixel-text" in bad.stderr and not (tmp_path / "bad").exists()
    assert "Traceback" not in bad.stderr and "'refuse', 'mask', 'off'" in bad.stderr  # refused while parsing
    masked = _cli("deid", str(src), str(tmp_path / "out"), "--pixel-text", "mask", env=env)
    assert masked.returncode == 0, masked.stderr
    header, row = (tmp_path / "out" / "deid_report.csv").read_text().splitlines()
    report = dict(zip(header.split(","), row.split(","), strict=True))
    assert report["status"] == "ok" and int(report["text_regions_masked"]) >= 1
    out = pydicom.dcmread(tmp_path / "out" / report["output"])
    assert out.BurnedInAnnotation == "NO" and out.SOPInstanceUID != pydicom.dcmread(src).SOPInstanceUID
