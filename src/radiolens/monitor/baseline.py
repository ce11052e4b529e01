"""Registering a model's monitoring baseline from a manifest split: the job behind ``radiolens monitor
baseline``. The input gate is fitted on half of the patients and calibrated on the others; the profile is
stored in the bundle only when the gate's held-out false-rejection rate is not far above its target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radiolens.data.manifest import manifest_targets, read_split_rows
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.monitor.config import GateConfig
from radiolens.monitor.profile import MonitoringProfile, build_profile, register
from radiolens.progress import track


@dataclass
class BaselineOptions:
    split: str | None = "val"  #: manifest split of held-out images (None: every row)
    label: str | None = None  #: 0/1 label column (default: the model's own label definition)
    labels: bool = True  #: False: no labels, so no validation error rate
    max_images: int = 2000  #: random sample of at most this many rows
    seed: int = 0  #: seed of the sample and of the gate's fit/calibration halves
    patient_column: str = "patient_id"
    allow_high_rejection: bool = False  #: register even when the gate refuses far above its target


def register_baseline(bundle: ModelBundle, manifest: Path, gate: GateConfig, options: BaselineOptions | None = None,
                      note: Callable[[str], object] = print) -> MonitoringProfile:
    """Build the profile of ``bundle`` from the manifest CSV at ``manifest`` and store it in ``bundle`` (in
    memory: the caller saves the bundle). Refused (``GateCalibrationError``, nothing stored) when the gate's
    false-rejection rate is far above target, unless ``allow_high_rejection``. ``note`` receives the warning
    given when the manifest has no complete patient column."""
    opts = options or BaselineOptions()
    frame = read_split_rows(manifest, opts.split)
    if len(frame) > opts.max_images:
        frame = frame.sample(n=opts.max_images, random_state=opts.seed).reset_index(drop=True)
    targets = (manifest_targets(frame, manifest, opts.label, bundle.info.training.get("label"))
               if opts.labels else None)
    groups = None
    if opts.patient_column in frame.columns and not frame[opts.patient_column].isna().any():
        groups = frame[opts.patient_column].astype(str).tolist()
    else:
        note(f"note: no complete '{opts.patient_column}' column: every image counts as its own patient, so "
             "images of one patient may both fit and calibrate the gate (optimistic)")
    images = (read_image(manifest.parent / p)
              for p in track(frame["path"], "baseline images", total=len(frame)))
    profile = build_profile(bundle, images, targets, gate, source=f"{manifest.name} split={opts.split or 'all'}",
                            seed=opts.seed, groups=groups)
    register(bundle, profile, allow_high_rejection=opts.allow_high_rejection)
    return profile
