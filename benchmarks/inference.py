"""End-to-end inference benchmark: files on disk -> probabilities, one table from one run.

Rows per model (resnet18, densenet121 at 224 px by default):
  (a) naive      a typical hand-made loop: PIL / pydicom read, torchvision transforms, eager model, batch 1
  (b) eager      radiolens batch scoring, PyTorch eager backend (batched, decoding in worker processes)
  (b') script    same, TorchScript traced + frozen backend (measured, not assumed, to help)
  (c) onnx-fp32  same, ONNX Runtime fp32
  (d) onnx-int8  same, ONNX Runtime static INT8 (QDQ, calibrated on real validation images)

Columns: end-to-end images/s (radiolens rows include writing the results CSV), model-stage images/s (forward
only on a preloaded batch), single-image end-to-end latency p50/p95 (read + preprocess + forward, batch 1),
peak RSS of the scoring process (and of its decoding workers), GFLOPs per image (counted by
torch.utils.flop_counter.FlopCounterMode; one multiply-add = 2 FLOPs) and the fraction of the FLOP-bound
limit reached: GFLOPs x images/s / peak GFLOP/s, where the peak is MEASURED here as the best of repeated
fp32 2048^3 torch.matmul calls with the same thread count (an honest, achievable-peak GEMM figure rather than
a datasheet number), re-measured inside each row's process alternately with the model-stage timing so both
see the same load on a shared machine. The int8 row is measured against the int8 GEMM peak (torch._int_mm,
same size), since VNNI int8 arithmetic has a several-times higher ceiling than fp32. Peak RSS is the scoring
process's VmHWM; "worker RSS" is the largest decoding worker's (copy-on-write pages shared with the parent included).

Each configuration runs in a fresh subprocess so its peak RSS is its own. Usage (a few minutes on 2 cores):

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/inference.py --images 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = ["naive", "eager", "script", "onnx-fp32", "onnx-int8"]
LABELS = {"naive": "(a) naive loop, batch 1", "eager": "(b) radiolens eager", "script": "(b') radiolens TorchScript",
          "onnx-fp32": "(c) radiolens ORT fp32", "onnx-int8": "(d) radiolens ORT int8"}


# ----------------------------------------------------------------------------------------------- inputs
def build_inputs(data_dir: Path, n: int, dicom_every: int, dest: Path) -> list[Path]:
    """N real files: Kermany validation JPEGs with the real SIIM DICOM (1024 px CR) mixed in every k-th slot."""
    import pandas as pd

    dest.mkdir(parents=True, exist_ok=True)
    kermany = data_dir / "kermany_pediatric_pneumonia"
    frame = pd.read_csv(kermany / "manifest.csv")
    jpegs = [kermany / p for p in frame[frame.split == "val"].path]
    dicom = next((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    files, j = [], 0
    for i in range(n):
        if dicom_every and i % dicom_every == dicom_every - 1:
            link = dest / f"dicom_{i:05d}.dcm"
            src = dicom
        else:
            src = jpegs[j % len(jpegs)]
            link = dest / f"img_{i:05d}{src.suffix}"
            j += 1
        if not link.exists():
            link.symlink_to(src)
        files.append(link)
    return files


def calibration_batch(data_dir: Path, size: int, n: int) -> np.ndarray:
    from radiolens.models.bundle import BundleInfo
    from radiolens.predict.sources import discover, load_preprocessed

    items = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="train")
    step = max(1, len(items) // n)
    info = BundleInfo(arch="resnet18", task="binary", class_names=["pneumonia"], input_size=(size, size))
    return load_preprocessed(items[::step], info, limit=n)[0]


def prepare_models(arch: str, size: int, work: Path, data_dir: Path) -> dict[str, Path]:
    """Bundle (.pt), fp32 ONNX (parity-checked on real images) and int8 ONNX; cached in ``work``."""
    import torch

    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.models.quantize import quantize_onnx
    from radiolens.models.registry import create_model

    paths = {"pt": work / f"{arch}.pt", "fp32": work / f"{arch}.onnx", "int8": work / f"{arch}.int8.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(0)
    # Random weights: throughput does not depend on weight values (accuracy of int8 is measured separately,
    # on a model trained on real data, by `radiolens quantize --eval`).
    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size))
    bundle = ModelBundle(info, create_model(arch, 1))
    bundle.save(paths["pt"])
    cal = calibration_batch(data_dir, size, 32)
    t0 = time.perf_counter()
    rep = export_onnx(ModelBundle.load(paths["pt"]), paths["fp32"], cal[:16])
    print(f"# {arch}: exported in {time.perf_counter() - t0:.0f} s, parity max |dp| = "
          f"{rep.parity.max_abs_diff_prob:.1e}", file=sys.stderr)
    t0 = time.perf_counter()
    quantize_onnx(paths["fp32"], paths["int8"], cal)
    print(f"# {arch}: quantized in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return paths


# ----------------------------------------------------------------------------------------------- measuring
def peak_gflops(threads: int, int8: bool = False, n: int = 2048, repeats: int = 8) -> float:
    """Achievable GEMM peak: best of ``repeats`` n^3 products (fp32 torch.matmul, or int8 torch._int_mm)."""
    import torch

    torch.set_num_threads(threads)
    if int8:
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
        op = torch._int_mm
    else:
        a, b = torch.randn(n, n), torch.randn(n, n)
        op = torch.matmul
    op(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        op(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def peak_rss_mb() -> float:
    """VmHWM of this process. Not ru_maxrss: Linux carries that across exec from the forking parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_gflops(arch: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from radiolens.models.registry import create_model

    model = create_model(arch, 1).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def _backend(config: str, paths: dict[str, str], threads: int):
    from radiolens.models.backends import load_backend

    if config in ("eager", "script"):
        return load_backend(paths["pt"], kind="torch" if config == "eager" else "torchscript", threads=threads)
    return load_backend(paths["fp32" if config == "onnx-fp32" else "int8"], kind="onnx", threads=threads)


def _naive_predict_one(path: Path, model, transform):
    """What a typical notebook does: read with PIL or pydicom, min-max to 8 bits, torchvision, batch of 1."""
    import pydicom
    import torch
    from PIL import Image

    if path.suffix.lower() == ".dcm":
        arr = pydicom.dcmread(str(path)).pixel_array.astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6) * 255.0
        image = Image.fromarray(arr.astype(np.uint8))
    else:
        image = Image.open(path).convert("L")
    with torch.no_grad():
        return torch.sigmoid(model(transform(image)[None])).numpy()


def _interleaved(forward_ips, args: argparse.Namespace, int8: bool = False) -> tuple[float, float]:
    """Best model-stage images/s and best GEMM peak, measured alternately: on a shared machine the load changes
    by the minute, so the FLOP-bound fraction is only meaningful when both are taken under the same load."""
    best_ips = best_peak = 0.0
    for _ in range(args.model_repeats):
        best_ips = max(best_ips, forward_ips())
        best_peak = max(best_peak, peak_gflops(args.threads, int8=int8, repeats=2))
    return best_ips, best_peak


def run_child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    paths = json.loads(args.paths)
    files = [Path(p) for p in json.loads(Path(args.files).read_text())]
    config, result = args.child, {}
    if config == "naive":
        from torchvision import transforms

        from radiolens.models.bundle import ModelBundle

        bundle = ModelBundle.load(paths["pt"])
        model, size = bundle.model.eval(), bundle.info.input_size
        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                 transforms.Normalize([bundle.info.mean], [bundle.info.std])])
        _naive_predict_one(files[0], model, tf)  # warm-up
        t0 = time.perf_counter()
        for f in files:
            _naive_predict_one(f, model, tf)
        result["e2e"] = len(files) / (time.perf_counter() - t0)
        lat = []
        for f in files[: args.latency_runs]:
            t = time.perf_counter()
            _naive_predict_one(f, model, tf)
            lat.append(time.perf_counter() - t)
        x = torch.randn(1, 1, *size)

        def forward_ips() -> float:
            with torch.no_grad():
                t0 = time.perf_counter()
                for _ in range(4):
                    model(x)
            return 4 / (time.perf_counter() - t0)

        with torch.no_grad():
            model(x)
        result["model"], result["peak"] = _interleaved(forward_ips, args)
    else:
        from radiolens.io.reader import read_image
        from radiolens.predict import PredictConfig, Scorer, discover

        backend = _backend(config, paths, args.threads)
        info = backend.info
        items = discover(Path(args.files).parent / "images")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = PredictConfig(batch_size=args.batch_size, workers=args.workers, progress=False)
            Scorer(backend, cfg).run(items[: args.batch_size], Path(tmp) / "warm.csv")  # warm-up, workers included
            summary = Scorer(backend, cfg).run(items, Path(tmp) / "results.csv")
        if summary.errors:
            raise SystemExit(f"{summary.errors} benchmark files failed to decode")
        result["e2e"] = summary.images_per_s
        lat = []
        for f in files[: args.latency_runs]:
            t = time.perf_counter()
            backend.predict_proba(backend.preprocess(read_image(f))[None])
            lat.append(time.perf_counter() - t)
        batch = np.random.default_rng(0).standard_normal((args.batch_size, 1, *info.input_size)).astype(np.float32)
        backend.predict_logits(batch)

        def forward_ips() -> float:
            t0 = time.perf_counter()
            backend.predict_logits(batch)
            return len(batch) / (time.perf_counter() - t0)

        result["model"], result["peak"] = _interleaved(forward_ips, args, int8=config == "onnx-int8")
    result["p50_ms"] = float(np.percentile(lat, 50) * 1000)
    result["p95_ms"] = float(np.percentile(lat, 95) * 1000)
    result["rss_mb"] = peak_rss_mb()
    result["workers_rss_mb"] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                                if config != "naive" else float("nan"))  # the naive loop has no workers
    return result


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="files scored per configuration")
    ap.add_argument("--models", nargs="+", default=["resnet18", "densenet121"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="decoding processes for the radiolens rows")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dicom-every", type=int, default=8, help="every k-th file is the real 1024 px DICOM (0: none)")
    ap.add_argument("--latency-runs", type=int, default=16)
    ap.add_argument("--model-repeats", type=int, default=4, help="alternations of model-stage and GEMM-peak timing")
    ap.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "radiolens-bench",
                    help="cache for exported/quantized models (reused between runs)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--files", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return

    from radiolens.settings import data_dir

    root = data_dir()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    inputs = work / f"inputs_{args.images}_{args.dicom_every}"
    shutil.rmtree(inputs, ignore_errors=True)
    files = build_inputs(root, args.images, args.dicom_every, inputs / "images")
    (inputs / "files.json").write_text(json.dumps([str(f) for f in files]))
    t_start = time.perf_counter()
    peak = peak_gflops(args.threads)
    peak_int8 = peak_gflops(args.threads, int8=True)
    rows = []
    for arch in args.models:
        paths = {k: str(v) for k, v in prepare_models(arch, args.size, work, root).items()}
        gflops = model_gflops(arch, args.size)
        for config in args.configs:
            cmd = [sys.executable, __file__, "--child", config, "--paths", json.dumps(paths),
                   "--files", str(inputs / "files.json"), "--threads", str(args.threads),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                   "--latency-runs", str(args.latency_runs), "--model-repeats", str(args.model_repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{arch}/{config} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(arch=arch, config=config, gflops=gflops,
                     model_frac=gflops * r["model"] / r["peak"], e2e_frac=gflops * r["e2e"] / r["peak"])
            rows.append(r)
            print(f"# {arch} {config}: {r['e2e']:.1f} img/s end to end", file=sys.stderr)
    for arch in args.models:
        naive = next((r for r in rows if r["arch"] == arch and r["config"] == "naive"), None)
        for r in rows:
            if r["arch"] == arch:
                r["vs_naive"] = r["e2e"] / naive["e2e"] if naive else float("nan")
    print_table(rows, peak, peak_int8, args, time.perf_counter() - t_start)
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops": peak, "peak_int8_gops": peak_int8, "rows": rows, "args": {
            k: str(v) for k, v in vars(args).items() if k not in ("child", "paths", "files")}}, indent=2))


def print_table(rows: list[dict], peak: float, peak_int8: float, args: argparse.Namespace, seconds: float) -> None:
    load = os.getloadavg()
    print(f"\nradiolens inference benchmark: {args.images} real files per row (Kermany JPEG 224 px"
          f"{f', every {args.dicom_every}th the SIIM 1024 px DICOM' if args.dicom_every else ''}), {args.size} px, "
          f"{args.threads} threads, {args.workers} decode workers, batch {args.batch_size}; "
          f"{os.cpu_count()} CPUs, load avg {load[0]:.1f} (shared machine)")
    print(f"GEMM peaks at start ({args.threads} threads, best of 8 x 2048^3): fp32 torch.matmul {peak:.1f} GFLOP/s, "
          f"int8 torch._int_mm {peak_int8:.1f} GOP/s; each row's %peak uses the peak re-measured in that row's "
          f"process, alternating with its model-stage timing (column 'peak'); wall time {seconds:.0f} s\n")
    head = (f"| {'model':<11} | {'configuration':<27} | {'e2e img/s':>9} | {'vs (a)':>6} | {'model img/s':>11} | "
            f"{'p50 ms':>7} | {'p95 ms':>7} | {'peak RSS MB':>11} | {'worker RSS':>11} | {'GFLOP/img':>9} | "
            f"{'peak GF/s':>9} | {'model %peak':>11} | {'e2e %peak':>9} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['arch']:<11} | {LABELS[r['config']]:<27} | {r['e2e']:>9.1f} | {r['vs_naive']:>5.2f}x | "
              f"{r['model']:>11.1f} | {r['p50_ms']:>7.1f} | {r['p95_ms']:>7.1f} | {r['rss_mb']:>11.0f} | "
              f"{r['workers_rss_mb']:>11.0f} | {r['gflops']:>9.2f} | {r['peak']:>9.0f} | "
              f"{100 * r['model_frac']:>10.0f}% | {100 * r['e2e_frac']:>8.0f}% |")


if __name__ == "__main__":
    main()
