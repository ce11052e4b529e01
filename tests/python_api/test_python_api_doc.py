"""docs/python-api.md is executable: every ```python block runs, in order, in one namespace, on a small model
trained on real Kermany images (the .pt bundle and its ONNX export) and the real data folder, with the
environment variables the page documents. Its ``assert`` lines are this test's checks; a block that raises fails
it, naming the block."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.realdata


def _blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_page_has_the_promised_examples():
    code = "\n".join(_blocks())
    for call in ("radiolens.load_model(", "pydicom.dcmread(", "model.predict(pixels", "model.predict_batch(",
                 "model.explain(", ".overlay()", "model.explain_batch(", 'get_testdata_file("CT_small.dcm")'):
        assert call in code, call


@pytest.mark.parametrize("kind", ["pt", "onnx"])
def test_every_example_runs(kind, api_model_files, data_dir, monkeypatch, capsys):
    matplotlib.use("Agg")
    model = api_model_files[0] if kind == "pt" else api_model_files[1]
    chest = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[0]
    monkeypatch.setenv("RADIOLENS_MODEL", str(model))
    monkeypatch.setenv("CHEST_IMAGE", str(chest))
    monkeypatch.setenv("RADIOLENS_DATA_DIR", str(data_dir))
    namespace: dict = {"__name__": "python_api_doc"}
    blocks = _blocks()
    assert len(blocks) >= 7
    for i, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{DOC.name} block {i}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"{DOC.name} python block {i} raised {type(exc).__name__}: {exc}\n{block}")
    # what the page printed is what it says it prints
    printed = capsys.readouterr().out
    assert "bad_pixel_range" in printed and "bad_dimensions" in printed and "unreadable_image" in printed
    assert "status='out_of_distribution'" in printed and "gate=refused (modality CT" in printed
    assert f"@{'torch' if kind == 'pt' else 'onnx'}" in printed
    assert namespace["table"].shape[0] == 6 and (namespace["out"] / "overlay.png").stat().st_size > 0
