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
_MAX_VALUES_SHOWN = 5


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

    - binary: one column; ``positive`` names the positive value (``1`` for 0/1 columns) and ``negative``
      the negative value(s). Every other value is refused, so a typo ("Pneumonia" for "PNEUMONIA") or a
      third class ("FUNGAL") can never silently become a negative. Without ``negative``: ``0`` when
      ``positive`` is ``1``, otherwise the column must hold exactly one other value, which is taken as
      the negative. The model has ONE output, the positive class (``positive_name`` or the value itself).
    - multiclass: one column; ``classes`` lists the values in output order (default: the sorted values of
      the train split, and a value seen only in val/test is refused).
    - multilabel: one 0/1 column per finding (``columns``), in output order.

    ``aliases`` renames raw values before anything else (e.g. ``{"bacteria": "bacterial"}``).
    """

    model_config = ConfigDict(extra="forbid")

    task: Task
    columns: list[str] = Field(min_length=1)
    classes: list[str] | None = None
    positive: str = "1"
    negative: str | list[str] | None = None  # binary: the negative value(s); see the class docstring
    positive_name: str | None = None
    negative_name: str = "normal"
    aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> LabelSpec:
        if self.task in ("binary", "multiclass") and len(self.columns) != 1:
            raise ValueError(f"task '{self.task}' takes exactly one label column, got {len(self.columns)}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes contains duplicates")
        if self.negative is not None:
            if self.task != "binary":
                raise ValueError("'negative' applies to task 'binary' only")
            if self.positive in self.negative_values(aliased=False):
                raise ValueError("the positive value is also listed as negative")
        return self

    def negative_values(self, aliased: bool = True) -> set[str] | None:
        """The declared negative value(s) (after ``aliases`` unless ``aliased=False``), or None."""
        if self.negative is None:
            return None
        raw = [self.negative] if isinstance(self.negative, str) else list(self.negative)
        values = {_canonical_value(v) for v in raw}
        return {self.aliases.get(v, v) for v in values} if aliased else values

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


def _describe_values(vals: pd.Series, mask: pd.Series, reference: set[str]) -> tuple[str, set[str]]:
    """"'X' x12 (first CSV line 7), ..." for the values under ``mask`` (line 1 is the header), noting a
    value that differs from one in ``reference`` only in case. Returns the text and the values listed."""
    rows = np.flatnonzero(mask.to_numpy())
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r, v in zip(rows, vals.to_numpy()[rows], strict=True):
        first.setdefault(v, int(r) + 2)
        counts[v] = counts.get(v, 0) + 1
    lowered: dict[str, str] = {}
    for v in sorted(reference):
        lowered.setdefault(v.lower(), v)
    order = sorted(first, key=first.get)
    parts = []
    for v in order[:_MAX_VALUES_SHOWN]:
        hint = ""
        if v and v.lower() in lowered and lowered[v.lower()] != v:
            hint = f", differs from '{lowered[v.lower()]}' only in case"
        parts.append(f"'{v}' x{counts[v]} (first CSV line {first[v]}{hint})" if v else
                     f"<empty> x{counts[v]} (first CSV line {first[v]})")
    more = f", +{len(order) - _MAX_VALUES_SHOWN} more value(s)" if len(order) > _MAX_VALUES_SHOWN else ""
    return ", ".join(parts) + more, set(counts)


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
            negatives = spec.negative_values()
            if negatives is None:
                if positive == "1":
                    negatives = {"0"}
                else:
                    others = known - {positive, ""}
                    if len(others) != 1:
                        listed, _ = _describe_values(vals, vals.isin(others), {positive})
                        raise ManifestError(
                            f"{self.source_name}: column '{col}' holds {len(others)} value(s) besides the "
                            f"positive '{positive}': {listed}; a binary label takes exactly one negative "
                            "value: declare label.negative (and map the rest with label.aliases or fix them)")
                    negatives = others
            self._reject_unknown(vals, {positive, *negatives}, col)
            return (vals == positive).to_numpy().astype(np.int64), names
        self._reject_unknown(vals, set(names), col)
        index = {c: i for i, c in enumerate(names)}
        return vals.map(index).to_numpy().astype(np.int64), names

    def _reject_unknown(self, vals: pd.Series, allowed: set[str], col: str) -> None:
        """ManifestError naming every unknown value with its row count and first CSV line (line 1 = header).

        Also refuses an "allowed" value that differs from another allowed one only in case (a binary
        column holding PNEUMONIA and Pneumonia would otherwise take Pneumonia as the negative).
        """
        bad = ~vals.isin(allowed)
        lowered: dict[str, str] = {}
        for v in sorted(allowed):
            if v.lower() in lowered:
                bad |= vals == v
            lowered.setdefault(v.lower(), v)
        if not bad.any():
            return
        listed, bad_values = _describe_values(vals, bad, allowed)
        allowed_shown = ", ".join(sorted(a for a in allowed if a not in bad_values)) or "none"
        raise ManifestError(
            f"{self.source_name}: {int(bad.sum())} row(s) have an unknown label in column '{col}': "
            f"{listed}; allowed: {allowed_shown}")

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


def read_split_rows(path: Path, split: str | None = None) -> pd.DataFrame:
    """The rows of a manifest CSV (only those of ``split`` when given), read as they are: a scoring or audit run
    needs ``path`` and whatever columns it uses, not the full validation of :func:`load_manifest`. A missing
    file, a ``split`` without a split column, or no rows left is a ``ManifestError``."""
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path.name}")
    frame = pd.read_csv(path, dtype={"patient_id": str, "split": str})
    if split is not None:
        if "split" not in frame.columns:
            raise ManifestError("manifest has no 'split' column")
        frame = frame[frame["split"] == split].reset_index(drop=True)
    if frame.empty:
        raise ManifestError("no rows to score")
    return frame


def manifest_targets(frame: pd.DataFrame, manifest_path: Path, label: str | None,
                   stored_label: dict | None) -> np.ndarray:
    """Targets of ``frame`` (rows of the manifest at ``manifest_path``): the 0/1 column ``label`` when given,
    else the label definition a model was trained with (``stored_label``, a :class:`LabelSpec` dump)."""
    if label is not None:
        if label not in frame.columns:
            raise ManifestError(f"manifest has no label column '{label}'")
        values = pd.to_numeric(frame[label], errors="coerce")
        if values.isna().any() or not values.isin([0, 1]).all():
            raise ManifestError(f"label column '{label}' must hold 0/1 values; omit --label to use the label "
                                "definition stored in the model")
        return values.astype(int).to_numpy()
    if not stored_label:
        raise ManifestError("this model does not record its label column(s): pass --label COLUMN (0/1 values)")
    spec = LabelSpec.model_validate(stored_label)
    return Manifest(frame, manifest_path.parent.resolve(), manifest_path.name).targets(spec)[0]
