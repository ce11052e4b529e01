"""De-identification of files and folders: one PHI-free report row per input file, the CSV/JSON reports, and
the counts a caller prints. The per-file work is :class:`radiolens.io.deid.Deidentifier`'s.

Batch semantics: a bad file does not stop the run; it gets a row with ``status`` "error" or "refused" (burned-in
text) and its error code, and ``on_error(path, exc)`` lets the caller say so (the CLI prints one line and adds
the remedy that is one of its flags). A missing source or an output folder inside an input folder stops the
run before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from radiolens.errors import BurnedInAnnotationError, ConfigError, InputError, RadiolensError
from radiolens.io import formats
from radiolens.io.deid import Deidentifier
from radiolens.progress import track

#: ``on_error(path, exc)``: told about every file that got an "error" or "refused" row.
OnError = Callable[[Path, RadiolensError], None]

REPORT_FIELDS = ("source_ref", "status", "error_code", "output", "sop_instance_uid", "study_instance_uid",
                 "series_instance_uid", "patient_pseudonym", "modality", "burned_in_annotation", "removed",
                 "emptied", "replaced", "uids_remapped", "dates_shifted", "private_removed",
                 "stream_segments_removed", "text_regions_masked")
OK, REFUSED = "ok", "refused"


@dataclass(frozen=True)
class DeidSummary:
    """What a batch did: every report row (input order), where the reports are, and the counts."""

    rows: list[dict]
    csv_path: Path
    json_path: Path

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> int:
        return sum(r["status"] == OK for r in self.rows)

    @property
    def refused(self) -> int:
        """Files refused for (possible) burned-in text."""
        return sum(r["status"] == REFUSED for r in self.rows)

    @property
    def failed(self) -> int:
        """Every file that is not "ok": errors, refusals and duplicate SOP Instance UIDs."""
        return self.total - self.ok


def deidentify_tree(src: str | Path, out_dir: str | Path, deid: Deidentifier,
                    on_error: OnError | None = None) -> list[dict]:
    """De-identify a file or folder into ``out_dir``; one PHI-free report row per input file.

    Input names never reach the report: each file is identified by ``source_ref``, a keyed hash of its path
    relative to ``src``.
    """
    src, out_dir = Path(src).resolve(), Path(out_dir).resolve()
    if out_dir == src or (src.is_dir() and src in out_dir.parents):
        raise ConfigError("the output folder must not be inside the input folder (inputs are never modified)")
    # DICOM by the format table, or no suffix at all (PACS exports): an extension-less file that is not DICOM
    # gets an error row rather than being skipped unseen.
    files = list(formats.iter_input_files(src, keep=lambda p: formats.is_candidate(p, (formats.DICOM.name,),
                                                                                   keep_unrecognised=True)))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    written: set[str] = set()
    for path in track(files, "de-identifying", unit="file"):
        rel = path.name if src.is_file() else path.relative_to(src).as_posix()
        row = {"source_ref": "src-" + deid._mac("source", rel).hex()[:16]}
        try:
            report = deid.deidentify_file(path, out_dir)
            if report["output"] in written:
                report["status"] = "duplicate_sop_instance_uid"
            written.add(report["output"])
            row.update(report)
        except RadiolensError as exc:
            row.update(status=REFUSED if isinstance(exc, BurnedInAnnotationError) else "error",
                       error_code=exc.code)
            if on_error is not None:
                on_error(path, exc)
        rows.append(row)
    return rows


def write_reports(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    """``deid_report.csv`` (one row per file) and ``deid_report.json`` (full rows); deterministic bytes."""
    import csv
    import json

    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "deid_report.json", out_dir / "deid_report.csv"
    json_path.write_text(json.dumps({"files": rows}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in REPORT_FIELDS})
    return csv_path, json_path


def deidentify_sources(sources: Sequence[str | Path], out_dir: str | Path, deid: Deidentifier, *,
                       on_error: OnError | None = None) -> DeidSummary:
    """De-identify every file and folder of ``sources`` into ``out_dir`` and write one report for all of them.

    Every source is checked to exist first (``InputError``), so a typo costs nothing written.
    """
    for src in map(Path, sources):
        if not src.exists():
            raise InputError(f"{src.name}: no such file or folder")
    rows = [row for src in sources for row in deidentify_tree(src, out_dir, deid, on_error=on_error)]
    csv_path, json_path = write_reports(rows, out_dir)
    return DeidSummary(rows, csv_path, json_path)
