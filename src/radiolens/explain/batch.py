"""Explaining a list of image files: overlay PNGs (and optional figures, filters, feature maps) plus
``index.csv`` mapping every file written to its input, class and model output. The job behind
``radiolens explain``.

Outputs are named by position (``image000_...``), never by the input's file name: names in DICOM trees often
carry patient identifiers; ``index.csv`` maps each output back to the path given.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from radiolens.explain.explainer import Explanation, explain_pixels
from radiolens.explain.figures import save_feature_maps, save_filters, save_overlay, save_overlay_figure
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle, file_sha256

#: Columns of ``index.csv``: one row per file written.
INDEX_COLUMNS = ["output", "kind", "input", "input_position", "input_sha256", "class", "model_output",
                 "negated_logit", "probability", "method", "width", "height", "model_sha256"]


def explain_files(bundle: ModelBundle, files: Sequence[Path], out: Path, method: str = "gradcam",
                  class_names: list[str] | None = None, *, figure: bool = False, filters: bool = False,
                  on_written: Callable[[Path], object] = lambda path: None) -> Path:
    """Write the explanations of ``files`` into ``out`` and return the path of ``index.csv``.

    ``class_names``: the classes to explain (default: every output). ``figure``: also a side-by-side figure
    per overlay; ``filters``: also first-layer filters and feature maps. ``on_written`` is called with each
    file as soon as it is written. index.csv is written row by row, so a run stopped by an unreadable image
    still maps every overlay it wrote.
    """
    out.mkdir(parents=True, exist_ok=True)
    tag = method.replace("++", "pp")
    with open(out / "index.csv", "w", newline="", encoding="utf-8") as fh:
        index = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        index.writeheader()

        def record(path: Path, kind: str, source: dict | None = None, e: Explanation | None = None,
                   size=None) -> None:
            on_written(path)
            index.writerow({**dict.fromkeys(INDEX_COLUMNS, ""), "output": path.name, "kind": kind,
                            "model_sha256": bundle.sha256, **(source or {}),
                            **({} if e is None else {"class": e.class_name, "model_output": e.output_index,
                                                     "negated_logit": e.negative, "method": method,
                                                     "probability": f"{e.probability:.6f}"}),
                            **({} if size is None else {"width": size[1], "height": size[0]})})
            fh.flush()

        if filters:
            record(save_filters(bundle.model, out / "filters.png"), "filters")
        for k, f in enumerate(files):
            pixels = read_image(f).first_frame()
            source = {"input": str(f), "input_position": k, "input_sha256": file_sha256(f)}
            stem = f"image{k:03d}"
            for e in explain_pixels(bundle, pixels, method, class_names or None):
                safe = "".join(c if c.isalnum() else "_" for c in e.class_name)
                name = f"{stem}_{safe}_{tag}"
                record(save_overlay(pixels, e.heatmap, out / f"{name}.png", e.class_name, e.probability, method),
                       "overlay", source, e, pixels.shape)
                if figure:
                    record(save_overlay_figure(pixels, e.heatmap, out / f"{name}_figure.png", e.class_name,
                                               e.probability, method), "figure", source, e)
            if filters:
                record(save_feature_maps(bundle.model, bundle.preprocess(pixels)[None],
                                         out / f"{stem}_feature_maps.png"), "feature_maps", source)
    return out / "index.csv"
