"""The subgroup audit of a bundle on a manifest: the job behind ``radiolens audit-subgroups``.

Per-subgroup AUROC (95% CI), sensitivity, specificity, ECE and equalized-odds gaps at the bundle's own
threshold (:func:`radiolens.evaluate.subgroups.audit_subgroups`), on the bundle's calibrated probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from radiolens.data.manifest import read_split_rows
from radiolens.errors import ModelError
from radiolens.evaluate.subgroups import audit_subgroups, subgroup_column, subgroup_table
from radiolens.explain.manifest_scoring import score_manifest
from radiolens.models.bundle import ModelBundle


def audit_bundle_subgroups(model_path: Path, manifest: Path, columns: list[str], out: Path, *,
                           label: str | None = None, split: str | None = None,
                           n_bootstrap: int = 1000) -> tuple[dict[str, Any], pd.DataFrame]:
    """Audit the binary bundle at ``model_path`` on the rows of ``split`` (every row when None) across
    ``columns``; writes ``subgroups.json`` and ``subgroups.csv`` into ``out`` and returns (audit, table).
    A missing column fails before any image is read."""
    bundle = ModelBundle.load(model_path)
    if bundle.info.task != "binary":
        raise ModelError("audit-subgroups needs a binary model")
    rows = read_split_rows(manifest, split)
    for c in columns:
        subgroup_column(rows, c)
    scored = score_manifest(bundle, manifest, split, label)
    audit = audit_subgroups(scored.targets, scored.cases.probs[:, 0], scored.frame, list(columns),
                            bundle.info.thresholds[0], n_bootstrap=n_bootstrap)
    audit["model_sha256"] = bundle.sha256
    out.mkdir(parents=True, exist_ok=True)
    (out / "subgroups.json").write_text(json.dumps(audit, indent=2, default=float))
    table = subgroup_table(audit)
    table.to_csv(out / "subgroups.csv", index=False)
    return audit, table
