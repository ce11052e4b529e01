"""CLI commands of the io layer: ``preview`` (PNG renderings) and ``deid`` (DICOM de-identification).

Batch semantics for both: a bad file costs one line on stderr and the run goes on; the exit status is 1
at the end when any file failed (2 for bad options or configuration, via ``friendly_errors``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import PIXEL_TEXT_POLICIES, TEXT_DETECTOR_USES, friendly_errors
from radiolens.errors import BurnedInAnnotationError, InputError, RadiolensError

EXIT_SOME_FILES_FAILED = 1


def _window(center: float | None, width: float | None):
    from radiolens.io.image import Window

    if (center is None) != (width is None):
        raise InputError("give both --window-center and --window-width, or neither")
    return None if center is None else Window(center=center, width=width)


def preview_cmd(
    files: list[Path] = typer.Argument(..., help="Image files (DICOM, PNG, JPEG, TIFF) or folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the PNG previews."),
    window_center: float | None = typer.Option(None, "--window-center", help="VOI window centre (overrides the file)."),
    window_width: float | None = typer.Option(None, "--window-width", help="VOI window width (overrides the file)."),
    all_frames: bool = typer.Option(False, "--all-frames", help="One PNG per frame of multi-frame files."),
) -> None:
    """Render display-ready PNG previews; names are content hashes or remapped UIDs, never patient data."""
    from radiolens.io.preview import preview_files

    summary = preview_files(files, out, window=_window(window_center, window_width), all_frames=all_frames,
                            on_error=lambda _path, exc: typer.echo(f"error: {exc}", err=True))
    typer.echo(f"wrote {len(summary.written)} preview(s) to {out}"
               + (f"; {summary.failed} file(s) failed" if summary.failed else ""))
    if summary.failed:
        sys.exit(EXIT_SOME_FILES_FAILED)


def deid_cmd(
    ctx: typer.Context,
    sources: list[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively), then OUT.",
                                         metavar="IN..."),
    out: Path = typer.Argument(..., help="Output folder (must not be inside an input folder).", metavar="OUT"),
    secret: str | None = typer.Option(None, "--secret", envvar="RADIOLENS_DEID_SECRET", show_envvar=True,
                                      help="HMAC key for UIDs, pseudonyms and date shifts (required, at least 16 "
                                           "bytes). Prefer RADIOLENS_DEID_SECRET_FILE naming a file only you can "
                                           "read (mode 0600): a value typed here is visible to other users (ps)."),
    shift_dates: bool = typer.Option(False, "--shift-dates", help="Keep dates, shifted by a per-patient offset."),
    allow_burned_in: bool = typer.Option(False, "--allow-burned-in",
                                         help="Also process files that may have burned-in text (check pixels!)."),
    pixel_text: Literal[PIXEL_TEXT_POLICIES] = typer.Option("off", "--pixel-text",
                                   help="Burned-in text in the pixels, read by Tesseract OCR: off (the header rule "
                                        "alone), refuse (also refuse files where OCR finds text) or mask (black "
                                        "boxes over it, written as a new instance with BurnedInAnnotation NO)."),
    text_detector: Literal[TEXT_DETECTOR_USES] = typer.Option(
        "auto", "--text-detector", help="Which frames the learned text detector also reads (with --pixel-text "
        "refuse|mask): auto (ultrasound and colour pictures, and frames where text was found), all (every frame; "
        "slower) or off."),
) -> None:
    """De-identify DICOM (PS3.15 Annex E basic profile + retain patient characteristics); writes a report."""
    from radiolens.io.deid import Deidentifier, load_secret
    from radiolens.io.deid_batch import deidentify_sources

    # --secret on the command line is visible to other local users (ps): warned; a published demo value: warned;
    # a secret file others can read: refused.
    # compared by name: Typer may bring its own copy of click, whose ParameterSource is another enum class
    typed = getattr(ctx.get_parameter_source("secret"), "name", "") == "COMMANDLINE"
    secret = load_secret(secret, on_command_line=typed, public="warn",
                         warn=lambda msg: typer.echo(f"warning: {msg}", err=True))
    from radiolens.io.deid_ocr import PixelTextConfig

    deid = Deidentifier(secret, shift_dates=shift_dates, allow_burned_in=allow_burned_in,
                        pixel_text=PixelTextConfig(policy=pixel_text, text_detector=text_detector))

    def on_error(path: Path, exc: RadiolensError) -> None:
        # The io layer says what is wrong; the remedy that is a flag of this command is added here.
        hint = ("; check the pixels for burned-in text, then rerun with --allow-burned-in if there is none"
                if isinstance(exc, BurnedInAnnotationError) else "")
        typer.echo(f"error: {exc}{hint}", err=True)

    summary = deidentify_sources(sources, out, deid, on_error=on_error)
    typer.echo(f"de-identified {summary.ok}/{summary.total} file(s) into {out} ({summary.refused} refused for "
               f"burned-in text); report: {summary.csv_path}")
    if summary.failed:
        sys.exit(EXIT_SOME_FILES_FAILED)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("preview")(friendly_errors(preview_cmd))
    app.command("deid")(friendly_errors(deid_cmd))
