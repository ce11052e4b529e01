"""Crash-safe, resumable result files.

CSV: rows are appended and fsync'ed after every batch; a torn last line (the process died mid-write) is cut
off on reopen. Parquet cannot be appended in place (the footer is written last), so each batch becomes an
atomically renamed part file under ``<out>.parts/`` and the parts are merged into ``<out>`` at the end;
a killed run leaves the parts, which the next run reads and merges. Either way a crash loses at most the
batch in flight, and a re-run skips every path already scored; error rows are retried (their row replaced).

Every row carries the model label (name@backend-precision) and the model file's sha256, so a re-run with
another model is refused instead of silently mixing two models' scores in one file.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from radiolens.errors import InputError, missing_extra


class ResultsMismatchError(InputError):
    """The results file was written by another model (or backend): resuming into it would mix two models."""

    code = "results_other_model"


def _require_pyarrow() -> None:
    """Parquet needs pyarrow (the ``tables`` extra, not part of ``radiolens[serve]``): say so before any image
    is scored, not after."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        err = missing_extra(exc, "Parquet output")
        if err is None:
            raise
        raise err from None


def _is_error(row: dict) -> bool:
    return row.get("status") == "error"


class ResultStore:
    def __init__(self, path: str | Path, columns: list[str], overwrite: bool = False):
        self.path = Path(path)
        self.columns = list(columns)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise InputError(f"{self.path.name}: output must end in .csv or .parquet")
        self.format = suffix[1:]
        if self.format == "parquet":
            _require_pyarrow()
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        if self.format == "csv":
            self._repair_csv()
        self._check_columns()

    # ------------------------------------------------------------------ reading back
    def _repair_csv(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _existing_columns(self) -> list[str] | None:
        if self.format == "csv":
            if not self.path.exists() or self.path.stat().st_size == 0:
                return None
            with open(self.path, newline="", encoding="utf-8") as fh:
                return next(csv.reader(fh), None)
        import pyarrow.parquet as pq

        files = self._parquet_files()
        return pq.read_schema(files[0]).names if files else None

    def _check_columns(self) -> None:
        existing = self._existing_columns()
        if existing is not None and existing != self.columns:
            raise ResultsMismatchError(f"{self.path.name} already holds results with other columns (another "
                                       "model?); choose a new --out or pass --overwrite")

    def _parquet_files(self) -> list[Path]:
        files = [self.path] if self.path.exists() else []
        if self.parts_dir.is_dir():
            files += sorted(self.parts_dir.glob("part-*.parquet"))
        return files

    def rows(self) -> list[dict]:
        if self.format == "csv":
            if not self.path.exists() or self.path.stat().st_size == 0:
                return []
            with open(self.path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        import pyarrow.parquet as pq

        out: list[dict] = []
        for f in self._parquet_files():
            out += pq.read_table(f).to_pylist()
        return out

    def done_keys(self, include_errors: bool = True) -> set[str]:
        """Paths with a row; without ``include_errors`` only those scored successfully."""
        return {r["path"] for r in self.rows() if include_errors or not _is_error(r)}

    def check_provenance(self, model: str, sha256: str) -> None:
        """Refuse to resume into results that another model file or backend wrote."""
        found = {(r.get("model", ""), r.get("model_sha256", "")) for r in self.rows()}
        others = found - {(model, sha256)}
        if others:
            other_model, other_sha = sorted(others)[0]
            raise ResultsMismatchError(
                f"{self.path.name} holds results of another model ({other_model}, sha256 {other_sha[:12]}...; "
                f"this run: {model}, sha256 {sha256[:12]}...): choose a new --out or pass --overwrite")

    def drop(self, keys: set[str]) -> int:
        """Remove the rows of ``keys`` (error rows about to be retried) by an atomic rewrite; returns how many.

        Rewritten rather than appended-and-deduplicated so the file never holds two rows for one path.
        """
        rows = self.rows()
        kept = [r for r in rows if r["path"] not in keys]
        if len(kept) == len(rows):
            return 0
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.format == "csv":
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="raise")
                writer.writeheader()
                writer.writerows(kept)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([self._typed(r) for r in kept], schema=self._schema())
            pq.write_table(table, tmp)
            tmp.replace(self.path)  # the merged file now holds everything: the parts are redundant
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        return len(rows) - len(kept)

    def _typed(self, row: dict) -> dict:
        """CSV and Parquet rows read back as the schema's types (needed when rewriting)."""
        out = {}
        for c in self.columns:
            v = row.get(c)
            if c.startswith("p_"):
                out[c] = float(v) if v not in (None, "") else float("nan")
            elif c == "flagged":
                out[c] = v if isinstance(v, bool) else str(v) == "True"
            elif c.startswith("decision_"):  # empty: no decision (error row, not assessed)
                out[c] = v if isinstance(v, bool) or v is None else (None if v == "" else str(v) == "True")
            else:
                out[c] = "" if v is None else str(v)
        return out

    # ------------------------------------------------------------------ writing
    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.format == "csv":
            new = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="raise")
                if new:
                    writer.writeheader()
                writer.writerows(rows)
                fh.flush()
                os.fsync(fh.fileno())
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.parts_dir.mkdir(exist_ok=True)
        n = len(list(self.parts_dir.glob("part-*.parquet")))
        target = self.parts_dir / f"part-{n:07d}.parquet"
        tmp = target.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=self._schema()), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)

    def _schema(self):
        import pyarrow as pa

        def kind(c: str):
            if c.startswith("p_"):
                return pa.float64()
            return pa.bool_() if c == "flagged" or c.startswith("decision_") else pa.string()

        return pa.schema([(c, kind(c)) for c in self.columns])

    def finalize(self) -> None:
        """Parquet: merge part files into the single output file (no-op for CSV)."""
        if self.format != "parquet" or not self.parts_dir.is_dir():
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Dedupe: a merge interrupted after its rename leaves the parts behind. A path's successful row wins
        # over an error row of it (a retried file), otherwise the first row is kept.
        by_path: dict[str, dict] = {}
        for row in self.rows():
            old = by_path.get(row["path"])
            if old is None or (_is_error(old) and not _is_error(row)):
                by_path[row["path"]] = row
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(list(by_path.values()), schema=self._schema()), tmp)
        tmp.replace(self.path)
        shutil.rmtree(self.parts_dir)
