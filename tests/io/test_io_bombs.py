"""Decompression bombs: small files that declare huge images (or inflate to huge data sets) are refused with a
typed error from their headers, before decoding, so refusing them costs little memory.

Each file is read in a fresh Python process (after a warm-up read of a real image, so imports and decoder
plugins are loaded) and the process's peak RSS is compared with its peak before the read."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit

from radiolens.io.limits import MAX_HEADER_BYTES, MAX_PIXEL_BYTES

SRC = Path(__file__).resolve().parents[2] / "src"
RSS_BOUND_MB = 300  # generous: refusing reads headers only; decoding any of these costs 0.3 - 3 GB

_PROBE = r"""
import json, resource, sys
from pathlib import Path
from radiolens.io import read_image
from radiolens.serve.runtime.ingest import Ingestor

path, warm, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ingestor = Ingestor("probe-deid-secret-0123456789abcdef")
read_image(warm)
ingestor.ingest(warm.read_bytes())  # decoders and de-identification loaded
data = path.read_bytes() if mode == "ingest" else None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    ingestor.ingest(data) if mode == "ingest" else read_image(path)
    out = {"error": None}
except Exception as exc:
    out = {"error": type(exc).__name__, "code": getattr(exc, "code", None), "message": str(exc)}
out["delta_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def _probe(path: Path, warm: Path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(warm), mode], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _meta(ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ts
    return meta


def _header(rows: int, cols: int, bits: int = 16, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _preamble_and_meta(ts: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, _meta(ts), enforce_standard=True)
    return fp.getvalue()


def _dataset_bytes(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate_bomb(path: Path, pixel_bytes: int) -> Path:
    """A Deflated Explicit VR Little Endian file whose data set inflates to ``pixel_bytes`` of zeros (written
    in 16 MiB steps: the test itself never holds it)."""
    rows = cols = 16384
    frames = max(1, pixel_bytes // (rows * cols * 2))
    body = _dataset_bytes(_header(rows, cols, 16, frames))
    body += b"\xe0\x7f\x10\x00OW\x00\x00" + (rows * cols * 2 * frames).to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [_preamble_and_meta(DeflatedExplicitVRLittleEndian), deflater.compress(body)]
    zeros, left = bytes(16 << 20), rows * cols * 2 * frames
    while left:
        step = min(left, len(zeros))
        out.append(deflater.compress(zeros[:step]))
        left -= step
    out.append(deflater.flush())
    path.write_bytes(b"".join(out))
    return path


def native_claim(path: Path) -> Path:
    """Native (uncompressed) header declaring 16384 x 16384 x 64 frames with a few bytes of pixel data."""
    ds = _header(16384, 16384, 16, 64)
    body = _dataset_bytes(ds) + b"\xe0\x7f\x10\x00OW\x00\x00" + (1024).to_bytes(4, "little") + bytes(1024)
    path.write_bytes(_preamble_and_meta(ExplicitVRLittleEndian) + body)
    return path


def jpeg_in_small_dicom(path: Path) -> Path:
    """A DICOM saying 64 x 64 whose JPEG frame declares 16384 x 5000 (decoders allocate what the stream says)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5000, 16384)).save(buf, format="JPEG", quality=10)
    ds = _header(64, 64, 8)
    ds.file_meta = _meta(JPEGBaseline8Bit)
    ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def raster(path: Path, fmt: str, size=(5000, 16384), mode="L") -> Path:
    from PIL import Image

    im = Image.new(mode, size)
    if fmt == "TIFF":
        import tifffile

        tifffile.imwrite(path, np.zeros((size[1], size[0]), np.uint8), compression="zlib")
    else:
        im.save(path, format=fmt)
    return path


BOMBS = {
    "deflated_dicom_1gib": lambda p: deflate_bomb(p / "bomb.dcm", 1 << 30),
    "native_dicom_claims_16384sq_x64": lambda p: native_claim(p / "claim.dcm"),
    "jpeg_frame_larger_than_header": lambda p: jpeg_in_small_dicom(p / "jpeg.dcm"),
    "png_16384x5000": lambda p: raster(p / "bomb.png", "PNG"),
    "png_rgb_8000x8000": lambda p: raster(p / "rgb.png", "PNG", (8000, 8000), "RGB"),
    "tiff_zlib_16384x5000": lambda p: raster(p / "bomb.tif", "TIFF"),
}


# Every bomb through the file reader (CLI, training) and the service's upload ingest (DICOM, PNG, JPEG only).
# Each case is a fresh process (10-20 s on a loaded 2-core machine): one case per kind of bomb runs by default,
# the rest with the slow marker.
_DEFAULT = {("deflated_dicom_1gib", "ingest"), ("native_dicom_claims_16384sq_x64", "read_image"),
            ("jpeg_frame_larger_than_header", "ingest"), ("png_16384x5000", "read_image"),
            ("tiff_zlib_16384x5000", "read_image")}
CASES = [pytest.param(bomb, mode, marks=() if (bomb, mode) in _DEFAULT else pytest.mark.slow)
         for bomb in BOMBS for mode in ("read_image", "ingest") if not (mode == "ingest" and bomb.startswith("tiff"))]


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory):
    """Each bomb built once (the 1 GiB deflate takes seconds), for both readers."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = BOMBS[name](tmp_path_factory.mktemp(name))
        return made[name]

    return get


@pytest.fixture(scope="module")
def warm_dicom(siim_dicom, tmp_path_factory) -> Path:
    """The real SIIM chest DICOM stating BurnedInAnnotation NO, so the service's ingest accepts the warm-up (as a
    Secondary Capture without that statement it is refused for possible burned-in text)."""
    ds = pydicom.dcmread(str(siim_dicom))
    ds.BurnedInAnnotation = "NO"
    path = tmp_path_factory.mktemp("warm") / "warm.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("bomb, mode", CASES)
def test_bomb_refused_typed_with_bounded_memory(bomb_file, bomb, mode, warm_dicom):
    path = bomb_file(bomb)
    assert path.stat().st_size < 3 * 1024 * 1024  # a small file ...
    out = _probe(path, warm_dicom, mode)
    # ... refused with a typed input error (HTTP 422, CLI exit 2) ...
    assert out["error"] in ("ImageDimensionError", "UnreadableImageError"), out
    assert out["code"] in ("bad_dimensions", "unreadable_image"), out
    assert "upload" in out["message"] or mode == "read_image", out  # no file name in service errors
    # ... at a cost far below what decoding it would take
    assert out["delta_mb"] < RSS_BOUND_MB, out


def test_limits_leave_room_for_real_images():
    """The bounds refuse bombs, not radiographs: a 4300 x 4300 16-bit detector image and its header fit."""
    from radiolens.io.limits import MAX_PIXELS, check_dimensions

    check_dimensions("dr", 4300, 4300, bits=16)
    check_dimensions("mammo", 5625, 4096, bits=16)
    assert 4300 * 4300 * 2 + MAX_HEADER_BYTES < MAX_PIXEL_BYTES and 6000 * 6000 <= MAX_PIXELS
