"""Decompression-bomb and sanity guard applied before any pixel buffer is allocated."""

from __future__ import annotations

from radiolens.errors import ImageDimensionError

MAX_SIDE = 16384
MAX_PIXELS = 16384 * 16384  # one huge frame, or many small ones
MAX_FRAMES = 4096


def check_dimensions(name: str, rows: int, cols: int, frames: int = 1, samples: int = 1) -> None:
    if rows <= 0 or cols <= 0 or frames <= 0 or samples <= 0:
        raise ImageDimensionError(f"{name}: zero-sized image ({rows}x{cols}, {frames} frame(s))")
    if rows > MAX_SIDE or cols > MAX_SIDE or frames > MAX_FRAMES:
        raise ImageDimensionError(f"{name}: absurd dimensions {rows}x{cols}x{frames} (limit {MAX_SIDE} per side)")
    if rows * cols * frames * samples > MAX_PIXELS:
        raise ImageDimensionError(f"{name}: image too large ({rows}x{cols}x{frames}x{samples} values)")
