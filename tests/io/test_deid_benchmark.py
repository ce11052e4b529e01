"""The de-identification benchmark (benchmarks/deid_benchmark.py) on a small corpus: radiolens must stay at or
above its floor, and the scorer must not be vacuous (an untouched copy scores zero where PHI was planted)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import deid_benchmark as bench  # noqa: E402
import deid_corpus as corpus  # noqa: E402

from radiolens.errors import BurnedInAnnotationError  # noqa: E402
from radiolens.io.deid import Deidentifier  # noqa: E402

#: Floors of the small corpus (docs/deid.md quotes the full corpus): every required action, and per category.
FLOOR_OVERALL = 0.999
FLOOR_CATEGORY = 0.99
SMALL = ("CT_small.dcm", "SC_rgb_jpeg.dcm", "693_UNCR.dcm")
SECRET = "test-benchmark-secret-0123456789"


@pytest.fixture(scope="module")
def small(tmp_path_factory, pydicom_data_files, data_dir):
    sources = [p for p in corpus.default_sources(data_dir) if p.name in SMALL]
    sources += sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[:1]
    assert len(sources) == len(SMALL) + 1
    out = tmp_path_factory.mktemp("deid-bench")
    manifest = json.loads(corpus.build_corpus(sources, out).read_text())
    return out, manifest


def test_corpus_is_deterministic_and_covers_every_category(small, tmp_path):
    out, manifest = small
    sources = [p for p in corpus.default_sources(None) if p.name == "CT_small.dcm"]
    again = json.loads(corpus.build_corpus(sources, tmp_path).read_text())
    first = next(e for e in manifest["files"].values() if e["source"] == "CT_small.dcm")
    assert next(iter(again["files"].values()))["items"] == first["items"]
    categories = {it["category"] for e in manifest["files"].values() for it in e["items"]}
    assert categories >= {"header_text", "dates", "times", "alt_calendar", "uids", "sequences_depth1",
                          "sequences_depth2", "sequences_depth3", "private_known", "private_unknown", "file_meta",
                          "preamble", "jpeg_segments", "overlays", "curves", "burned_in_text", "pixels_kept",
                          "kept_attributes"}
    # preexisting_text: only sources with reviewed text carry it (see the test below)
    actions = {it["action"] for e in manifest["files"].values() for it in e["items"]}
    assert actions == {"remove", "replace", "shift", "keep"}


def test_untouched_copy_scores_zero_on_planted_phi(small, tmp_path):
    out, manifest = small
    for name in manifest["files"]:
        shutil.copy(out / "corpus" / name, tmp_path / name)
    result = bench.score(manifest, out / "corpus", tmp_path)
    for category, row in result["categories"].items():
        if category in ("kept_attributes", "pixels_kept"):
            assert row["score"] == 1.0
        else:
            assert row["score"] == 0.0, category


def test_radiolens_stays_at_or_above_its_floor(small):
    out, manifest = small
    files = [out / "corpus" / n for n in manifest["files"]]
    dst = out / "radiolens"
    dst.mkdir(exist_ok=True)
    bench.run_radiolens(files, dst)
    result = bench.score(manifest, out / "corpus", dst)
    low = {c: r["score"] for c, r in result["categories"].items() if r["score"] < FLOOR_CATEGORY}
    assert not low, low
    assert result["overall"] >= FLOOR_OVERALL, result


def test_mask_policy_writes_a_new_instance_without_text(small):
    out, manifest = small
    name = next(n for n, e in manifest["files"].items() if e["source"] == "693_UNCR.dcm")
    ds = pydicom.dcmread(out / "corpus" / name)
    plain, _ = Deidentifier(SECRET, allow_burned_in=True).deidentify_dataset(ds)
    masked, report = Deidentifier(SECRET, pixel_text="mask").deidentify_dataset(ds)
    assert report["text_regions_masked"] >= 1 and report["pixel_text_policy"] == "mask"
    assert masked.SOPInstanceUID != plain.SOPInstanceUID == Deidentifier(SECRET).remap_uid(ds.SOPInstanceUID)
    assert masked.file_meta.MediaStorageSOPInstanceUID == masked.SOPInstanceUID
    assert masked.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in masked.DeidentificationMethodCodeSequence}
    assert any("OCR" in str(v) for v in masked.DeidentificationMethod)
    with pytest.raises(BurnedInAnnotationError, match="OCR found text"):
        Deidentifier(SECRET, pixel_text="refuse", allow_burned_in=True).deidentify_dataset(ds)


def test_refuse_policy_passes_a_clean_radiograph(pydicom_data_files):
    """No false refusal on a real chest CR without text (its header alone does not cause a refusal)."""
    src = next(p for p in pydicom_data_files if p.name == "RG1_UNCR.dcm")
    _clean, report = Deidentifier(SECRET, pixel_text="refuse").deidentify_dataset(pydicom.dcmread(src))
    assert report["text_regions_masked"] == 0 and report["pixel_text_policy"] == "refuse"


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "SC_rgb_jpeg.dcm", "MR_small_RLE.dcm",
                                  "SC_rgb_expb.dcm", "OBXXXX1A_expb.dcm"])
def test_mask_changes_the_box_only_in_every_encoding(name, monkeypatch):
    """Masking decodes compressed pixel data (written back native little endian, YBR as RGB) and keeps big
    endian data big endian: inside the box every pixel is display black, outside none changes (also for
    8-bit values in big endian 16-bit words, OBXXXX1A_expb from pydicom-data, stored pairwise swapped)."""
    import io

    import numpy as np
    from pydicom.data import get_testdata_file

    import radiolens.io.deid as deid_module
    from radiolens.io.deid_ocr import TextBox

    monkeypatch.setattr(deid_module, "detect_text", lambda ds, cfg: [TextBox(0, 2, 2, 10, 10)])
    ds = pydicom.dcmread(get_testdata_file(name))
    before = np.array(ds.pixel_array)
    clean, report = Deidentifier(SECRET, pixel_text="mask").deidentify_dataset(ds)
    buf = io.BytesIO()
    clean.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    after = pydicom.dcmread(buf).pixel_array
    changed = before != after
    assert report["text_regions_masked"] == 1
    assert (after[2:10, 2:10] == (0 if after.ndim == 3 else before.min())).all()
    changed[2:10, 2:10] = False
    assert not changed.any()


def test_preexisting_text_is_scored_by_its_boxes_and_left_out_of_kept_pixels(pydicom_data_files, tmp_path):
    """Text a source image already carries (the GE ultrasound's header block) is a scored item of its own:
    an untouched copy fails every one; black boxes over the hand-checked boxes with a small margin (as a mask
    has: the legibility test compares the strokes with their surroundings up to 3 pixels away) pass every one
    and do not count against the pixels kept."""
    import numpy as np

    src = next(p for p in pydicom_data_files if p.name == "US1_UNCR.dcm")
    manifest = json.loads(corpus.build_corpus([src], tmp_path).read_text())
    name, entry = next(iter(manifest["files"].items()))
    boxes = [it["box"] for it in entry["items"] if it["category"] == "preexisting_text"]
    assert len(boxes) == len(corpus.PREEXISTING_TEXT["US1"][2])
    untouched, masked = tmp_path / "untouched", tmp_path / "masked"
    untouched.mkdir()
    masked.mkdir()
    shutil.copy(tmp_path / "corpus" / name, untouched / name)
    ds = pydicom.dcmread(tmp_path / "corpus" / name)
    pixels = np.array(ds.pixel_array)
    for x0, y0, x1, y1 in boxes:
        pixels[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(masked / name)
    before = bench.score(manifest, tmp_path / "corpus", untouched)["categories"]
    after = bench.score(manifest, tmp_path / "corpus", masked)["categories"]
    assert before["preexisting_text"]["score"] == 0.0 and before["pixels_kept"]["score"] == 1.0
    assert after["preexisting_text"]["score"] == 1.0 and after["pixels_kept"]["score"] == 1.0


def _planted_line(shape=(60, 240), background=127, ink=200):
    import numpy as np

    font = str(corpus._fonts()[0])
    glyph = bench.render_text(shape, "DOE^JOHN 1987", font, 18, (20, 20))
    before = np.full(shape, background, dtype=np.int64)
    before[glyph] = ink
    return before, glyph


def test_a_black_box_over_the_strokes_and_their_gaps_leaves_nothing_to_read():
    """The legibility test compares the strokes with their surroundings and with the gaps between them: a black
    box over the text's own box leaves the strokes as dark as their gaps (nothing to read), even though they now
    differ from the unmasked grey round the box; a box over half the text, or no box, leaves it legible."""
    import numpy as np

    before, glyph = _planted_line()
    ys, xs = np.nonzero(glyph)
    tight = before.copy()
    tight[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 0
    half = before.copy()
    half[ys.min():ys.max() + 1, xs.min():(xs.min() + xs.max()) // 2] = 0
    wide = before.copy()
    wide[ys.min() - 4:ys.max() + 5, xs.min() - 4:xs.max() + 5] = 0
    assert bench.legible(before, before, glyph)
    assert bench.legible(before, half, glyph)
    assert not bench.legible(before, tight, glyph)
    assert not bench.legible(before, wide, glyph)
    top_left = tight.copy()  # the box misses the top half of the strokes: still legible
    top = (ys.min() + ys.max()) // 2
    top_left[:top] = before[:top]
    assert bench.legible(before, top_left, glyph)


def test_text_on_rules_of_its_own_colour_is_removed_and_the_rules_kept(tmp_path):
    """Real images whose text sits on grid lines, bars and picture edges of its own colour (the SMPTE test pattern;
    GE ultrasound, lossy and lossless, with a line planted across the frame drawn round the picture): every planted
    text is removed, and no more than 0.5 % of the pixels away from text is blacked out (the masks follow the print,
    not the rules beside it, and go on along a line where the detector's region stopped short)."""
    result = _pixel_scores(("vlut_04.dcm", "US1_UNCI.dcm", "US1_J2KI.dcm", "examples_jpeg2k.dcm"), tmp_path)
    assert result == {"preexisting_text": 1.0, "burned_in_text": 1.0, "pixels_kept": 1.0}, result


def test_faint_print_and_print_on_a_bar_edge_are_removed(tmp_path):
    """Real ultrasound whose own print is hard to find: the Philips obstetric picture (a measurement label printed
    grey 233 on a white box drawn on black; header print a planted line may cross) and the Aloka picture (a time
    line on the header bar's lower edge; settings rows above the lower bar). Every line of its print and every
    planted text is removed, and no more than 0.5 % of the pixels away from text is blacked out."""
    result = _pixel_scores(("OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"), tmp_path, preexisting=19 + 13)
    assert result == {"preexisting_text": 1.0, "burned_in_text": 1.0, "pixels_kept": 1.0}, result


def _pixel_scores(names: tuple[str, ...], tmp_path, preexisting: int | None = None) -> dict[str, float]:
    """The pixel categories' scores of radiolens on a corpus made from the real source files ``names``
    (``preexisting``: how many lines of their own print the corpus must list)."""
    sources = [p for p in corpus.default_sources(None) if p.name in names]
    assert len(sources) == len(names)
    manifest = json.loads(corpus.build_corpus(sources, tmp_path).read_text())
    dst = tmp_path / "radiolens"
    dst.mkdir()
    bench.run_radiolens([tmp_path / "corpus" / n for n in manifest["files"]], dst)
    result = bench.score(manifest, tmp_path / "corpus", dst)["categories"]
    if preexisting is not None:
        assert result["preexisting_text"]["required"] == preexisting
    return {k: result[k]["score"] for k in ("preexisting_text", "burned_in_text", "pixels_kept")}
