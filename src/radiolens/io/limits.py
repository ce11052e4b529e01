"""Decompression-bomb and sanity guards, applied from headers before any pixel buffer is allocated.

A small file can declare a huge image (a PNG of 16384 x 5000 compresses to 0.3 MB; a 1 MB Deflated DICOM can
inflate to 1 GB): every reader checks what the header declares against these bounds first, and inflates
compressed data sets with a cap, so refusing a bomb costs memory in proportion to the file, not to its claim.
Errors are :class:`~radiolens.errors.ImageDimensionError` (an ``InputError``: HTTP 422, CLI exit 2).
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from radiolens.errors import ImageDimensionError

MAX_SIDE = 16384
MAX_FRAMES = 4096
#: Values decoded into one image (rows x columns x samples x frames decoded). 40 M holds a 6000 x 6000 grey
#: radiograph (the largest detectors are about 4300 x 4300; a 4096 x 5625 mammogram is 23 M); decoding one
#: costs about 10 bytes per value at the peak (stored integers, float32 rescale, float32 output).
MAX_PIXELS = 40_000_000
#: Stored pixel data of a whole file (all frames, at its bits per sample), and so the most a data set may
#: inflate to (with MAX_HEADER_BYTES for everything else).
MAX_PIXEL_BYTES = 256 * 1024 * 1024
#: Bytes a file may hold beyond its pixel data (header, overlays, icon images) before it counts as padding.
MAX_HEADER_BYTES = 4 * 1024 * 1024


def check_dimensions(name: str, rows: int, cols: int, frames: int = 1, samples: int = 1, *, bits: int = 8,
                     decoded_frames: int | None = None) -> None:
    """Refuse zero-sized or absurd images before decoding: each side, frames, values decoded (``frames`` or
    ``decoded_frames`` of them) and stored bytes (``bits`` per sample, all frames)."""
    if rows <= 0 or cols <= 0 or frames <= 0 or samples <= 0:
        raise ImageDimensionError(f"{name}: zero-sized image ({rows}x{cols}, {frames} frame(s))")
    if rows > MAX_SIDE or cols > MAX_SIDE or frames > MAX_FRAMES or samples > 4:
        raise ImageDimensionError(f"{name}: absurd dimensions {rows}x{cols}x{frames}x{samples} "
                                  f"(limit {MAX_SIDE} per side, {MAX_FRAMES} frames, 4 samples)")
    decoded = rows * cols * samples * (frames if decoded_frames is None else decoded_frames)
    if decoded > MAX_PIXELS:
        raise ImageDimensionError(f"{name}: image too large ({rows}x{cols}x{samples} per frame, {decoded:,} values "
                                  f"to decode; limit {MAX_PIXELS:,})")
    if stored_pixel_bytes(rows, cols, frames, samples, bits) > MAX_PIXEL_BYTES:
        raise ImageDimensionError(f"{name}: image too large ({rows}x{cols}x{samples}x{frames} at {bits} bits; "
                                  f"limit {MAX_PIXEL_BYTES // 2**20} MiB of pixel data)")


def stored_pixel_bytes(rows: int, cols: int, frames: int = 1, samples: int = 1, bits: int = 8) -> int:
    return rows * cols * frames * samples * max(1, (int(bits) + 7) // 8)


def check_inflated_size(fp: BinaryIO, name: str, limit: int = MAX_PIXEL_BYTES + MAX_HEADER_BYTES) -> None:
    """Raw-deflate data from ``fp``'s position to its end must inflate to at most ``limit`` bytes.

    Inflates in 1 MiB steps and keeps nothing, so checking costs a few MiB whatever the data inflates to
    (zlib's ``max_length``; pydicom inflates the whole data set in one call). ``fp``'s position is restored;
    corrupt data passes (the reader that follows reports it)."""
    start = fp.tell()
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    try:
        while not inflater.eof:
            chunk = fp.read(1 << 20)
            if not chunk:
                break
            while chunk and not inflater.eof:
                total += len(inflater.decompress(chunk, 1 << 20))
                if total > limit:
                    raise ImageDimensionError(f"{name}: deflated data set inflates beyond {limit // 2**20} MiB "
                                              "(decompression bomb?)")
                chunk = inflater.unconsumed_tail
    except zlib.error:
        pass
    finally:
        fp.seek(start)
