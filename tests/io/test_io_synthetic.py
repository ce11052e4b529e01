"""Edge cases built with pydicom / PIL / tifffile, where the expected output follows from the construction."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from io_synth import build_dataset
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from radiolens.errors import (
    ImageDimensionError,
    NoPixelDataError,
    NotDicomError,
    TruncatedFileError,
    UnreadableImageError,
    UnsupportedTransferSyntaxError,
)
from radiolens.io import Window, read_image
from radiolens.io.dicom import dicom_to_image


def _ramp(h: int = 32, w: int = 48, top: int = 4095, dtype=np.uint16) -> np.ndarray:
    return np.tile(np.linspace(0, top, w).round().astype(dtype), (h, 1))


def test_monochrome1_with_window_inverts_after_voi(write_dicom):
    px = _ramp()
    path = write_dicom("m1.dcm", px, photometric="MONOCHROME1", bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    m1 = read_image(path).pixels
    m2 = read_image(write_dicom("m2.dcm", px, bits_stored=12, WindowCenter=2048, WindowWidth=4096)).pixels
    assert np.allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[:, 0].mean() > 0.99 and m1[:, -1].mean() < 0.01  # low stored value = bright in MONOCHROME1


def test_rescale_slope_intercept_is_applied_before_the_window(write_dicom):
    px = _ramp(top=1000)
    # stored s -> HU = 2*s - 1024; a window at HU 0 +- 200 must be reached at stored values 412..612.
    path = write_dicom("ct.dcm", px, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400)
    out = read_image(path).pixels
    hu = px.astype(np.float64) * 2 - 1024
    assert np.all(out[hu <= -200] == 0.0) and np.all(out[hu >= 200] == 1.0)
    mid = (hu > -150) & (hu < 150)
    assert np.all((out[mid] > 0) & (out[mid] < 1))


def test_signed_pixels_and_percentile_window(write_dicom):
    px = (_ramp(top=2000).astype(np.int32) - 1000).astype(np.int16)
    image = read_image(write_dicom("signed.dcm", px))
    assert image.meta.window_source == "percentile"
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert np.all(np.diff(image.pixels[0]) >= 0)  # monotone along the ramp


def test_multiframe_first_and_all(write_dicom):
    frames = np.stack([_ramp() * 0 + i * 1000 + _ramp(top=100) for i in range(3)]).astype(np.uint16)
    path = write_dicom("mf.dcm", frames, WindowCenter=1500, WindowWidth=3000)
    first = read_image(path)
    every = read_image(path, frames="all")
    assert first.pixels.shape == (32, 48) and every.pixels.shape == (3, 32, 48)
    assert np.array_equal(every.pixels[0], first.pixels)
    assert every.pixels[0].mean() < every.pixels[1].mean() < every.pixels[2].mean()


def test_no_pixel_data(write_dicom):
    with pytest.raises(NoPixelDataError):
        read_image(write_dicom("nopix.dcm", None))


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file(write_dicom, keep):
    path = write_dicom("full.dcm", _ramp())
    data = path.read_bytes()
    cut = path.with_name("cut.dcm")
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TruncatedFileError):
        read_image(cut)


def test_truncated_inside_header(write_dicom):
    path = write_dicom("full.dcm", _ramp(), ImageComments="X" * 200)
    data = path.read_bytes()
    cut = path.with_name("cut.dcm")
    cut.write_bytes(data[: data.index(b"X" * 50) + 10])
    with pytest.raises(TruncatedFileError):
        read_image(cut)


@pytest.mark.parametrize(("rows", "cols", "frames"), [(0, 64, 1), (64, 0, 1), (65535, 65535, 1),
                                                      (4096, 4096, 4000)])
def test_zero_and_absurd_dimensions_are_refused_before_decoding(rows, cols, frames):
    ds = build_dataset(np.zeros((4, 4), np.uint16))
    ds.Rows, ds.Columns = rows, cols  # the header lies; the bomb guard must trust nothing it cannot afford
    if frames > 1:
        ds.NumberOfFrames = frames
    with pytest.raises(ImageDimensionError):
        dicom_to_image(ds, name="bomb.dcm")


def test_not_dicom_garbage(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("garbage.dcm", "garbage"):
        path = tmp_path / name
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises((NotDicomError, UnreadableImageError)):
            read_image(path)
    text = tmp_path / "notes.dcm"
    text.write_text("Patient John Smith, not an image\n" * 20)
    with pytest.raises(NotDicomError):
        read_image(text)


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102"])  # MPEG2, H.264
def test_unsupported_transfer_syntax(ts):
    ds = build_dataset(_ramp(8, 8))
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ds.PixelData = encapsulate([b"\x00" * 64])
    with pytest.raises(UnsupportedTransferSyntaxError):
        dicom_to_image(ds, name="video.dcm")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UnreadableImageError):
        read_image(tmp_path / "absent.dcm")
    with pytest.raises(UnreadableImageError):
        read_image(tmp_path)


def test_window_override_validation():
    with pytest.raises(Exception) as info:
        Window(center=10, width=0)
    assert "window width" in str(info.value)


# -- raster formats ---------------------------------------------------------------------------------------------
def test_16bit_png(tmp_path):
    px = _ramp(top=65535)
    path = tmp_path / "x16.png"
    Image.fromarray(px).save(path)
    out = read_image(path).pixels
    assert np.allclose(out, px / 65535.0, atol=1e-6)


def test_16bit_tiff(tmp_path):
    px = _ramp(top=60000)
    path = tmp_path / "x16.tif"
    tifffile.imwrite(path, px)
    image = read_image(path)
    assert image.meta.source_format == "tiff" and image.meta.bits_stored == 16
    assert np.allclose(image.pixels, px / 65535.0, atol=1e-6)


def test_rgb_jpeg_becomes_grey(tmp_path):
    grey = _ramp(64, 64, 255, np.uint8)
    path = tmp_path / "rgb.jpg"
    Image.fromarray(np.stack([grey] * 3, -1), "RGB").save(path, quality=100)
    out = read_image(path).pixels
    assert out.shape == (64, 64)
    assert np.abs(out - grey / 255.0).max() < 0.03  # JPEG loss only


def test_rgba_png_ignores_alpha(tmp_path):
    grey = _ramp(16, 16, 255, np.uint8)
    rgba = np.stack([grey, grey, grey, np.zeros_like(grey)], -1)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert np.allclose(read_image(path).pixels, grey / 255.0, atol=1e-6)


def test_raster_window_override(tmp_path):
    grey = _ramp(16, 16, 255, np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(grey).save(path)
    out = read_image(path, window=Window(center=128, width=64)).pixels
    assert out[:, 0].max() == 0.0 and out[:, -1].min() == 1.0


def test_raster_decompression_bomb(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(ImageDimensionError):
        read_image(path)


def test_corrupt_png(tmp_path):
    path = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    Image.fromarray(_ramp(64, 64, 255, np.uint8)).save(good)
    path.write_bytes(good.read_bytes()[:60])
    with pytest.raises(UnreadableImageError):
        read_image(path)


def test_files_without_suffix(write_dicom, tmp_path):
    dicom = write_dicom("IMG0001", _ramp(), WindowCenter=2048, WindowWidth=4096)
    assert read_image(dicom).meta.source_format == "dicom"
    png = tmp_path / "scan"
    Image.fromarray(_ramp(16, 16, 255, np.uint8)).save(png, format="PNG")
    assert read_image(png).meta.source_format == "png"
    cut = tmp_path / "IMG0002"
    cut.write_bytes(dicom.read_bytes()[:-500])
    with pytest.raises(TruncatedFileError):  # not mislabelled as a broken PNG
        read_image(cut)


def test_no_phi_in_warnings_logs_or_errors(write_dicom, caplog, recwarn):
    # An invalid IS value that pydicom's validation would quote in a warning *and* a log record.
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = build_dataset(_ramp())
    ds._dict[Tag(0x00280008)] = RawDataElement(Tag(0x00280008), "IS", 8, b"Zebediah", 0, False, True)
    path = write_dicom("ok.dcm", _ramp()).with_name("bad.dcm")
    ds.save_as(path, enforce_file_format=True)
    assert b"Zebediah" in path.read_bytes()
    recwarn.clear()
    caplog.clear()
    caplog.set_level("DEBUG")
    with pytest.raises(UnreadableImageError) as info:
        read_image(path)
    assert "Zebediah" not in str(info.value)
    assert "Zebediah" not in caplog.text
    assert not any("Zebediah" in str(w.message) for w in recwarn.list)
