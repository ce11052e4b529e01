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
start-up time is printed separately).
On a machine shared with other busy processes wall-clock rates say more about the neighbours than about the code,
so the per-image costs are also taken as CPU time of this process (``time.process_time``), which contention
barely changes, and the projection uses those. Per-image costs (one thread): decode + prepare
(`predict.dataset.ImageItems`, i.e. `io.formats.read_image` + `pipeline.prepare`) per file type, and the model
stage (`Scorer.score_batch`: forward pass, gate, decision, row) per image at batch 32.

The projection for 1 million images divides the work by the cores of N nodes:
  CPU only:  images/s per node = cores / (decode + model stage CPU seconds) x efficiency;
  with GPUs: the model stage leaves the CPUs, so images/s per node = cores / decode CPU seconds x efficiency (an
             upper bound: it holds only while the GPU keeps up; the GPU's own rate is not measured here).
  efficiency (--efficiency, default 0.8) is the share of the cores that does useful work; the Ray rows measured
  on a loaded 2-core machine bound it only loosely, so it is a stated assumption.

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
    """Seconds per image on one thread, wall and CPU: decode + prepare per file type, and the model stage at
    ``batch``."""
    from radiolens.predict import PredictConfig
    from radiolens.predict.dataset import ImageItems
    from radiolens.predict.sources import ScoreItem
    from radiolens.predict.spec import ScorerSpec

    scorer = ScorerSpec(model, PredictConfig(workers=0, progress=False), threads=1).build()
    items = ImageItems([ScoreItem(f.name, f) for f in files], scorer.info)
    wall: dict[str, list[float]] = {"jpeg": [], "dicom": []}
    cpu: dict[str, list[float]] = {"jpeg": [], "dicom": []}
    records = []
    for i in range(len(items)):
        kind = "dicom" if files[i].suffix == ".dcm" else "jpeg"
        t0, c0 = time.perf_counter(), time.process_time()
        records.append(items[i])
        wall[kind].append(time.perf_counter() - t0)
        cpu[kind].append(time.process_time() - c0)
    keys = [f.name for f in files]
    scorer.score_batch(keys, records[:batch])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(records), batch):
        scorer.score_batch(keys, records[start:start + batch])
    model_wall, model_cpu = (time.perf_counter() - t0) / len(records), (time.process_time() - c0) / len(records)

    def summary(times: dict[str, list[float]]) -> dict:
        return {"mean": statistics.fmean(times["jpeg"] + times["dicom"]),
                "jpeg_median": statistics.median(times["jpeg"]),
                "dicom_median": statistics.median(times["dicom"]) if times["dicom"] else None}

    return {"decode_wall_s": summary(wall), "decode_cpu_s": summary(cpu), "model_stage_wall_s": model_wall,
            "model_stage_cpu_s": model_cpu, "batch": batch, "dicom_share": len(cpu["dicom"]) / len(records)}


def run_local(model: Path, root: Path, out: Path, cores: int) -> float:
    from radiolens.predict import PredictConfig, discover
    from radiolens.predict.config import default_inference_threads
    from radiolens.predict.spec import ScorerSpec

    cfg = PredictConfig(batch_size=32, progress=False, overwrite=True)
    spec = ScorerSpec(model, cfg, threads=default_inference_threads(cfg.workers))
    t0 = time.perf_counter()
    summary = spec.build().run(discover(root), out)
    return (summary.scored + summary.errors + summary.not_assessed) / (time.perf_counter() - t0)


def run_ray(model: Path, root: Path, out: Path, actors: int, cores: int) -> float:
    from radiolens.predict import PredictConfig, discover
    from radiolens.predict.ray_engine import RayOptions, score_with_ray
    from radiolens.predict.spec import ScorerSpec

    # Every actor and one decoding task must fit in the cores at once, or Ray Data waits for CPUs that never free.
    share = min(1.0, cores / (actors + 1))
    options = RayOptions(num_actors=actors, cpus_per_actor=share, cpus_per_decode_task=share)
    spec = ScorerSpec(model, PredictConfig(batch_size=32, progress=False, overwrite=True))
    t0 = time.perf_counter()
    summary = score_with_ray(spec, discover(root), out, options)
    return (summary.scored + summary.errors + summary.not_assessed) / (time.perf_counter() - t0)


def projection(costs: dict, efficiency: float, images: int = 1_000_000, cores_per_node: int = 16,
               nodes: tuple[int, ...] = (1, 4, 16, 64)) -> list[dict]:
    decode = costs["decode_cpu_s"]["mean"]
    cpu_rate = cores_per_node / (decode + costs["model_stage_cpu_s"]) * efficiency
    gpu_bound = cores_per_node / decode * efficiency
    return [{"nodes": n, "cores_per_node": cores_per_node, "cpu_only_images_per_s": n * cpu_rate,
             "cpu_only_hours": images / (n * cpu_rate) / 3600, "gpu_images_per_s_upper": n * gpu_bound,
             "gpu_hours_lower": images / (n * gpu_bound) / 3600} for n in nodes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=192, help="files to score (Kermany JPEGs, every 8th the SIIM DICOM)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cores-per-node", type=int, default=16, help="for the projection")
    ap.add_argument("--efficiency", type=float, default=0.8, help="useful share of the cores, for the projection")
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
    costs = per_image_costs(model, files)
    local = run_local(model, root, work / "local.parquet", cores)
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    ray_start_s = time.perf_counter() - t0
    try:
        ray1 = run_ray(model, root, work / "ray1.parquet", 1, cores)
        ray2 = run_ray(model, root, work / "ray2.parquet", 2, cores)
    finally:
        ray.shutdown()
    result = {
        "machine": {"cores": cores, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "arch": args.arch, "size": args.size, "files": len(files)},
        "per_image": costs,
        "images_per_s": {"local": local, "ray_1_actor": ray1, "ray_2_actors": ray2},
        "ratios": {"ray1_over_local": ray1 / local, "ray2_over_local": ray2 / local, "ray2_over_ray1": ray2 / ray1},
        "ray_cluster_start_s": ray_start_s,
        "efficiency_assumed": args.efficiency,
        "projection_1M": projection(costs, args.efficiency, cores_per_node=args.cores_per_node),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
