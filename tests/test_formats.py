"""The one format table (radiolens.io.formats): sniffing real files, reading from bytes exactly as from a path,
the same typed errors for damaged input either way, and no second table anywhere else in the package."""

from __future__ import annotations

import io
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from radiolens.errors import InputError, NotDicomError, TruncatedFileError, UnreadableImageError
from radiolens.io import formats
from radiolens.io.formats import format_of, format_of_bytes, is_candidate, read_image, sniff

pytestmark = pytest.mark.realdata

SECRET = "formats-test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def siim(data_dir) -> Path:
    files = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    assert files, "the SIIM chest DICOM is missing from RADIOLENS_DATA_DIR"
    return files[0]


@pytest.fixture(scope="module")
def kermany(data_dir) -> list[Path]:
    root = data_dir / "kermany_pediatric_pneumonia" / "images"
    return sorted((root / "NORMAL").glob("*.jpeg"))[:3] + sorted((root / "PNEUMONIA").glob("*.jpeg"))[:3]


@pytest.fixture(scope="module")
def by_name(pydicom_data_files) -> dict[str, Path]:
    return {p.name: p for p in pydicom_data_files}


@pytest.fixture(scope="module")
def real_set(tmp_path_factory, siim, kermany, pydicom_data_files, by_name) -> list[tuple[Path, str]]:
    """(file, format) for real files as found, extension-less and misnamed copies, and PNG/TIFF written from
    the SIIM chest X-ray's pixels (8-bit PNG, 8-bit and 16-bit TIFF)."""
    root = tmp_path_factory.mktemp("formats")
    cases = [(siim, "dicom")] + [(k, "jpeg") for k in kermany]
    cases += [(p, "dicom") for p in pydicom_data_files]
    for i, src in enumerate([siim, *pydicom_data_files[::10]]):
        bare = root / f"IM{i:04d}"  # extension-less, as PACS exports write them
        shutil.copy(src, bare)
        cases.append((bare, "dicom"))
    uid_named = root / "1.2.840.113619.2.55.3.12345"  # UID-named: its "suffix" is ".12345"
    shutil.copy(siim, uid_named)
    cases.append((uid_named, "dicom"))
    no_preamble = root / "nopreamble"
    no_preamble.write_bytes(siim.read_bytes()[132:])  # file meta group first, no preamble, no "DICM"
    cases += [(no_preamble, "dicom"), (by_name["OT-PAL-8-face.dcm"], "dicom")]  # ACR-NEMA style, group 0008 first
    pixels = pydicom.dcmread(siim).pixel_array
    Image.fromarray(pixels).save(root / "chest.png")
    tifffile.imwrite(root / "chest8.tif", pixels)
    tifffile.imwrite(root / "chest16.tiff", pixels.astype(np.uint16) * 257)
    Image.open(kermany[0]).save(root / "kermany.png")
    shutil.copy(root / "chest.png", root / "png_named.jpg")  # content decides, not the name
    shutil.copy(root / "chest.png", root / "png_without_suffix")
    cases += [(root / "chest.png", "png"), (root / "chest8.tif", "tiff"), (root / "chest16.tiff", "tiff"),
              (root / "kermany.png", "png"), (root / "png_named.jpg", "png"), (root / "png_without_suffix", "png")]
    return cases


def test_the_table_sniffs_real_files(real_set, tmp_path):
    for path, want in real_set:
        head = path.read_bytes()[:formats.HEAD_BYTES]
        assert sniff(head) == want, path.name
        assert format_of(path) == want, path.name
        assert format_of_bytes(path.read_bytes()) == want, path.name
    # Nothing of the table claims text or noise; the suffix decides only where magic cannot.
    rng = np.random.default_rng(0)
    assert sniff(b"Patient John Smith, not an image\n") is None
    assert sniff(rng.integers(1, 256, 4096, dtype=np.uint8).tobytes()[:132].replace(b"\x08", b"\x09")) is None
    for name, want in (("short.dcm", "dicom"), ("short.PNG", "png"), ("short.jpeg", "jpeg"), ("short.tif", "tiff"),
                       ("short", None), ("short.bin", None)):
        (tmp_path / name).write_bytes(b"\x00" * 10)
        assert format_of(tmp_path / name) == want, name
    assert format_of_bytes(b"\x00" * 10, "application/dicom") == "dicom"
    assert format_of_bytes(b"\x00" * 10, "image/jpeg; q=1") == "jpeg"
    assert format_of_bytes(real_set[0][0].read_bytes(), "image/png") == "dicom"  # magic beats the hint
    assert formats.IMAGE_SUFFIXES == {".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def _error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except InputError as exc:
        return exc
    return None


def test_bytes_read_exactly_like_the_file(real_set):
    """Every real file, and the extension-less and preamble-less copies: identical pixels and metadata from
    bytes and from the path, or the same typed error (named "upload" instead of the file name)."""
    compared = failed = 0
    for path, _ in real_set:
        data = path.read_bytes()
        got_path, got_bytes = _error(read_image, path), _error(read_image, data)
        if got_path is None:
            a, b = read_image(path), read_image(data)
            assert a.meta == b.meta, path.name
            assert np.array_equal(a.pixels, b.pixels, equal_nan=True), path.name
            compared += 1
        else:
            assert type(got_bytes) is type(got_path), (path.name, got_path, got_bytes)
            assert str(got_bytes) == str(got_path).replace(path.name, "upload", 1), path.name
            assert path.name not in str(got_bytes)
            failed += 1
    assert compared >= 70 and failed >= 1  # the corpus holds a truncated and a pixel-less file


def _damaged(siim: Path) -> dict[str, tuple[bytes, type | tuple[type, ...]]]:
    data = siim.read_bytes()
    ds = pydicom.dcmread(siim, stop_before_pixels=True)
    uid = str(ds.StudyInstanceUID).encode()
    inside_header = data.index(uid) + len(uid) // 2  # a cut inside a header element, before the pixel data
    rng = np.random.default_rng(1)
    return {
        "cut in half": (data[: len(data) // 2], TruncatedFileError),
        "cut inside a header element": (data[:inside_header], TruncatedFileError),
        "preamble only": (data[:200], TruncatedFileError),
        "cut 10 bytes short": (data[:-10], TruncatedFileError),
        "padded with 6 MB of zeros": (data + bytes(6 * 1024 * 1024), UnreadableImageError),
        # pydicom reads the garbage as an element declaring 117 MB: refused as truncated
        "appended garbage": (data + bytes(range(256)) * 64, TruncatedFileError),
        # NotDicomError where a suffix or content type says DICOM; "not a DICOM, PNG, ..." where nothing does
        "noise": (rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), (NotDicomError, UnreadableImageError)),
        "text": (b"Patient John Smith, not an image\n" * 20, (NotDicomError, UnreadableImageError)),
    }


def test_damaged_dicom_gives_the_same_typed_error_from_bytes_and_path(siim, tmp_path):
    for what, (data, want) in _damaged(siim).items():
        # the suffix of a path is what the content type is for bytes
        for name, hint in (("upload_source.dcm", "application/dicom"), ("upload_source", None)):
            path = tmp_path / name
            path.write_bytes(data)
            from_path = _error(read_image, path)
            from_bytes = _error(read_image, data, content_type=hint)
            assert isinstance(from_path, want) and type(from_bytes) is type(from_path), (what, name, from_path,
                                                                                            from_bytes)
            assert str(from_bytes) == str(from_path).replace(name, "upload", 1), (what, name)
            assert str(from_bytes).startswith("upload: ") and name not in str(from_bytes)
    with pytest.raises(UnreadableImageError, match="^upload: empty file$"):
        read_image(b"")
    text = tmp_path / "notes.dcm"
    text.write_text("Patient John Smith, not an image\n" * 20)
    assert isinstance(_error(read_image, text), NotDicomError)  # the suffix routes it to DICOM
    assert isinstance(_error(read_image, text.read_bytes(), content_type="application/dicom"),
                      NotDicomError)


def test_the_service_ingest_gets_every_truncation_check(siim):
    """The upload path now runs the io reader's checks. A cut inside a header element parses with pydicom
    alone (what the service's own parse did) into a non-empty data set, which it then reported as
    "no pixel data"; it is now refused as truncated, as a file is."""
    from radiolens.serve.runtime.ingest import Ingestor

    ds = pydicom.dcmread(siim)
    ds.BurnedInAnnotation = "NO"  # reviewed, as the service requires
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    good = buf.getvalue()
    uid = str(ds.StudyInstanceUID).encode()
    cut = good[: good.index(uid) + len(uid) // 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pydicom.dcmread(io.BytesIO(cut))
    assert len(parsed) > 0 and "SOPClassUID" in parsed and "PixelData" not in parsed

    ingestor = Ingestor(SECRET)
    with pytest.raises(TruncatedFileError, match="^upload: DICOM file is truncated"):
        ingestor.ingest(cut, "application/dicom")
    for what, (data, want) in _damaged(siim).items():
        err = _error(ingestor.ingest, data, "application/octet-stream")
        assert isinstance(err, want), (what, err)
        assert str(err).startswith("upload: ")
    ok = ingestor.ingest(good)
    assert ok.source_format == "dicom" and ok.study_ref != str(ds.StudyInstanceUID)
    assert np.array_equal(ok.image.pixels, read_image(good).pixels)
    no_preamble = ingestor.ingest(good[132:], "application/dicom")  # the content type decides there
    assert np.array_equal(no_preamble.image.pixels, ok.image.pixels)
    tiff = io.BytesIO()
    tifffile.imwrite(tiff, ds.pixel_array)
    with pytest.raises(UnreadableImageError, match="^upload: not a DICOM, PNG or JPEG image$"):
        ingestor.ingest(tiff.getvalue(), "image/tiff")  # the service accepts DICOM, PNG and JPEG only


def test_folder_walks_use_the_one_candidate_test(siim, kermany, tmp_path):
    from radiolens.data.builders import _images_under
    from radiolens.predict.sources import discover

    root = tmp_path / "tree"
    (root / "pacs").mkdir(parents=True)
    shutil.copy(siim, root / "pacs" / "IM0001")
    shutil.copy(siim, root / "pacs" / "1.2.840.113619.2.55.3.777")
    shutil.copy(kermany[0], root / "a.jpeg")
    shutil.copy(siim, root / "b.dcm")
    shutil.copy(siim, root / "sidecar.json")  # DICOM bytes under a never-suffix: never read
    (root / "notes.txt").write_text("not an image")
    (root / "noise").write_bytes(np.random.default_rng(2).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    (root / "b.dcm.part").write_bytes(siim.read_bytes())  # a write in progress
    shutil.copy(siim, root / ".hidden.dcm")
    images = ["1.2.840.113619.2.55.3.777", "IM0001", "a.jpeg", "b.dcm"]
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and is_candidate(p)) == images
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and is_candidate(p, keep_unrecognised=True)) \
        == sorted([*images, "noise"])
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and is_candidate(p, ("dicom",))) \
        == ["1.2.840.113619.2.55.3.777", "IM0001", "b.dcm"]
    assert sorted(p.name for p in _images_under(root)) == images
    assert sorted(Path(it.key).name for it in discover(root)) == images


def test_deid_writes_through_the_dicom_writer(siim, tmp_path):
    from radiolens.io.deid import Deidentifier
    from radiolens.io.deid_batch import deidentify_tree
    from radiolens.io.writers.dicom import write_dicom

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(siim, src / "IM0001")
    (src / "chest.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # not DICOM: not walked by deid
    rows = deidentify_tree(src, tmp_path / "out", Deidentifier(SECRET, allow_burned_in=True))
    assert [r["status"] for r in rows] == ["ok"]
    written = tmp_path / "out" / rows[0]["output"]
    assert written.suffix == formats.DICOM.suffix and format_of(written) == "dicom"
    assert not list((tmp_path / "out").glob("*.part"))
    assert np.array_equal(read_image(written).pixels, read_image(siim).pixels)
    broken = pydicom.dcmread(siim)
    del broken.file_meta.TransferSyntaxUID  # cannot be written as a file
    with pytest.raises(InputError, match="^source.dcm: "):
        write_dicom(broken, tmp_path / "out2" / "x.dcm", name="source.dcm")
    assert not list((tmp_path / "out2").iterdir())  # nothing half-written is left behind


# Literal signatures of the table, and its suffixes written as members of a set, tuple, list or dict, or compared
# with a path's suffix, as a second table would write them. (A suffix appended to a file name being written, as
# ``name + ".png"``, is not a format decision.)
_SUFFIX = r"""["']\.(?:dcm|dicom|dic|png|jpe?g|tiff?)["']"""
_SIGNATURES = [r'b"DICM"', r"b'DICM'", r"\\x89PNG", r"\\xff\\xd8", r"II\*\\x00", r"MM\\x00\*",
               _SUFFIX + r"\s*[,:\]})]", r"[\[({,]\s*" + _SUFFIX, r"[=!]=\s*" + _SUFFIX, _SUFFIX + r"\s*[=!]="]


def test_no_second_format_table_in_the_package():
    src = Path(formats.__file__).parents[1]
    hits = []
    for path in sorted(src.rglob("*.py")):
        if path == Path(formats.__file__):
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in _SIGNATURES:
            for m in re.finditer(pattern, text):
                hits.append(f"{path.relative_to(src)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}")
    assert hits == []
    # ... and the patterns find what they are meant to (the search above looks for something real): the table
    # itself, and the forms the former copies had
    own = Path(formats.__file__).read_text(encoding="utf-8")
    assert all(re.search(p, own) for p in _SIGNATURES[:8] if "DICM'" not in p)
    former = ['if path.suffix.lower() in (".dcm", ".dicom", ".dic"):', "head[128:132] == b'DICM'",
              '{".png": "png", ".jpg": "jpeg"}', 'suffix == ".dcm"', '".tif" != suffix']
    assert all(any(re.search(p, line) for p in _SIGNATURES) for line in former)
