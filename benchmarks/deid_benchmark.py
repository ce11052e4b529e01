"""De-identification benchmark in the manner of the MIDI-B challenge (MICCAI 2024), headers and pixels.

    python benchmarks/deid_benchmark.py --out out/deid-bench [--data-dir $RADIOLENS_DATA_DIR] [--limit N]
        [--tools radiolens,radiolens-detector-all,dicom-anonymizer,deid] [--clean-images 200]

1. Builds the synthetic-PHI corpus (benchmarks/deid_corpus.py: every real DICOM available, PHI planted in
   every place PS3.15 Annex E and MIDI-B name, a manifest of planted items with the action the rules require).
2. Runs each tool on it with its default profile: radiolens (``Deidentifier(shift_dates=True,
   pixel_text="mask")``: the options the rules name), dicom-anonymizer (``anonymize`` with its defaults, which
   are its command line's: private tags deleted) and deid (``replace_identifiers`` with its default recipe, as
   its ``deid identifiers`` command runs it).
3. Scores: required actions performed correctly / all required actions, overall and per category.
4. Measures the OCR step alone: false positives per image and masked area on clean radiographs (Kermany,
   NIH ChestX-ray14 full resolution, the pydicom-data CRs) and time per image.

Writes ``results.json`` and prints a Markdown table (docs/deid.md quotes a full run).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_corpus import build_corpus, default_sources, render_text  # noqa: E402

SECRET = "deid-benchmark-secret-0123456789abcdef"
TOOLS = ("radiolens", "radiolens-detector-all", "dicom-anonymizer", "deid")


# -- running the tools ------------------------------------------------------------------------------------------
def run_radiolens(files: list[Path], out: Path, text_detector: str = "auto") -> None:
    from radiolens.errors import RadiolensError
    from radiolens.io.deid import Deidentifier
    from radiolens.io.deid_ocr import PixelTextConfig

    pixel_text = PixelTextConfig(policy="mask", text_detector=text_detector)
    deid = Deidentifier(SECRET, shift_dates=True, pixel_text=pixel_text)
    for f in files:
        try:
            deid.deidentify_file(f, out / f.name)
        except RadiolensError:
            pass  # no output: every item of the file counts as failed


def run_dicom_anonymizer(files: list[Path], out: Path) -> None:
    from dicomanonymizer import anonymize

    for f in files:
        try:
            anonymize(str(f), str(out / f.name), {}, True)
        except Exception:  # noqa: BLE001 - a tool's failure on one file is scored, not fatal
            pass


def run_deid(files: list[Path], out: Path) -> None:
    import logging

    from deid.dicom import get_identifiers, replace_identifiers

    logging.getLogger("deid").setLevel(logging.ERROR)
    for f in files:  # one at a time: one unreadable file must not cost the others
        try:
            replace_identifiers(dicom_files=[str(f)], ids=get_identifiers([str(f)]), deid=None, overwrite=True,
                                output_folder=str(out), save=True)
        except Exception:  # noqa: BLE001
            pass


RUNNERS = {"radiolens": run_radiolens, "dicom-anonymizer": run_dicom_anonymizer, "deid": run_deid,
           # radiolens with the learned text detector on every frame, not only where its default reads it
           "radiolens-detector-all": lambda files, out: run_radiolens(files, out, text_detector="all")}


# -- scoring --------------------------------------------------------------------------------------------------
def _find(ds, path: list[str], tag: str):
    """The element at ``path`` (sequence keywords, first item each) and ``tag``; None when absent."""
    node = ds
    for keyword in path:
        if keyword not in node or not node[keyword].value:
            return None
        node = node[keyword].value[0]
    try:
        key = pydicom.tag.Tag(int(tag, 16))
    except ValueError:
        key = pydicom.tag.Tag(tag)
    return node[key] if key in node else None


def _text(elem) -> str:
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip("\x00 ")


def _date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _leaks(raw: bytes, token: str) -> bool:
    if not token:
        return False
    return any(v in raw for v in (token.encode(), token.encode("utf-16-le"), token.lower().encode()))


def _pixels(ds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    return arr if arr.ndim == 2 else arr[..., 0] if arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1 else arr


def score_file(items: list[dict], planted: Path, output: Path) -> list[bool]:
    """One verdict per manifest item (False for every item when the tool wrote no output)."""
    if not output.is_file():
        return [False] * len(items)
    raw = output.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(output)
    except Exception:  # noqa: BLE001 - an unreadable output fails everything
        return [False] * len(items)
    deltas = []
    for it in items:
        if it["action"] == "shift" and not it["path"]:
            got = _date(_text(_find(ds, it["path"], it["tag"])))
            if got is not None:
                deltas.append((got - _date(it["planted"])).days)
    common = collections.Counter(deltas).most_common(1)[0][0] if deltas else None
    pixel_cache: dict = {}
    verdicts = []
    for it in items:
        cat, action, token = it["category"], it["action"], it["token"]
        if cat in ("burned_in_text", "preexisting_text", "pixels_kept"):
            verdicts.append(_score_pixels(it, items, planted, ds, pixel_cache))
            continue
        if it["tag"] == "60003000":
            verdicts.append(0x60003000 not in ds and not any(e.tag.group == 0x6000 and e.tag.elem == 0x3000
                                                              for e in ds))
            continue
        if cat in ("private_known", "private_unknown", "file_meta", "preamble", "jpeg_segments", "overlays",
                   "curves"):
            verdicts.append(not _leaks(raw, token))
            continue
        elem = _find(ds, it["path"], it["tag"])
        value = _text(elem)
        nested_gone = bool(it["path"]) and elem is None
        if action == "keep":
            ok = value == it["planted"]
        elif action == "remove":
            ok = value == "" and not _leaks(raw, token)
        elif action == "shift":
            got = _date(value)
            ok = nested_gone or (got is not None and got != _date(it["planted"])
                                 and (bool(it["path"]) or (got - _date(it["planted"])).days == common))
        elif it["tag"] in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            ok = value != "" and value != it["planted"] and pydicom.uid.UID(value).is_valid \
                and not _leaks(raw, it["planted"])
        else:  # replace
            gone = value == ""
            replaced = value != "" and value != it["planted"] and not (token and token in value)
            ok = (replaced if it["strict"] else (gone or replaced)) and not _leaks(raw, token)
            if it["vr"] == "TM" and not gone:
                ok = ok and value != it["planted"]
        verdicts.append(bool(ok))
    return verdicts


def _score_pixels(it: dict, items: list[dict], planted: Path, out_ds, cache: dict) -> bool:
    try:
        if "before" not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache["before"] = _pixels(pydicom.dcmread(planted)).astype(np.int64)
            cache["after"] = _pixels(out_ds).astype(np.int64)
    except Exception:  # noqa: BLE001 - undecodable output pixels
        return False
    before, after = cache["before"], cache["after"]
    if before.shape != after.shape:
        return False
    changed = before != after
    if it["category"] == "burned_in_text":
        r = it["render"]
        return not legible(before, after, render_text(before.shape, r["text"], r["font"], r["size"], tuple(r["xy"])))
    if it["category"] == "preexisting_text":
        return not legible(before, after, preexisting_glyph(before, it["box"]))
    keep = np.ones(before.shape, dtype=bool)
    for other in items:
        if other["category"] == "burned_in_text":
            r = other["render"]
            ys, xs = np.nonzero(render_text(before.shape, r["text"], r["font"], r["size"], tuple(r["xy"])))
            m = r["size"]
            keep[max(0, ys.min() - m):ys.max() + m + 1, max(0, xs.min() - m):xs.max() + m + 1] = False
        elif other["category"] == "preexisting_text":  # grown by its height, as planted text by its size
            x0, y0, x1, y1 = other["box"]
            m = y1 - y0
            keep[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = False
    return bool(changed[keep].mean() <= 0.005) if keep.any() else True


def preexisting_glyph(before: np.ndarray, box: list[int]) -> np.ndarray:
    """The strokes of text a source image already carried, inside its hand-checked ``box``: the pixels that
    differ from the background (the median of a 2-pixel ring round the box) by at least half as much as the
    box's most distinct pixel (the corpus has no glyph mask for text it did not draw)."""
    x0, y0, x1, y1 = box
    ring = np.zeros(before.shape, dtype=bool)
    ring[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True
    ring[y0:y1, x0:x1] = False
    background = float(np.median(before[ring])) if ring.any() else float(np.median(before[y0:y1, x0:x1]))
    dev = np.abs(before[y0:y1, x0:x1].astype(np.float64) - background)
    glyph = np.zeros(before.shape, dtype=bool)
    glyph[y0:y1, x0:x1] = (dev >= 0.5 * dev.max()) & (dev > 0)
    return glyph


def legible(before: np.ndarray, after: np.ndarray, glyph: np.ndarray) -> bool:
    """Whether text drawn at ``glyph`` still stands out in ``after``: more than 5 % of its pixels differ from their
    surroundings by more than half the contrast they had when planted, both against the pixels round the text
    (the glyph's box grown by 3 px, less the glyph grown by 2 px) and against the gaps between its strokes (the
    glyph's own box less the glyph grown by 1 px, where there are any). Untouched text keeps all its contrast
    against both; a black box over the text and the 3 px round it leaves none against either; a box that blacks
    out the strokes and the gaps between them but not the 3 px round it leaves the strokes as dark as their gaps,
    nothing to read, though they differ from the unmasked surroundings."""
    from scipy import ndimage as ndi

    if not glyph.any():  # nothing stands out: nothing to read
        return False
    ys, xs = np.nonzero(glyph)
    y0, y1, x0, x1 = max(0, ys.min() - 3), ys.max() + 4, max(0, xs.min() - 3), xs.max() + 4
    g = glyph[y0:y1, x0:x1]
    ring = ~ndi.binary_dilation(g, iterations=2)
    if not ring.any():
        return False
    b, a = before[y0:y1, x0:x1], after[y0:y1, x0:x1]
    planted = abs(float(np.median(b[g])) - float(np.median(b[ring])))
    if planted == 0:  # planted on a background of its own value: counted as removed only if it was changed
        return bool((a[g] == b[g]).mean() > 0.05)
    if not _stands_out(a[g], a[ring], planted):
        return False
    gaps = np.zeros_like(g)
    gaps[ys.min() - y0:ys.max() - y0 + 1, xs.min() - x0:xs.max() - x0 + 1] = True
    gaps &= ~ndi.binary_dilation(g, iterations=1)
    if gaps.sum() < 4:  # strokes too close for gaps of their own: the surroundings decide
        return True
    inner = abs(float(np.median(b[g])) - float(np.median(b[gaps])))
    if inner == 0:
        return True
    return _stands_out(a[g], a[gaps], inner)


def _stands_out(strokes: np.ndarray, reference: np.ndarray, contrast: float) -> bool:
    """More than 5 % of ``strokes`` differ from the median of ``reference`` by more than half ``contrast``."""
    return bool((np.abs(strokes - np.median(reference)) > 0.5 * contrast).mean() > 0.05)


def score(manifest: dict, corpus: Path, out: Path) -> dict:
    per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for name, entry in manifest["files"].items():
        for it, ok in zip(entry["items"], score_file(entry["items"], corpus / name, out / name), strict=True):
            per[it["category"]][0] += int(ok)
            per[it["category"]][1] += 1
    total_ok = sum(v[0] for v in per.values())
    total = sum(v[1] for v in per.values())
    return {"overall": total_ok / total if total else 0.0, "correct": total_ok, "required": total,
            "categories": {k: {"correct": v[0], "required": v[1], "score": v[0] / v[1]}
                           for k, v in sorted(per.items())}}


# -- OCR on clean radiographs -------------------------------------------------------------------------------------
def clean_images(data_dir: Path | None, n_kermany: int) -> list[tuple[str, np.ndarray]]:
    """Radiographs without burned-in text: Kermany (a seeded sample), NIH full resolution, pydicom-data CRs."""
    from PIL import Image

    out = []
    if data_dir is not None:
        kermany = sorted((data_dir / "kermany_pediatric_pneumonia" / "images").rglob("*.jpeg"))
        rng = np.random.default_rng(19)
        for f in rng.choice(kermany, size=min(n_kermany, len(kermany)), replace=False) if kermany else []:
            out.append(("kermany", np.asarray(Image.open(f).convert("L"))))
        for f in sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png")):
            out.append(("nih", np.asarray(Image.open(f).convert("L"))))
    try:
        import data_store

        for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
            for f in (Path(data_store.__file__).parent / "data").rglob(name):
                out.append(("pydicom-data CR", pydicom.dcmread(f).pixel_array))
    except ImportError:
        pass
    return out


def ocr_clean(images: list[tuple[str, np.ndarray]], text_detector: str = "auto") -> dict:
    from radiolens.io.deid_ocr import PixelTextConfig, detect_frame

    cfg = PixelTextConfig(policy="mask", text_detector=text_detector)
    rows: dict[str, dict] = {}
    for source, img in images:
        t = time.perf_counter()
        boxes = detect_frame(img, cfg)
        elapsed = time.perf_counter() - t
        area = sum((b.x1 - b.x0) * (b.y1 - b.y0) for b in boxes) / img.size
        r = rows.setdefault(source, {"images": 0, "boxes": 0, "images_with_boxes": 0, "masked_fraction_max": 0.0,
                                     "seconds": 0.0, "side_px_max": 0})
        r["images"] += 1
        r["boxes"] += len(boxes)
        r["images_with_boxes"] += int(bool(boxes))
        r["masked_fraction_max"] = max(r["masked_fraction_max"], area)
        r["seconds"] += elapsed
        r["side_px_max"] = max(r["side_px_max"], max(img.shape))
    for r in rows.values():
        r["false_positives_per_image"] = r["boxes"] / r["images"]
        r["seconds_per_image"] = r["seconds"] / r["images"]
    return rows


# -- the whole run ------------------------------------------------------------------------------------------------
def run(out_dir: Path, data_dir: Path | None, limit: int | None = None, tools=TOOLS, sources=None,
        n_clean: int = 0, max_frames: int = 0) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sources if sources is not None else default_sources(data_dir)
    if limit:
        sources = sources[:limit]
    left_out = []
    if max_frames:  # long cines cost minutes of OCR each (every frame is read); left out of quick runs, listed
        kept = []
        for src in sources:
            try:
                n = int(pydicom.dcmread(src, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
            except Exception:  # noqa: BLE001 - unreadable: the corpus builder lists it as skipped
                n = 1
            (kept if n <= max_frames else left_out).append(src)
        sources = kept
    manifest_path = build_corpus(sources, out_dir)
    manifest = json.loads(manifest_path.read_text())
    corpus = out_dir / "corpus"
    files = [corpus / n for n in manifest["files"]]
    results = {"files": len(files), "items": sum(len(e["items"]) for e in manifest["files"].values()),
               "skipped_sources": manifest.get("skipped", []), "left_out_frames": [p.name for p in left_out],
               "tools": {},
               "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                           "system": platform.platform()}}
    for tool in tools:
        dst = out_dir / tool
        dst.mkdir(exist_ok=True)
        t = time.perf_counter()
        RUNNERS[tool](files, dst)
        seconds = time.perf_counter() - t
        results["tools"][tool] = {**score(manifest, corpus, dst), "seconds": seconds,
                                  "seconds_per_file": seconds / max(1, len(files))}
    if n_clean:
        images = clean_images(data_dir, n_clean)
        results["ocr_clean"] = ocr_clean(images)
        if "radiolens-detector-all" in tools:
            results["ocr_clean_detector_all"] = ocr_clean(images, "all")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def markdown(results: dict) -> str:
    tools = list(results["tools"])
    cats = sorted({c for t in tools for c in results["tools"][t]["categories"]})
    lines = ["| category | items | " + " | ".join(tools) + " |", "|---|---:|" + "---:|" * len(tools)]
    for c in cats:
        n = results["tools"][tools[0]]["categories"][c]["required"]
        lines.append(f"| {c} | {n} | " + " | ".join(f"{100 * results['tools'][t]['categories'][c]['score']:.2f} %"
                                                   for t in tools) + " |")
    lines.append(f"| **overall** | {results['items']} | " + " | ".join(
        f"**{100 * results['tools'][t]['overall']:.2f} %**" for t in tools) + " |")
    lines.append("| seconds per file | | " + " | ".join(f"{results['tools'][t]['seconds_per_file']:.2f}"
                                                      for t in tools) + " |")
    for key, label in (("ocr_clean", "clean images"), ("ocr_clean_detector_all", "clean images, detector on all")):
        if key not in results:
            continue
        lines += ["", f"| {label} | n | boxes per image | images with a box | max masked area | s/image |",
                  "|---|---:|---:|---:|---:|---:|"]
        for source, r in results[key].items():
            lines.append(f"| {source} (≤{r['side_px_max']} px) | {r['images']} | {r['false_positives_per_image']:.3f}"
                         f" | {r['images_with_boxes']} | {100 * r['masked_fraction_max']:.2f} % |"
                         f" {r['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="use the first N sources only")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--clean-images", type=int, default=200, help="Kermany images for the OCR false positives")
    parser.add_argument("--max-frames", type=int, default=0, help="leave out sources with more frames (0: none)")
    args = parser.parse_args(argv)
    results = run(args.out, args.data_dir, args.limit, tuple(args.tools.split(",")), n_clean=args.clean_images,
                  max_frames=args.max_frames)
    print(f"{results['files']} files, {results['items']} required actions; {platform.platform()}")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
