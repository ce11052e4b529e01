"""Scale-out benchmark: Ray scoring (`radiolens predict --engine ray`) with 1 and 2 inference actors against
local scoring, on the same files in the same run, plus the per-image costs a projection to many nodes needs.

Rows:
  local        `Scorer.run` as `radiolens predict` runs it by default here (no decoding workers on <= 2 cores,
               inference threads = cores)
  ray 1 actor  a local Ray cluster (num_cpus = cores): decoding on CPU tasks, 1 inference actor (1 thread)
  ray 2 actors the same with 2 actors (each 1 thread; on 2 cores the actors and decoding tasks reserve fractional
               CPUs so that all of them fit)

Throughput is end to end as the command sees it: files on disk -> merged Parquet results, including the driver
loading the model and, for Ray, starting the actors (the cluster itself is started once, before the rows, and its
start-up time is printed separately). Each row also scores the first 16 files alone: the difference of the two
runs gives the fixed cost of a run (model loading, actor start-up, merging) and the marginal rate, which is what
a run over a million files approaches. Per-image costs (one core, one thread): decode + prepare
(`predict.dataset.ImageItems`, i.e. `io.formats.read_image` + `pipeline.prepare`) per file type, and the model
stage (`Scorer.score_batch`: forward pass, gate, decision, row) per image at batch 32.

The projection for 1 million images divides the work by the cores of N nodes:
  CPU only:  images/s per node = cores / (decode + model stage), times the Ray efficiency measured here
             (2-actor images/s over the ideal for 2 cores);
  with GPUs: the model stage leaves the CPUs, so images/s per node = cores / decode (an upper bound: it holds only
             while the GPU keeps up; the GPU's own rate is not measured here).

Usage (a few minutes on 2 cores; quote the load average printed with the table):

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/scale.py [--n 192] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference import build_inputs  # noqa: E402  (the same real inputs as the inference benchmark)


def prepare_model(arch: str, size: int, work: Path, data_dir: Path) -> Path:
    """A random-weight ``arch`` bundle exported to ONNX fp32 (throughput does not depend on weight values)."""
    import torch
    from inference import calibration_batch

    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.models.registry import create_model

    onnx = work / f"{arch}.onnx"
    if onnx.exists():
        return onnx
    torch.manual_seed(0)
    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size))
    ModelBundle(info, create_model(arch, 1)).save(work / f"{arch}.pt")
    export_onnx(ModelBundle.load(work / f"{arch}.pt"), onnx, calibration_batch(data_dir, size, 16))
    return onnx


def per_image_costs(model: Path, files: list[Path], batch: int = 32) -> dict:
    """Seconds per image on one thread: decode + prepare per file type, and the model stage at ``batch``."""
    from radiolens.predict import PredictConfig
    from radiolens.predict.dataset import ImageItems
    from radiolens.predict.sources import ScoreItem
    from radiolens.predict.spec import ScorerSpec

    scorer = ScorerSpec(model, PredictConfig(workers=0, progress=False), threads=1).build()
    items = ImageItems([ScoreItem(f.name, f) for f in files], scorer.info)
    by_kind: dict[str, list[float]] = {"jpeg": [], "dicom": []}
    records = []
    for i in range(len(items)):
        t0 = time.perf_counter()
        records.append(items[i])
        by_kind["dicom" if files[i].suffix == ".dcm" else "jpeg"].append(time.perf_counter() - t0)
    keys = [f.name for f in files]
    scorer.score_batch(keys, records[:batch])  # warm-up
    t0 = time.perf_counter()
    done = 0
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        scorer.score_batch(keys, chunk)
        done += len(chunk)
    model_s = (time.perf_counter() - t0) / done
    decode_all = by_kind["jpeg"] + by_kind["dicom"]
    return {"decode_s_mean": statistics.fmean(decode_all), "decode_s_jpeg": statistics.median(by_kind["jpeg"]),
            "decode_s_dicom": statistics.median(by_kind["dicom"]) if by_kind["dicom"] else None,
            "model_stage_s": model_s, "batch": batch}


def run_local(model: Path, root: Path, out: Path, cores: int) -> tuple[float, int]:
    from radiolens.predict import PredictConfig, discover
    from radiolens.predict.config import default_inference_threads
    from radiolens.predict.spec import ScorerSpec

    cfg = PredictConfig(batch_size=32, progress=False, overwrite=True)
    spec = ScorerSpec(model, cfg, threads=default_inference_threads(cfg.workers))
    t0 = time.perf_counter()
    summary = spec.build().run(discover(root), out)
    return time.perf_counter() - t0, summary.scored + summary.errors + summary.not_assessed


def run_ray(model: Path, root: Path, out: Path, actors: int, cores: int) -> tuple[float, int]:
    from radiolens.predict import PredictConfig, discover
    from radiolens.predict.ray_engine import RayOptions, score_with_ray
    from radiolens.predict.spec import ScorerSpec

    # Every actor and one decoding task must fit in the cores at once, or Ray Data waits for CPUs that never free.
    share = min(1.0, cores / (actors + 1))
    options = RayOptions(num_actors=actors, cpus_per_actor=share, cpus_per_decode_task=share)
    spec = ScorerSpec(model, PredictConfig(batch_size=32, progress=False, overwrite=True))
    t0 = time.perf_counter()
    summary = score_with_ray(spec, discover(root), out, options)
    return time.perf_counter() - t0, summary.scored + summary.errors + summary.not_assessed


def rates(run, small: Path, full: Path, out: Path) -> dict:
    """End-to-end images/s over ``full``; fixed seconds and marginal images/s from the ``small`` run beside it."""
    t_small, n_small = run(small, out)
    t_full, n_full = run(full, out)
    marginal = (n_full - n_small) / max(t_full - t_small, 1e-9)
    return {"images_per_s": n_full / t_full, "seconds": t_full, "marginal_images_per_s": marginal,
            "fixed_s": max(0.0, t_small - n_small / marginal)}


def projection(costs: dict, efficiency: float, images: int = 1_000_000, cores_per_node: int = 16,
               nodes: tuple[int, ...] = (1, 4, 16, 64)) -> list[dict]:
    cpu_rate = cores_per_node / (costs["decode_s_mean"] + costs["model_stage_s"]) * efficiency
    gpu_bound = cores_per_node / costs["decode_s_mean"] * efficiency
    return [{"nodes": n, "cores_per_node": cores_per_node, "cpu_only_images_per_s": n * cpu_rate,
             "cpu_only_hours": images / (n * cpu_rate) / 3600, "gpu_images_per_s_upper": n * gpu_bound,
             "gpu_hours_lower": images / (n * gpu_bound) / 3600} for n in nodes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=192, help="files to score (Kermany JPEGs, every 8th the SIIM DICOM)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cores-per-node", type=int, default=16, help="for the projection")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from radiolens.settings import data_dir

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="radiolens-scale-"))
    root = work / "in"
    build_inputs(data_dir(), args.n, 8, root)
    model = prepare_model(args.arch, args.size, work, data_dir())
    files = sorted(root.iterdir())
    small = work / "small"
    small.mkdir()
    for f in files[:16]:
        (small / f.name).symlink_to(f.resolve())
    costs = per_image_costs(model, files)
    out = work / "out.parquet"
    local = rates(lambda src, o: run_local(model, src, o, cores), small, root, out)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    ray_start_s = time.perf_counter() - t0
    try:
        ray1 = rates(lambda src, o: run_ray(model, src, o, 1, cores), small, root, out)
        ray2 = rates(lambda src, o: run_ray(model, src, o, 2, cores), small, root, out)
    finally:
        ray.shutdown()
    ideal = min(2, cores) / (costs["decode_s_mean"] + costs["model_stage_s"])
    rays = {"ray_1_actor": ray1, "ray_2_actors": ray2}
    efficiency = ray2["marginal_images_per_s"] / ideal  # of the 2 cores' ideal rate from the per-image costs
    result = {
        "machine": {"cores": cores, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "arch": args.arch, "size": args.size, "files": len(files)},
        "per_image": costs,
        "runs": {"local": local, "ray_1_actor": ray1, "ray_2_actors": ray2},
        "ratios_end_to_end": {k: r["images_per_s"] / local["images_per_s"] for k, r in rays.items()},
        "ratios_marginal": {k: r["marginal_images_per_s"] / local["marginal_images_per_s"] for k, r in rays.items()},
        "ray_cluster_start_s": ray_start_s,
        "ray_efficiency_2_actors": efficiency,
        "projection_1M": projection(costs, min(1.0, efficiency), cores_per_node=args.cores_per_node),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
