"""Reading a PNG/JPEG whose metadata carries PHI must not put it in the log, even with DEBUG logging on."""

from __future__ import annotations

import logging

from tests.serve.conftest import PHI
from tests.serve.test_phi import jpeg_with_phi, png_with_phi

from radiolens.io import read_image


def _logged_phi(caplog) -> set[str]:
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    return {key for key, value in PHI.items() if value in text}


def test_raster_metadata_phi_stays_out_of_debug_logs(data_dir, tmp_path, caplog):
    nih = sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))[0]
    kermany = sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))[0]
    files = [tmp_path / "a.png", tmp_path / "b.jpg"]
    files[0].write_bytes(png_with_phi(nih))
    files[1].write_bytes(jpeg_with_phi(kermany))

    pil = logging.getLogger("PIL")
    # INFO is set by radiolens.io.raster on import when nobody chose a level; the service (serve.runtime.ingest)
    # raises it to CRITICAL when it starts, so after other tests in the same process it may be higher
    before = pil.level
    assert before >= logging.INFO
    caplog.set_level(logging.DEBUG)  # the root logger: what "turn on debug logging" does
    for path in files:
        assert read_image(path).pixels.size > 0
    assert _logged_phi(caplog) == set()

    # The check has teeth: with Pillow's own DEBUG output let through, the same reads do log planted PHI.
    caplog.clear()
    pil.setLevel(logging.DEBUG)
    try:
        for path in files:
            read_image(path)
    finally:
        pil.setLevel(before)
    assert _logged_phi(caplog), "Pillow no longer logs metadata at DEBUG; this test needs a new probe"


def test_raster_bytes_decode_like_files_without_touching_disk(data_dir, tmp_path, monkeypatch):
    """``read_raster_bytes`` (what the service uses for uploads) gives the file reader's image, from memory."""
    import builtins

    import numpy as np
    import pytest
    import tifffile

    from radiolens.errors import ImageDimensionError, UnreadableImageError
    from radiolens.io.raster import read_raster, read_raster_bytes

    files = [sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))[0],
             sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "PNEUMONIA").glob("*.jpeg"))[0],
             sorted((data_dir / "covid_figure1").rglob("*.jpg"))[0]]
    tiff = tmp_path / "x.tif"
    tifffile.imwrite(tiff, (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 13))
    files.append(tiff)
    blobs = [(f, f.read_bytes()) for f in files]

    real_open = builtins.open

    def no_writes(file, mode="r", *args, **kwargs):  # reading (e.g. library data files) is fine
        assert not any(c in mode for c in "wax+"), f"read_raster_bytes opened {file} for writing"
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_writes)
    for path, data in blobs:
        want, got = read_raster(path), read_raster_bytes(data)
        assert np.array_equal(want.pixels, got.pixels), path.name
        assert got.meta.source_format == want.meta.source_format
        assert got.meta.extra.get("chroma") == want.meta.extra.get("chroma")
    monkeypatch.undo()

    png = blobs[0][1]
    for bad in (b"", b"hello world", png[: len(png) // 4]):
        with pytest.raises(UnreadableImageError, match="^upload: ") as err:
            read_raster_bytes(bad)
        assert str(tmp_path) not in str(err.value)
    import io
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    bomb = bytearray(buf.getvalue())
    bomb[16:24] = (70000).to_bytes(4, "big") * 2  # IHDR claims 70000 x 70000 pixels
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")  # with a valid chunk checksum
    with pytest.raises(ImageDimensionError, match="^upload: "):
        read_raster_bytes(bytes(bomb))
