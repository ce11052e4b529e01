"""Crash-safe, resumable result files.

CSV: rows are appended and fsync'ed after every batch; a torn last line (the process died mid-write) is cut
off on reopen. Parquet cannot be appended in place (the footer is written last), so each batch becomes an
atomically renamed part file under ``<out>.parts/`` and the parts are merged into ``<out>`` at the end;
a killed run leaves the parts, which the next run reads and merges. Either way a crash loses at most the
batch in flight, and a re-run skips every path already present.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from radiolens.errors import InputError


class ResultStore:
    def __init__(self, path: str | Path, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise InputError(f"{self.path.name}: output must end in .csv or .parquet")
        self.format = suffix[1:]
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
            raise InputError(f"{self.path.name} already holds results with other columns (another model?); "
                             "choose a new --out")

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

    def done_keys(self) -> set[str]:
        return {r["path"] for r in self.rows()}

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

        return pa.schema([(c, pa.float64() if c.startswith("p_") else pa.bool_() if c == "flagged" else pa.string())
                          for c in self.columns])

    def finalize(self) -> None:
        """Parquet: merge part files into the single output file (no-op for CSV)."""
        if self.format != "parquet" or not self.parts_dir.is_dir():
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        seen: set[str] = set()
        rows = []
        for row in self.rows():  # dedupe: a merge interrupted after its rename leaves the parts behind
            if row["path"] not in seen:
                seen.add(row["path"])
                rows.append(row)
        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=self._schema()), tmp)
        tmp.replace(self.path)
        shutil.rmtree(self.parts_dir)
