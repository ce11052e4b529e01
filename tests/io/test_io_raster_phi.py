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
    assert pil.level == logging.INFO  # set by radiolens.io.raster on import, since nobody chose one
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
        pil.setLevel(logging.INFO)
    assert _logged_phi(caplog), "Pillow no longer logs metadata at DEBUG; this test needs a new probe"
