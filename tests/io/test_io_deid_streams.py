"""Comment and application segments inside compressed pixel data do not survive de-identification.

Real JPEG (baseline, lossless), JPEG-LS and JPEG 2000 files from pydicom-data and SIIM get COM / APPn (EXIF,
Photoshop IPTC, ICC, a JFIF thumbnail, Adobe) segments and bytes after the end-of-image marker planted into
every frame; after ``deidentify_file`` no planted byte may remain, and the decoded pixels must equal those of
the untouched source. Regression: compressed streams were copied verbatim, with whatever text they held.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from dicom_validate import assert_valid_dicom
from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.io.deid import Deidentifier

SECRET = "stream-test-secret-0123"
MARK = b"Q7X"

FILES = ["siim", "color3d_jpeg_baseline.dcm", "JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
         "emri_small_jpeg_ls_lossless.dcm", "RG1_J2KR.dcm", "MR2_J2KI.dcm", "US1_J2KR.dcm",
         "emri_small_jpeg_2k_lossless.dcm", "RG1_J2KR.dcm+jp2", "MR2_J2KI.dcm+psot0"]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _plant_jpeg(frame: bytes, grey: bool) -> tuple[bytes, int]:
    thumb = MARK * 3  # a 3x1 RGB JFIF thumbnail whose "pixels" spell the mark
    segments = [
        _segment(0xFE, MARK + b" comment: Quenby Zebediah 1961-04-07"),
        _segment(0xE1, b"Exif\x00\x00" + MARK + b" exif DateTimeOriginal 2019:03:04"),
        _segment(0xED, b"Photoshop 3.0\x00" + MARK + b" IPTC by-line Ramoray"),
        _segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + MARK + b" profile description"),
        _segment(0xE0, b"JFXX\x00\x10" + MARK + b" extension thumbnail"),
        _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x03\x01" + thumb),
    ]
    if grey:  # an Adobe segment with extra bytes; transform 0 is what a grey image means anyway
        segments.append(_segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00" + MARK + b" adobe extra"))
    end = frame.rindex(b"\xff\xd9")
    tail = _segment(0xFE, MARK + b" comment after the scan")
    planted = frame[:2] + b"".join(segments) + frame[2:end] + tail + b"\xff\xd9" + MARK + b" after EOI"
    return planted, len(segments) + 2


def _plant_j2k(frame: bytes, psot0: bool = False) -> tuple[bytes, int]:
    def com(text: bytes) -> bytes:
        return b"\xff\x64" + (len(text) + 4).to_bytes(2, "big") + b"\x00\x01" + text

    i = 2
    while frame[i:i + 2] != b"\xff\x90":  # main header segments up to the first SOT
        i += 2 + int.from_bytes(frame[i + 2:i + 4], "big")
    main_com, tile_com = com(MARK + b" main header comment Quenby"), com(MARK + b" tile-part comment")
    psot = int.from_bytes(frame[i + 6:i + 10], "big")
    if psot0:  # a single tile-part may say "up to EOC" (Psot = 0) instead of its length
        assert i + psot == frame.rindex(b"\xff\xd9"), "not a single tile-part"
        psot = 0
    new_psot = (psot + len(tile_com)).to_bytes(4, "big") if psot else b"\x00\x00\x00\x00"
    sot = frame[i:i + 6] + new_psot + frame[i + 10:i + 12]
    end = frame.rindex(b"\xff\xd9")
    planted = frame[:i] + main_com + sot + tile_com + frame[i + 12:end + 2] + MARK + b" after EOC"
    return planted, 3


def _box(kind: bytes, payload: bytes) -> bytes:
    return (len(payload) + 8).to_bytes(4, "big") + kind + payload


def _wrap_jp2(codestream: bytes, ds) -> bytes:
    """The codestream inside a JP2 file with an XML box (some writers put JP2 files into DICOM)."""
    bpc = (int(ds.BitsStored) - 1) | (0x80 if int(ds.PixelRepresentation) else 0)
    ihdr = (int(ds.Rows).to_bytes(4, "big") + int(ds.Columns).to_bytes(4, "big")
            + int(ds.SamplesPerPixel).to_bytes(2, "big") + bytes((bpc, 7, 0, 0)))
    colr = b"\x01\x00\x00" + (17 if int(ds.SamplesPerPixel) == 1 else 16).to_bytes(4, "big")
    return (_box(b"jP  ", b"\r\n\x87\n") + _box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
            + _box(b"jp2h", _box(b"ihdr", ihdr) + _box(b"colr", colr))
            + _box(b"xml ", b"<name>" + MARK + b" Quenby</name>") + _box(b"jp2c", codestream))


@pytest.fixture(params=FILES)
def source(request, pydicom_dir, siim_dicom):
    return siim_dicom if request.param == "siim" else pydicom_dir / request.param.split("+")[0]


@pytest.fixture
def variant(request) -> str:
    return request.node.callspec.params["source"].partition("+")[2]


def test_segments_in_compressed_pixel_data_are_stripped(source, variant, tmp_path):
    ds = _read(source)
    ts = ds.file_meta.TransferSyntaxUID
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    j2k = ts in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
    grey = int(ds.SamplesPerPixel) == 1
    planted_frames, per_frame = [], 0
    for frame in generate_frames(ds.PixelData, number_of_frames=n_frames):
        new, per_frame = _plant_j2k(frame, variant == "psot0") if j2k else _plant_jpeg(frame, grey)
        if variant == "jp2":
            new, per_frame = _wrap_jp2(new, ds), per_frame + 1
        planted_frames.append(new)
    ds.PixelData = encapsulate(planted_frames, has_bot=True)
    ds["PixelData"].is_undefined_length = True
    src = tmp_path / "planted.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(src, enforce_file_format=True)
    expected = _read(source).pixel_array
    assert np.array_equal(_read(src).pixel_array, expected)  # the planted stream is valid and decodes the same
    assert src.read_bytes().count(MARK) >= n_frames * per_frame

    (tmp_path / "out").mkdir()
    report = Deidentifier(SECRET, allow_burned_in=True).deidentify_file(src, tmp_path / "out")
    out = tmp_path / "out" / report["output"]
    data = out.read_bytes()
    assert MARK not in data
    assert report["stream_segments_removed"] >= n_frames * per_frame
    clean = _read(out)
    assert np.array_equal(clean.pixel_array, expected)  # pydicom's decoder chain
    assert np.array_equal(read_image(out).pixels, read_image(source).pixels)  # radiolens' reader (Pillow first)
    assert int(clean.get("NumberOfFrames", 1) or 1) == n_frames
    assert_valid_dicom(out, source)


def test_unparseable_or_uncheckable_streams_are_refused(siim_dicom, pydicom_dir, tmp_path):
    """A stream that cannot be parsed cannot be checked: typed error, nothing written."""
    deid = Deidentifier(SECRET, allow_burned_in=True)
    cases = {}
    ds = _read(siim_dicom)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    cases["no_eoi"] = frame[:-2] + b"\x00\x00"  # scan data runs off the end
    cases["bad_length"] = frame[:2] + b"\xff\xfe\xff\xff" + frame[2:]  # COM longer than the frame
    cases["not_jpeg"] = b"\x00\x01" + frame[2:]
    for name, bad in cases.items():
        ds.PixelData = encapsulate([bad])
        path = tmp_path / f"{name}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        (tmp_path / name).mkdir()
        with pytest.raises(InputError, match="JPEG"):
            deid.deidentify_file(path, tmp_path / name)
        assert not list((tmp_path / name).iterdir()), name
    mpeg = _read(siim_dicom)
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no parser, so refused
    path = tmp_path / "mpeg.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mpeg.save_as(path, enforce_file_format=True)
    (tmp_path / "mpeg").mkdir()
    with pytest.raises(InputError, match="cannot be checked"):
        deid.deidentify_file(path, tmp_path / "mpeg")
    assert not list((tmp_path / "mpeg").iterdir())
