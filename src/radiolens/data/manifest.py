"""The manifest CSV: the one input every training and evaluation run starts from.

One row per image: ``path`` (relative to the manifest's folder, or absolute), ``patient_id``, one or more
label columns, and optional ``study_id, age, sex, view, site, split``. Whatever the source (an
ImageFolder tree, NIH ChestX-ray14, Kermany folders, a MedMNIST npz), a builder in
:mod:`radiolens.data.builders` writes this format first, so splitting, leakage checks and training only
ever deal with one layout.

Rows are validated with pydantic so a bad manifest fails with the row number and column, before any
image is read. Error messages name rows and columns, never patient identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from radiolens.errors import ManifestError

REQUIRED_COLUMNS = ("path", "patient_id")
OPTIONAL_COLUMNS = ("study_id", "age", "sex", "view", "site", "split")
Task = Literal["binary", "multiclass", "multilabel"]
_MAX_ERRORS_SHOWN = 3


class ManifestRow(BaseModel):
    """One image. Extra columns (the labels, anything else) are kept as-is."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    path: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    study_id: str | None = None
    age: float | None = Field(default=None, ge=0, le=130)
    sex: Literal["M", "F", "O"] | None = None
    view: str | None = None
    site: str | None = None
    split: str | None = None

    @field_validator("sex", mode="before")
    @classmethod
    def _sex(cls, v: object) -> object:
        if v is None:
            return None
        text = str(v).strip().upper()
        return {"MALE": "M", "FEMALE": "F", "OTHER": "O"}.get(text, text) or None



class LabelSpec(BaseModel):
    """Which manifest column(s) hold the target, and how values map to classes.

    - binary: one column; ``positive`` names the positive value (``1`` for 0/1 columns). The model has
      ONE output, the positive class (``positive_name`` or the value itself).
    - multiclass: one column; ``classes`` lists the values in output order (default: sorted values).
    - multilabel: one 0/1 column per finding (``columns``), in output order.

    ``aliases`` renames raw values before anything else (e.g. ``{"bacteria": "bacterial"}``).
    """

    model_config = ConfigDict(extra="forbid")

    task: Task
    columns: list[str] = Field(min_length=1)
    classes: list[str] | None = None
    positive: str = "1"
    positive_name: str | None = None
    negative_name: str = "normal"
    aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> LabelSpec:
        if self.task in ("binary", "multiclass") and len(self.columns) != 1:
            raise ValueError(f"task '{self.task}' takes exactly one label column, got {len(self.columns)}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes contains duplicates")
        return self

    def output_names(self, frame: pd.DataFrame | None = None) -> list[str]:
        """One name per model output (binary: just the positive class)."""
        if self.task == "multilabel":
            return list(self.columns)
        if self.task == "binary":
            return [self.positive_name or self.aliases.get(self.positive, self.positive)]
        if self.classes is not None:
            return list(self.classes)
        if frame is None:
            raise ManifestError("multiclass label spec without 'classes' needs the manifest to infer them")
        return sorted(set(_label_values(frame, self.columns[0], self.aliases)))


def _label_values(frame: pd.DataFrame, column: str, aliases: dict[str, str]) -> pd.Series:
    raw = frame[column].map(_canonical_value)
    return raw.map(lambda v: aliases.get(v, v))


def _canonical_value(v: object) -> str:
    """'1', 1, 1.0 and True all mean the same label; text values are stripped."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


@dataclass
class Manifest:
    """A validated manifest: the table plus the folder relative paths resolve against."""

    frame: pd.DataFrame
    root: Path
    source_name: str = "manifest.csv"

    def __len__(self) -> int:
        return len(self.frame)

    # ------------------------------------------------------------------ paths
    def absolute_paths(self) -> list[Path]:
        out = []
        for p in self.frame["path"]:
            path = Path(p)
            out.append(path if path.is_absolute() else self.root / path)
        return out

    def check_files_exist(self) -> None:
        missing = [i for i, p in enumerate(self.absolute_paths()) if not p.is_file()]
        if missing:
            rows = ", ".join(str(i + 2) for i in missing[:_MAX_ERRORS_SHOWN])
            raise ManifestError(f"{self.source_name}: {len(missing)} image file(s) not found "
                                f"(CSV lines {rows}{', ...' if len(missing) > _MAX_ERRORS_SHOWN else ''})")

    # ------------------------------------------------------------------ labels
    def targets(self, spec: LabelSpec) -> tuple[np.ndarray, list[str]]:
        """Targets in the evaluator's layout: binary (N,) 0/1, multiclass (N,) int, multilabel (N, K) 0/1.

        Raises ManifestError naming the CSV lines when a value is not a known label.
        """
        missing = [c for c in spec.columns if c not in self.frame.columns]
        if missing:
            raise ManifestError(f"{self.source_name}: label column(s) not found: {', '.join(missing)}")
        names = spec.output_names(self.frame)
        if spec.task == "multilabel":
            out = np.zeros((len(self.frame), len(spec.columns)), dtype=np.int64)
            for j, col in enumerate(spec.columns):
                vals = _label_values(self.frame, col, spec.aliases)
                self._reject_unknown(vals, {"0", "1"}, col)
                out[:, j] = (vals == "1").to_numpy()
            return out, names
        col = spec.columns[0]
        vals = _label_values(self.frame, col, spec.aliases)
        if spec.task == "binary":
            positive = spec.aliases.get(spec.positive, spec.positive)
            known = set(vals.unique())
            if positive not in known:
                raise ManifestError(f"{self.source_name}: column '{col}' never holds the positive value "
                                    f"'{positive}' (values: {', '.join(sorted(known)[:10])})")
            empties = vals == ""
            if empties.any():
                self._reject_unknown(vals, known - {""}, col)
            return (vals == positive).to_numpy().astype(np.int64), names
        self._reject_unknown(vals, set(names), col)
        index = {c: i for i, c in enumerate(names)}
        return vals.map(index).to_numpy().astype(np.int64), names

    def _reject_unknown(self, vals: pd.Series, allowed: set[str], col: str) -> None:
        bad = ~vals.isin(allowed)
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            shown = sorted({v if v else "<empty>" for v in vals[bad].tolist()})[:5]
            raise ManifestError(
                f"{self.source_name}: {len(rows)} row(s) have an unknown label in column '{col}' "
                f"({', '.join(shown)}; allowed: {', '.join(sorted(allowed))}; CSV lines "
                f"{', '.join(str(r + 2) for r in rows[:_MAX_ERRORS_SHOWN])})")

    # ------------------------------------------------------------------ splits
    def split_names(self) -> list[str]:
        if "split" not in self.frame.columns:
            return []
        return sorted(s for s in self.frame["split"].dropna().astype(str).unique() if s)

    def subset(self, split: str) -> Manifest:
        if "split" not in self.frame.columns:
            raise ManifestError(f"{self.source_name}: has no 'split' column; run `radiolens split` first")
        mask = self.frame["split"].astype(str) == split
        if not mask.any():
            raise ManifestError(f"{self.source_name}: split '{split}' is empty or absent "
                                f"(splits present: {', '.join(self.split_names()) or 'none'})")
        return Manifest(self.frame[mask].reset_index(drop=True), self.root, self.source_name)

    def with_frame(self, frame: pd.DataFrame) -> Manifest:
        return Manifest(frame.reset_index(drop=True), self.root, self.source_name)

    def save(self, path: str | Path) -> Path:
        """Write as CSV; relative paths stay relative only when saved next to the same root."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.frame.copy()
        if path.parent.resolve() != self.root.resolve():
            frame["path"] = [str(p.resolve()) for p in self.absolute_paths()]
        frame.to_csv(path, index=False)
        return path


def validate_frame(frame: pd.DataFrame, source_name: str = "manifest.csv") -> pd.DataFrame:
    """Check required columns and every row's types with pydantic; returns the frame with clean values."""
    absent = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if absent:
        raise ManifestError(f"{source_name}: required column(s) missing: {', '.join(absent)} "
                            f"(a manifest needs: path, patient_id, label column(s))")
    if len(frame) == 0:
        raise ManifestError(f"{source_name}: has no rows")
    known = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
    records = frame[known].astype(object).where(frame[known].notna(), None).to_dict(orient="records")
    clean, errors = [], []
    for i, rec in enumerate(records):
        rec = {k: (str(v) if k in ("path", "patient_id", "study_id", "split", "view", "site")
                   and v is not None else v) for k, v in rec.items()}
        rec = {k: (None if isinstance(v, str) and not v.strip() and k not in REQUIRED_COLUMNS else v)
               for k, v in rec.items()}
        try:
            clean.append(ManifestRow.model_validate(rec).model_dump(include=set(known)))
        except ValidationError as exc:
            first = exc.errors()[0]
            errors.append(f"line {i + 2} column '{first['loc'][0] if first['loc'] else '?'}': {first['msg']}")
    if errors:
        more = f" (+{len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        raise ManifestError(f"{source_name}: invalid rows: {'; '.join(errors[:_MAX_ERRORS_SHOWN])}{more}")
    out = frame.copy()
    cleaned = pd.DataFrame.from_records(clean, columns=known)
    for col in known:
        out[col] = cleaned[col].to_numpy()
    return out


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest CSV (paths resolve against the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path.name}")
    try:
        frame = pd.read_csv(path, dtype={"patient_id": str, "study_id": str, "split": str, "path": str},
                            keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path.name}: not a readable CSV ({type(exc).__name__})") from exc
    return Manifest(validate_frame(frame, path.name), path.parent.resolve(), path.name)


def manifest_from_frame(frame: pd.DataFrame, root: str | Path, source_name: str = "manifest") -> Manifest:
    return Manifest(validate_frame(frame.reset_index(drop=True), source_name), Path(root).resolve(), source_name)
