"""ONNX fp32 parity of the inference benchmark's models on distinct real images of three sources.

The export gate already checks parity on the images it is given; this reports it for the benchmark's
224 px resnet18 / densenet121 files (made by ``benchmarks/inference.py`` in its ``--work-dir``) on 48 Kermany
validation JPEGs, the SIIM DICOM and 16 NIH PNGs, so the number covers every decoder path:

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/onnx_parity.py --work-dir /tmp/radiolens-bench
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radiolens.models.bundle import ModelBundle
from radiolens.models.export import check_parity
from radiolens.predict.sources import ScoreItem, discover, load_preprocessed
from radiolens.settings import data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, required=True, help="where benchmarks/inference.py cached its models")
    ap.add_argument("--models", nargs="+", default=["resnet18", "densenet121"])
    args = ap.parse_args()
    d = data_dir()
    items = discover(d / "kermany_pediatric_pneumonia" / "manifest.csv", split="val")[::10][:48]
    items += [ScoreItem(p.name, p) for p in sorted((d / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))]
    items += discover(d / "nih_chestxray14" / "manifest.csv")[:16]
    for arch in args.models:
        bundle = ModelBundle.load(args.work_dir / f"{arch}.pt")
        x, used = load_preprocessed(items, bundle.info)
        r = check_parity(bundle, args.work_dir / f"{arch}.onnx", x, raise_on_fail=False)
        n_dicom = sum(u.path.suffix == ".dcm" for u in used)
        print(f"{arch} {bundle.info.input_size[0]} px: {r.n_images} distinct real images ({n_dicom} DICOM): "
              f"max |dp| = {r.max_abs_diff_prob:.2e}, max |dlogit| = {r.max_abs_diff_logit:.2e}")


if __name__ == "__main__":
    main()
