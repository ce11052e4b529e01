"""End-to-end inference benchmark: files on disk -> probabilities, one table from one run.

Rows per model (resnet18, densenet121 at 224 px by default):
  (a)   naive      the seeds' hand-made loop: PIL / pydicom read, torchvision transforms, eager model, batch 1
  (a')  naive-rl   the same loop, but decoding + preprocessing exactly as radiolens does (radiolens.io +
                   the bundle's preprocess): isolates what the pipeline (workers, batching) adds
  (b)   eager      radiolens batch scoring (the real Scorer), PyTorch eager backend
  (b')  script     same, TorchScript traced + frozen backend (measured, not assumed, to help)
  (b'') compile    same, torch.compile (Inductor) of the eager model; opt-in (--configs ... compile): its
                   compile takes minutes on 2 cores
  (c)   onnx-fp32  same, ONNX Runtime fp32
  (d)   onnx-int8  same, ONNX Runtime static INT8 (QDQ, calibrated on real validation images)

Every row scores the same files in the same order (Kermany validation JPEGs with a real 1024 px SIIM DICOM
every k-th slot). The radiolens rows run with `radiolens predict`'s defaults (on <= 2 cores: no decoding
workers, each batch decoded in the main process between forward passes on all cores; above: `--workers`
processes and `cores - workers` inference threads); the naive loops have no workers and use all cores, as a
notebook would. End to end is the best of `--e2e-repeats` passes over the files, for every row alike.
Model stage (forward only, preloaded batch of 32; batch 1 for the naive loops) and single-image
latency (read + preprocess + forward, batch 1, after 2 warm-up calls) use all cores; "p50 1 thr" repeats the
latency on one thread, which a busy second core cannot stall (on this shared 2-core machine a 2-thread OpenMP
region waits for a preempted thread's next time slice: measured 20-40 ms per tiny conv instead of 0.05 ms).

FLOP-bound limit: GFLOPs per image (torch.utils.flop_counter.FlopCounterMode; one multiply-add = 2 FLOPs)
x images/s over the machine's peak. Two peaks are printed:
  * measured: the best of many 2048^3 fp32 GEMMs, in torch.matmul (MKL) and in ONNX Runtime's MatMul (MLAS;
    MKL takes its AVX2 path on AMD CPUs, so torch alone understates the machine), and of a large 3x3 ORT
    convolution (faster still than ORT's MatMul here), int8 torch._int_mm for the
    int8 row, sampled before, between and after the rows in the parent process (no benchmark child running) -
    the uncontended achievable GEMM rate; the %peak columns use it. (Re-measuring it alongside each row, as an
    earlier version did, let a momentarily contended GEMM produce fractions above 100 %.)
  * theoretical: cores x GHz (/proc/cpuinfo "cpu MHz") x FLOPs per cycle from the CPU flags (vector lanes of
    avx512f/avx2 x 2 FMA units x 2; int8: x4 with VNNI). The FMA unit count is not in the flags: 2 is assumed
    (true for current Xeon / EPYC server cores). The VM reports only the nominal clock, and the cores boost
    above it (the measured peak can exceed this figure), so it is shown for scale only.

Peak RSS is the scoring process's VmHWM at the end of the end-to-end pass; "worker RSS" is the largest decoding
worker's (copy-on-write pages shared with the parent included). Each configuration runs in a fresh subprocess.
Usage (several minutes on 2 cores; run it on an otherwise idle machine, and quote the load average):

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/inference.py
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

CONFIGS = ["naive", "naive-rl", "eager", "script", "compile", "onnx-fp32", "onnx-int8"]
DEFAULT_CONFIGS = ["naive", "naive-rl", "eager", "script", "onnx-fp32", "onnx-int8"]
LABELS = {"naive": "(a) naive loop, batch 1", "naive-rl": "(a') naive, radiolens decode",
          "eager": "(b) radiolens eager", "script": "(b') radiolens TorchScript",
          "compile": "(b'') radiolens torch.compile", "onnx-fp32": "(c) radiolens ORT fp32",
          "onnx-int8": "(d) radiolens ORT int8"}


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
    """Best of ``repeats`` n^3 products (fp32 torch.matmul, or int8 torch._int_mm), GFLOP/s (GOP/s for int8)."""
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


def ort_matmul_gflops(threads: int, n: int = 2048, repeats: int = 8) -> float:
    """Best of ``repeats`` n^3 fp32 products in ONNX Runtime (its MLAS GEMM, the kernels the ORT rows run).

    Needed next to torch.matmul because PyTorch's BLAS is Intel MKL, which takes its AVX2 path on AMD CPUs:
    on this EPYC torch.matmul peaks near 100 GFLOP/s while ONNX Runtime's convolutions ran faster than that,
    so a torch-only "peak" is not the machine's achievable limit.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(b, "B")])
    return 2 * n**3 / _ort_best_seconds(graph, {"A": a}, threads, repeats) / 1e9


def ort_conv_gflops(threads: int, repeats: int = 4) -> float:
    """Best of ``repeats`` 3x3 convolutions, 256 -> 256 channels at 28x28, batch 32, in ONNX Runtime (MLAS).

    A second "achievable peak" probe: a large, regular convolution of the kind the models run (on this EPYC
    it ran faster than ORT's 2048^3 MatMul: 238 vs 189 GFLOP/s), so the %peak denominator is not understated.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 256, 28, 28), dtype=np.float32)
    w = rng.standard_normal((256, 256, 3, 3), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W")])
    return 2 * 32 * 256 * 256 * 9 * 28 * 28 / _ort_best_seconds(graph, {"X": x}, threads, repeats) / 1e9


def _ort_best_seconds(graph, feeds: dict, threads: int, repeats: int) -> float:
    """Best wall time of ``repeats`` runs of a one-node ONNX graph (after one warm-up run)."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return best


def theoretical_peak(cores: int) -> dict:
    """Datasheet-style peak from /proc/cpuinfo: cores x GHz x (vector lanes x FMA units x 2) per cycle.

    The FMA unit count per core is not exposed by the flags; 2 is assumed (Xeon since Skylake-SP, EPYC Zen 5).
    AMD Zen 4 (family 25) executes 512-bit FMAs as two 256-bit halves, so it counts as 8 lanes there.
    """
    info: dict = {"source": "/proc/cpuinfo", "fma_units_assumed": 2}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {**info, "gflops_fp32": float("nan"), "gops_int8": float("nan")}
    first = text.split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in first.splitlines() if ":" in ln)}
    flags = set(fields.get("flags", "").split())
    ghz = float(fields.get("cpu MHz", "nan")) / 1000
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    if fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25" and lanes == 16:
        lanes = 8
    flops_per_cycle = lanes * info["fma_units_assumed"] * 2
    vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
    info.update(model=fields.get("model name", "?"), cpu_family=fields.get("cpu family", "?"), ghz=ghz,
                cores=cores, fp32_lanes=lanes, fp32_flops_per_cycle=flops_per_cycle, vnni=vnni,
                gflops_fp32=cores * ghz * flops_per_cycle,
                gops_int8=cores * ghz * flops_per_cycle * (4 if vnni else 2))
    return info


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


def onnx_parity(paths: dict[str, str], files: list[Path], n: int = 32) -> dict:
    """max |dp| / |dlogit| between PyTorch and ONNX Runtime fp32 on the benchmark's real files (DICOM included)."""
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.export import check_parity
    from radiolens.predict.sources import ScoreItem, load_preprocessed

    bundle = ModelBundle.load(paths["pt"])
    batch, used = load_preprocessed([ScoreItem(f.name, f) for f in files[:n]], bundle.info)
    rep = check_parity(bundle, paths["fp32"], batch, raise_on_fail=False)
    return {"n_images": rep.n_images, "n_dicom": sum(it.path.suffix == ".dcm" for it in used),
            "max_abs_dp": rep.max_abs_diff_prob, "max_abs_dlogit": rep.max_abs_diff_logit}


def _backend(config: str, paths: dict[str, str], threads: int):
    import torch

    from radiolens.models.backends import load_backend

    if config in ("eager", "script", "compile"):
        backend = load_backend(paths["pt"], kind="torchscript" if config == "script" else "torch", threads=threads)
        if config == "compile":
            backend.model = torch.compile(backend.model, dynamic=True)
        return backend
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


def _naive_rl_predict_one(path: Path, model, info):
    """The same batch-1 eager loop, but decoded + preprocessed exactly as the radiolens rows are."""
    import torch

    from radiolens.io.formats import read_image
    from radiolens.models.backends import preprocess

    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(preprocess(info, read_image(path))[None]))).numpy()


def _latency(fn, files: list[Path], runs: int) -> list[float]:
    for f in files[:2]:  # warm-up: batch-1 primitives / kernels are created on first use
        fn(f)
    lat = []
    for f in files[:runs]:
        t = time.perf_counter()
        fn(f)
        lat.append(time.perf_counter() - t)
    return lat


def run_child(args: argparse.Namespace) -> dict:
    import torch

    paths = json.loads(args.paths)
    items_dir = Path(args.files).parent / "images"
    config, result = args.child, {}
    from radiolens.predict import PredictConfig, Scorer, discover

    items = discover(items_dir)
    files = [it.path for it in items]  # every row: the same files, in the same order
    result["n_files"] = len(files)
    if config in ("naive", "naive-rl"):
        from torchvision import transforms

        from radiolens.models.bundle import ModelBundle

        torch.set_num_threads(args.threads)
        bundle = ModelBundle.load(paths["pt"])
        model, size, info = bundle.model.eval(), bundle.info.input_size, bundle.info
        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                 transforms.Normalize([info.mean], [info.std])])
        if config == "naive":
            def one(f):
                return _naive_predict_one(f, model, tf)
        else:
            def one(f):
                return _naive_rl_predict_one(f, model, info)
        for f in files[:4]:  # warm-up, as the radiolens rows get one batch
            one(f)
        passes = []
        for _ in range(args.e2e_repeats):
            t0 = time.perf_counter()
            for f in files:
                one(f)
            passes.append(len(files) / (time.perf_counter() - t0))
        result["e2e"], result["e2e_passes"] = max(passes), passes
        result["rss_mb"] = peak_rss_mb()
        result["infer_threads"] = args.threads
        lat = _latency(one, files, args.latency_runs)
        torch.set_num_threads(1)  # a second latency pass on one thread: immune to a busy second core
        lat1 = _latency(one, files, args.latency_runs)
        torch.set_num_threads(args.threads)
        x = torch.randn(1, 1, *size)

        def forward_ips() -> float:
            with torch.no_grad():
                t0 = time.perf_counter()
                for _ in range(8):
                    model(x)
            return 8 / (time.perf_counter() - t0)

        with torch.no_grad():
            model(x)
        result["model"] = max(forward_ips() for _ in range(args.model_repeats))
        result["workers_rss_mb"] = float("nan")  # no workers
    else:
        from radiolens.io.formats import read_image
        from radiolens.predict.config import default_inference_threads

        infer_threads = args.infer_threads or default_inference_threads(args.workers)
        result["infer_threads"] = infer_threads
        torch.set_num_threads(infer_threads)
        backend = _backend(config, paths, infer_threads)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = PredictConfig(batch_size=args.batch_size, workers=args.workers, progress=False)
            t0 = time.perf_counter()
            Scorer(backend, cfg).run(items[: args.batch_size], Path(tmp) / "warm.csv")  # warm-up, workers included
            result["warmup_s"] = time.perf_counter() - t0
            passes = []
            for k in range(args.e2e_repeats):  # a fresh output each pass: a resumed one would score nothing
                summary = Scorer(backend, cfg).run(items, Path(tmp) / f"results{k}.csv")
                if summary.errors or summary.scored != len(items):
                    raise SystemExit(f"{summary.errors} benchmark files failed to decode")
                passes.append(summary.images_per_s)
        result["e2e"], result["e2e_passes"] = max(passes), passes
        result["rss_mb"] = peak_rss_mb()
        result["workers_rss_mb"] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if args.workers
                                    else float("nan"))  # no workers: decoded in this process
        # single-image latency and model stage on all cores (no decoding workers competing)
        torch.set_num_threads(args.threads)
        if config.startswith("onnx"):
            backend = _backend(config, paths, args.threads)
        info = backend.info
        lat = _latency(lambda f: backend.predict_proba(backend.preprocess(read_image(f))[None]), files,
                       args.latency_runs)
        torch.set_num_threads(1)  # a second latency pass on one thread: immune to a busy second core
        one_thread = _backend(config, paths, 1) if config.startswith("onnx") else backend
        lat1 = _latency(lambda f: one_thread.predict_proba(one_thread.preprocess(read_image(f))[None]), files,
                        args.latency_runs)
        torch.set_num_threads(args.threads)
        batch = np.random.default_rng(0).standard_normal((args.batch_size, 1, *info.input_size)).astype(np.float32)
        backend.predict_logits(batch)

        def forward_ips() -> float:
            t0 = time.perf_counter()
            backend.predict_logits(batch)
            return len(batch) / (time.perf_counter() - t0)

        result["model"] = max(forward_ips() for _ in range(args.model_repeats))
    result["p50_ms"] = float(np.percentile(lat, 50) * 1000)
    result["p95_ms"] = float(np.percentile(lat, 95) * 1000)
    result["p50_1t_ms"] = float(np.percentile(lat1, 50) * 1000)
    return result


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192,
                    help="files scored per configuration (enough that the pipeline's fill/drain is amortised)")
    ap.add_argument("--models", nargs="+", default=["resnet18", "densenet121"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads of the naive loops, the model stage, latency and the GEMM peak (default: all cores)")
    ap.add_argument("--infer-threads", type=int, default=None,
                    help="inference threads of the radiolens end-to-end rows (default: radiolens predict's, "
                         "cores - workers, >= 1)")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: radiolens predict's)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dicom-every", type=int, default=8, help="every k-th file is the real 1024 px DICOM (0: none)")
    ap.add_argument("--e2e-repeats", type=int, default=3,
                    help="end-to-end passes over the files per row; the best is reported (every row alike)")
    ap.add_argument("--latency-runs", type=int, default=16)
    ap.add_argument("--model-repeats", type=int, default=4, help="model-stage timings per row (best is kept)")
    ap.add_argument("--peak-repeats", type=int, default=6, help="GEMMs per peak sample (one sample per row)")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=CONFIGS)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "radiolens-bench",
                    help="cache for exported/quantized models (reused between runs)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--files", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.defaults = args.workers is None and args.infer_threads is None
    if args.workers is None:
        from radiolens.predict import PredictConfig

        args.workers = PredictConfig().workers
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
    samples: dict[str, list[float]] = {"fp32_torch": [], "fp32_ort": [], "fp32_ort_conv": [], "int8": []}

    def sample_peaks() -> None:  # in the parent, with no benchmark child running
        samples["fp32_torch"].append(peak_gflops(args.threads, repeats=args.peak_repeats))
        samples["fp32_ort"].append(ort_matmul_gflops(args.threads, repeats=args.peak_repeats))
        samples["fp32_ort_conv"].append(ort_conv_gflops(args.threads, repeats=max(2, args.peak_repeats // 2)))
        samples["int8"].append(peak_gflops(args.threads, int8=True, repeats=args.peak_repeats))

    sample_peaks()
    rows, parity = [], {}
    for arch in args.models:
        paths = {k: str(v) for k, v in prepare_models(arch, args.size, work, root).items()}
        distinct = list({f.resolve(): f for f in files}.values())  # the DICOM slots are links to one file
        parity[arch] = onnx_parity(paths, distinct)
        print(f"# {arch}: ONNX parity on {parity[arch]['n_images']} real images: max |dp| = "
              f"{parity[arch]['max_abs_dp']:.2e}", file=sys.stderr)
        gflops = model_gflops(arch, args.size)
        for config in args.configs:
            cmd = [sys.executable, __file__, "--child", config, "--paths", json.dumps(paths),
                   "--files", str(inputs / "files.json"), "--threads", str(args.threads),
                   "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                   "--latency-runs", str(args.latency_runs), "--model-repeats", str(args.model_repeats),
                   "--e2e-repeats", str(args.e2e_repeats)]
            if args.infer_threads:
                cmd += ["--infer-threads", str(args.infer_threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{arch}/{config} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(arch=arch, config=config, gflops=gflops)
            rows.append(r)
            print(f"# {arch} {config}: {r['e2e']:.1f} img/s end to end", file=sys.stderr)
            sample_peaks()
    peak = max(samples["fp32_torch"] + samples["fp32_ort"] + samples["fp32_ort_conv"])
    peak_int8 = max(samples["int8"])
    theory = theoretical_peak(args.threads)
    for r in rows:
        ref = peak_int8 if r["config"] == "onnx-int8" else peak
        r.update(model_frac=r["gflops"] * r["model"] / ref, e2e_frac=r["gflops"] * r["e2e"] / ref)
    for arch in args.models:
        for base in ("naive", "naive-rl"):
            ref_row = next((r for r in rows if r["arch"] == arch and r["config"] == base), None)
            for r in rows:
                if r["arch"] == arch:
                    r[f"vs_{base}"] = r["e2e"] / ref_row["e2e"] if ref_row else float("nan")
    print_table(rows, peak, peak_int8, samples, theory, parity, args, time.perf_counter() - t_start)
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops": peak, "peak_int8_gops": peak_int8, "peak_samples": samples,
                                         "theoretical": theory, "onnx_parity": parity, "rows": rows, "args": {
            k: str(v) for k, v in vars(args).items() if k not in ("child", "paths", "files")}}, indent=2, default=str))


def print_table(rows: list[dict], peak: float, peak_int8: float, samples: dict, theory: dict, parity: dict,
                args: argparse.Namespace, seconds: float) -> None:
    load = os.getloadavg()
    infer = next((r["infer_threads"] for r in rows if not r["config"].startswith("naive")), "?")
    print(f"\nradiolens inference benchmark: the same {args.images} real files per row (Kermany JPEG"
          f"{f', every {args.dicom_every}th the SIIM 1024 px DICOM' if args.dicom_every else ''}), {args.size} px; "
          f"radiolens rows: {args.workers} decode workers + {infer} inference thread(s)"
          f"{'' if args.defaults else ' (NOT predict defaults)'}, "
          f"batch {args.batch_size}; naive loops, model stage, latency: {args.threads} threads; e2e: best of "
          f"{args.e2e_repeats} passes; "
          f"{os.cpu_count()} CPUs, load avg {load[0]:.1f} at the end; wall time {seconds:.0f} s")
    t, o, c, i8 = samples["fp32_torch"], samples["fp32_ort"], samples["fp32_ort_conv"], samples["int8"]
    print(f"Measured peak (denominator of %peak): best of {len(t)} samples taken between rows with no row running, "
          f"{args.threads} threads: fp32 {peak:.1f} GFLOP/s = the best of 2048^3 torch.matmul/MKL (samples "
          f"{min(t):.0f}-{max(t):.0f}), 2048^3 ONNX Runtime MatMul/MLAS ({min(o):.0f}-{max(o):.0f}) and an ORT 3x3 "
          f"256-channel Conv ({min(c):.0f}-{max(c):.0f}); int8 2048^3 torch._int_mm {peak_int8:.1f} GOP/s "
          f"({min(i8):.0f}-{max(i8):.0f})")
    print(f"Theoretical peak ({theory.get('model', '?')}, family {theory.get('cpu_family', '?')}): "
          f"{theory.get('cores')} cores x {theory.get('ghz', float('nan')):.2f} GHz x "
          f"{theory.get('fp32_flops_per_cycle')} fp32 FLOP/cycle ({theory.get('fp32_lanes')} lanes x "
          f"{theory['fma_units_assumed']} FMA units assumed x 2) = {theory['gflops_fp32']:.0f} GFLOP/s; int8 "
          f"{'VNNI ' if theory.get('vnni') else ''}{theory['gops_int8']:.0f} GOP/s. The GHz is the nominal clock "
          f"the VM reports (the measured fp32 peak corresponds to "
          f"{peak / (theory.get('cores') or 1) / (theory.get('fp32_flops_per_cycle') or 1):.2f} GHz at that rate); "
          "for scale only, not used as a denominator")
    print("ONNX fp32 parity vs PyTorch on real images: " + "; ".join(
        f"{a} max |dp| = {v['max_abs_dp']:.1e} (|dlogit| {v['max_abs_dlogit']:.1e}, {v['n_images']} images, "
        f"{v['n_dicom']} DICOM)" for a, v in parity.items()) + "\n")
    head = (f"| {'model':<11} | {'configuration':<29} | {'e2e img/s':>9} | {'vs (a)':>6} | {'vs (a_)':>7} | "
            f"{'model img/s':>11} | {'p50 ms':>7} | {'p95 ms':>7} | {'p50 1 thr':>9} | {'peak RSS MB':>11} | "
            f"{'worker RSS':>10} | "
            f"{'GFLOP/img':>9} | {'model %peak':>11} | {'e2e %peak':>9} |")
    print(head.replace("(a_)", "(a')"))
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['arch']:<11} | {LABELS[r['config']]:<29} | {r['e2e']:>9.1f} | {r['vs_naive']:>5.2f}x | "
              f"{r['vs_naive-rl']:>6.2f}x | {r['model']:>11.1f} | {r['p50_ms']:>7.1f} | {r['p95_ms']:>7.1f} | "
              f"{r['p50_1t_ms']:>9.1f} | "
              f"{r['rss_mb']:>11.0f} | {r['workers_rss_mb']:>10.0f} | {r['gflops']:>9.2f} | "
              f"{100 * r['model_frac']:>10.0f}% | {100 * r['e2e_frac']:>8.0f}% |")
    over = [f"{r['arch']} {r['config']}" for r in rows if r["model_frac"] > 1]
    if over:  # cannot happen against a true peak: say so instead of printing it as a result
        print(f"\nWARNING: model stage above the measured GEMM peak for {', '.join(over)}: every peak sample was "
              "taken under more contention than those rows; rerun on a quieter machine.")


if __name__ == "__main__":
    main()
