"""Scoring the images of a manifest split with a bundle (and optionally a spread), for triage fitting and
subgroup audits: images are read lazily per batch, so a large split never sits in memory as one tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radiolens.data.manifest import manifest_targets, read_split_rows
from radiolens.explain.uncertainty import ScoredCases, score_with_uncertainty
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.progress import track


@dataclass
class ScoredManifest:
    frame: pd.DataFrame  #: the manifest rows scored, in order
    cases: ScoredCases  #: calibrated probabilities (and spread) per row
    targets: np.ndarray  #: per row: the ``label`` column, or the model's own label definition


def score_manifest(bundle: ModelBundle, manifest: Path, split: str | None, label: str | None = None, *,
                   mc_passes: int = 0, ensemble: Sequence[ModelBundle] = (), batch_size: int = 64) -> ScoredManifest:
    """Score the rows of ``split`` (every row when None) of the manifest CSV at ``manifest``; see
    :func:`radiolens.explain.uncertainty.score_with_uncertainty` for ``mc_passes`` and ``ensemble``."""
    frame = read_split_rows(manifest, split)
    y = manifest_targets(frame, manifest, label, bundle.info.training.get("label"))
    images = (read_image(manifest.parent / p).first_frame()
              for p in track(frame["path"], f"scoring {split or 'all'}", total=len(frame)))
    scored = score_with_uncertainty(bundle, images, mc_passes=mc_passes, ensemble=ensemble, batch_size=batch_size)
    return ScoredManifest(frame, scored, y)
