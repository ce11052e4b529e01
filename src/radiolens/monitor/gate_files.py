"""Checking image files against a registered model's input gate (``radiolens monitor gate``): one row per
file, accepted or why not; an unreadable file is a row too, not a failure of the whole run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.models.embedding import EmbeddingTap
from radiolens.monitor.config import GateConfig
from radiolens.monitor.gate import InputGate
from radiolens.monitor.profile import MonitoringProfile, model_outputs


def check_files(bundle: ModelBundle, profile: MonitoringProfile, files: Sequence[Path],
                cfg: GateConfig) -> Iterator[dict[str, Any]]:
    """Per file, in order: ``{"file": name, "status": ..., "reasons": [...], ...}`` (the gate's verdict, or
    ``status`` "unreadable" with the read error's code and message)."""
    gate = InputGate(cfg, profile.density, profile.observed)
    tap = EmbeddingTap(bundle.model, bundle.info.num_outputs, bundle.info.arch)
    for f in files:
        try:
            image = read_image(f)
            _, emb = model_outputs(bundle, tap, [image])
            result = gate.check(image.meta, image.height, image.width, emb)
            yield {"file": f.name, **result.as_dict()}
        except InputError as exc:
            yield {"file": f.name, "status": "unreadable", "reasons": [f"{exc.code}: {exc}"]}
