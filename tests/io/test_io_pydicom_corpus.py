"""Every pydicom-data file with pixel data decodes sanely or raises the right typed error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radiolens.errors import (
    ImageDimensionError,
    InputError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnreadableImageError,
)
from radiolens.io import Window, read_image
from radiolens.io.windowing import apply_window

#: Files that must NOT decode, and the typed error each must raise. Everything else must decode.
MUST_FAIL = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": TruncatedFileError,
}

#: Lossless copies of one image: same pixels whatever the transfer syntax.
LOSSLESS_PAIRS = [
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
    ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),
    ("693_UNCR.dcm", "693_J2KR.dcm"),
    ("emri_small.dcm", "emri_small_RLE.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
    ("emri_small.dcm", "emri_small_big_endian.dcm"),
    ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),
    ("OBXXXX1A.dcm", "OBXXXX1A_rle.dcm"),
    ("liver.dcm", "liver_expb.dcm"),
    ("SC_rgb.dcm", "SC_rgb_expb.dcm"),
    ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),
]


def _expected_shape(path) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return int(ds.Rows), int(ds.Columns)


def test_every_corpus_file_decodes_or_fails_typed(pydicom_data_files):
    decoded, failed = [], []
    for path in pydicom_data_files:
        expected_error = MUST_FAIL.get(path.name)
        if expected_error is not None:
            with pytest.raises(expected_error):
                read_image(path)
            failed.append(path.name)
            continue
        image = read_image(path)
        px = image.pixels
        assert px.dtype == np.float32 and px.ndim == 2, path.name
        assert np.isfinite(px).all(), path.name
        assert px.min() >= 0.0 and px.max() <= 1.0, path.name
        assert px.max() - px.min() > 0.05, f"{path.name}: (near-)constant image"
        assert px.shape == _expected_shape(path), path.name
        decoded.append(path.name)
    assert sorted(failed) == sorted(MUST_FAIL)  # the expectation table names real corpus files
    assert len(decoded) >= 60  # the corpus ships ~70 images; a silent shrink would hollow this test


@pytest.mark.parametrize(("plain", "compressed"), LOSSLESS_PAIRS)
def test_lossless_transfer_syntaxes_give_identical_pixels(pydicom_dir, plain, compressed):
    a = read_image(pydicom_dir / plain).pixels
    b = read_image(pydicom_dir / compressed).pixels
    assert a.shape == b.shape
    assert np.array_equal(a, b)


def test_big_endian_palette_is_not_black(pydicom_dir):
    # pydicom 3.0 reads big-endian palette LUT data in the wrong byte order; we must not inherit that.
    img = read_image(pydicom_dir / "OBXXXX1A_expb.dcm").pixels
    assert img.max() > 0.5


def test_preamble_less_file_reads(pydicom_dir):
    img = read_image(pydicom_dir / "OT-PAL-8-face.dcm")
    assert img.pixels.shape == (480, 640) and img.pixels.std() > 0.05


@pytest.mark.parametrize(("name", "body"), [("RG1_UNCR.dcm", "chest"), ("RG3_UNCR.dcm", "leg")])
def test_monochrome1_air_is_dark(pydicom_dir, name, body):
    img = read_image(pydicom_dir / name)
    assert img.meta.photometric_interpretation == "MONOCHROME1"
    px = img.pixels
    h, w = px.shape
    if body == "chest":
        # Lung fields (air-filled) must be darker than the mediastinum/spine strip between them.
        lungs = np.concatenate([px[int(.3 * h):int(.6 * h), int(.15 * w):int(.35 * w)].ravel(),
                                px[int(.3 * h):int(.6 * h), int(.65 * w):int(.85 * w)].ravel()])
        mediastinum = px[int(.3 * h):int(.6 * h), int(.46 * w):int(.54 * w)]
        assert lungs.mean() < mediastinum.mean() - 0.1
    else:
        # Column profile across the leg: collimated (unexposed) margins are white, the direct-exposure air
        # either side of the leg is the darkest band, the leg in the middle is brighter than that air.
        bands = [px[int(.2 * h):int(.8 * h), int(c * w):int((c + .05) * w)].mean() for c in np.arange(0, 1, .05)]
        air = min(bands[4:9]), min(bands[11:15])
        leg = max(bands[8:12])
        assert bands[0] > 0.9 and bands[-1] > 0.9
        assert max(air) < 0.2 and leg > max(air) + 0.3


def test_modality_lut_sequence_is_applied(pydicom_dir):
    path = pydicom_dir / "mlut_18.dcm"
    ds = pydicom.dcmread(path)
    item = ds.ModalityLUTSequence[0]
    n, first, _ = (int(v) for v in item.LUTDescriptor)
    lut = np.asarray(item.LUTData, dtype=np.float64)
    looked_up = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, n - 1)]
    window = Window(center=30000.0, width=40000.0)  # a window in the LUT's *output* domain
    got = read_image(path, window=window).pixels
    assert np.allclose(got, apply_window(looked_up, window), atol=1e-6)
    # and the LUT changes the picture: windowing raw stored values instead would differ
    assert not np.allclose(got, apply_window(ds.pixel_array.astype(np.float64), window), atol=1e-2)


def test_voi_lut_sequence_is_applied(pydicom_dir):
    path = pydicom_dir / "vlut_04.dcm"
    ds = pydicom.dcmread(path)
    item = ds.VOILUTSequence[0]
    n, first, bits = (int(v) for v in item.LUTDescriptor)
    lut = np.asarray(item.LUTData, dtype=np.float64)
    expected = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, n - 1)] / (2 ** bits - 1)
    image = read_image(path)
    assert image.meta.window_source == "voi_lut"
    assert np.allclose(image.pixels, expected, atol=1e-6)


def test_multi_valued_window_uses_the_first_pair(pydicom_dir):
    path = pydicom_dir / "MR-SIEMENS-DICOM-WithOverlays.dcm"
    ds = pydicom.dcmread(path)
    assert len(ds.WindowCenter) > 1
    image = read_image(path)
    assert image.meta.window_source == "header"
    assert image.meta.window_used == Window(center=float(ds.WindowCenter[0]), width=float(ds.WindowWidth[0]))
    expected = apply_window(ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
                            + float(ds.get("RescaleIntercept", 0) or 0), image.meta.window_used)
    assert np.allclose(image.pixels, expected, atol=1e-6)


def test_caller_window_overrides_file(pydicom_dir):
    path = pydicom_dir / "RG1_UNCR.dcm"
    default = read_image(path)
    narrow = read_image(path, window=Window(center=1500.0, width=500.0))
    assert narrow.meta.window_source == "override" and default.meta.window_source == "header"
    assert not np.allclose(default.pixels, narrow.pixels)


@pytest.mark.parametrize("name", ["SC_rgb_2frame.dcm", "OBXXXX1A_rle_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm"])
def test_all_frames(pydicom_dir, name):
    first = read_image(pydicom_dir / name)
    every = read_image(pydicom_dir / name, frames="all")
    assert every.pixels.ndim == 3 and every.pixels.shape[0] == 2
    assert np.array_equal(every.pixels[0], first.pixels)


def test_errors_are_input_errors(pydicom_dir):
    with pytest.raises(InputError):
        read_image(pydicom_dir / "emri_small_jpeg_2k_lossless_too_short.dcm")


#: pydicom's own bundled test files: the ones that must fail, and how. Everything else must decode sanely.
PYDICOM_BUNDLED_MUST_FAIL = {
    "JPEG-lossy.dcm": UnreadableImageError,  # every decoder rejects the stream (misplaced JPEG marker)
    "JPEG2000-embedded-sequence-delimiter.dcm": UnreadableImageError,  # corrupt J2K header
    "MR_truncated.dcm": TruncatedFileError,
    "rtplan_truncated.dcm": TruncatedFileError,
    "badVR.dcm": UnreadableImageError,  # Rows value "1A"
    "meta_missing_tsyntax.dcm": ImageDimensionError,  # pixel data without Rows/Columns
    "nested_priv_SQ.dcm": ImageDimensionError,
    "no_meta.dcm": NotDicomError,
    **{name: NoPixelDataError for name in (
        "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "UN_sequence.dcm", "DICOMDIR-empty.dcm",
        "empty_charset_LEI.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm", "reportsi.dcm",
        "reportsi_with_empty_number_tags.dcm", "rtplan.dcm", "rtstruct.dcm", "test-SR.dcm", "waveform_ecg.dcm")},
}


def test_pydicom_bundled_test_files():
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(root.rglob("*.dcm"))
    assert len(files) > 60
    seen_failures = set()
    for path in files:
        expected = PYDICOM_BUNDLED_MUST_FAIL.get(path.name)
        if expected is not None:
            with pytest.raises(expected):
                read_image(path)
            seen_failures.add(path.name)
            continue
        px = read_image(path).pixels
        assert px.ndim == 2 and np.isfinite(px).all() and px.min() >= 0 and px.max() <= 1, path.name
        assert px.max() - px.min() > 0.05, path.name
    assert seen_failures == set(PYDICOM_BUNDLED_MUST_FAIL)


def test_jpeg_extended_12bit_decodes_to_pydicom_reference_values():
    """JPEG Extended (Process 2/4, 1.2.840.10008.1.2.4.51) with 12-bit samples: Pillow and GDCM refuse such
    streams, so this proves the pylibjpeg path. JPGExtended.dcm is bundled with pydicom (offline)."""
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("JPGExtended.dcm"))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    assert (ds.BitsAllocated, ds.BitsStored, ds.Rows, ds.Columns) == (16, 12, 1024, 256)
    stored = ds.pixel_array
    # pydicom's published reference samples for this file (JPGE_16_12_1_0_1F_M2 in its pixel tests)
    assert stored[420, 140] == 244 and stored[230, 120] == 95
    window = Window(center=2048.0, width=4096.0)  # the full 12-bit range, linear
    image = read_image(path, window=window)
    assert image.pixels.shape == (1024, 256) and image.meta.window_source == "override"
    assert np.allclose(image.pixels, apply_window(stored.astype(np.float64), window), atol=1e-6)
    default = read_image(path).pixels  # no window in the file: robust percentile window
    assert default.min() == 0.0 and default.max() == 1.0 and np.isfinite(default).all()
    assert np.corrcoef(default.ravel(), stored.ravel())[0, 1] > 0.95  # same picture, only re-windowed


def test_pillow_first_jpeg_decoding_gives_gdcms_pixels(siim_dicom, pydicom_data_files):
    """8-bit JPEG Baseline/Extended go to Pillow first (6x faster than GDCM, which pydicom would try first): on
    every such file pydicom ships or pydicom-data holds (grey, RGB and YBR colour, multi-frame) and the real
    SIIM CR, radiolens decodes exactly GDCM's pixels, and Pillow really is the plugin used (not a fallback)."""
    from unittest import mock

    from pydicom.pixels import pixel_array

    from radiolens.io import dicom as rl_dicom

    plugins: list[str] = []  # the plugin of each pydicom decode that succeeded for radiolens

    def spy(*args, **kwargs):
        out = pixel_array(*args, **kwargs)
        plugins.append(kwargs.get("decoding_plugin", ""))
        return out

    checked = 0
    bundled = sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm"))
    for path in [*bundled, *pydicom_data_files, siim_dicom]:
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # the corpus holds deliberately broken files; their errors are tested above
            continue
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if ts not in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51") or ds.get("BitsAllocated") != 8:
            continue
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        index = 0 if frames > 1 else None
        reference = pixel_array(ds, index=index, decoding_plugin="gdcm")
        plugins.clear()
        with mock.patch.object(rl_dicom, "pixel_array", spy):
            decoded = rl_dicom._decode(ds, path.name, "first")
        assert plugins == ["pillow"], path.name
        assert decoded.shape == reference.shape and np.array_equal(decoded, reference), path.name
        checked += 1
    assert checked >= 15, checked  # 17 on pydicom 3.0 + pydicom-data 2.4, one of them a 30-frame cine


def test_12bit_jpeg_extended_falls_back_from_pillow():
    """Pillow refuses 12-bit JPEG: it is not even tried, and the file decodes through the normal chain."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    from radiolens.io import dicom as rl_dicom

    assert np.array_equal(rl_dicom._decode(ds, "x", "first"), ds.pixel_array)
