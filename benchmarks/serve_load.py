"""Bounded load test of the inference service on loopback, with and without heatmaps.

Starts ``radiolens serve`` in a subprocess (fresh SQLite state in a temp dir), then N concurrent clients
upload real images from RADIOLENS_DATA_DIR (Kermany JPEGs and the SIIM chest DICOM) over HTTP and the
script prints p50/p95/p99 latency, throughput and error count per mode. Every request is also checked
against the audit log at the end (rows == successful predictions, chain verifies).

    python benchmarks/serve_load.py --requests 300 --clients 8 [--model bundle.pt]

Without --model a small_cnn bundle (64 px, random weights: latency does not depend on the weights) is made.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_uploads(data_dir: Path, n_jpeg: int, dicom_every: int) -> list[tuple[str, bytes]]:
    root = data_dir / "kermany_pediatric_pneumonia"
    with open(root / "manifest.csv") as fh:
        paths = [root / r["path"] for r in csv.DictReader(fh)][:n_jpeg]
    dicoms = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    out: list[tuple[str, bytes]] = []
    for i, p in enumerate(paths):
        if dicoms and i % dicom_every == 0:
            out.append(("dicom", dicoms[0].read_bytes()))
        out.append(("jpeg", p.read_bytes()))
    return out


def make_bundle(path: Path, arch: str, size: int) -> Path:
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.registry import create_model

    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size),
                      name=f"bench-{arch}")
    ModelBundle(info=info, model=create_model(arch, 1)).save(path)
    return path


def run_mode(url: str, key: str, uploads, n_requests: int, clients: int, heatmap: bool) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    local = [httpx.Client(timeout=120, headers=headers) for _ in range(clients)]

    def one(i: int):
        kind, data = uploads[i % len(uploads)]
        c = local[i % clients]
        t0 = time.perf_counter()
        try:
            r = c.post(f"{url}/v1/predictions", params={"heatmap": str(heatmap).lower()},
                       files={"file": ("upload", data)})
            ok = r.status_code == 201
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - t0, ok, kind

    # warm-up, excluded from the numbers
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    for c in local:
        c.close()
    lat = np.array([r[0] for r in results if r[1]]) * 1000
    errors = sum(1 for r in results if not r[1])
    return {"mode": "heatmap" if heatmap else "no heatmap", "requests": n_requests, "errors": errors,
            "throughput": (n_requests - errors) / wall, "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95),
            "p99": np.percentile(lat, 99), "mean": lat.mean(), "wall": wall,
            "dicom": sum(1 for r in results if r[2] == "dicom")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ModelBundle .pt (default: fresh small_cnn)")
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--requests", type=int, default=300, help="requests per mode")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--inference-workers", type=int, default=2)
    ap.add_argument("--dicom-every", type=int, default=4, help="one SIIM DICOM upload per this many JPEGs")
    args = ap.parse_args()
    torch.set_num_threads(2)

    data_dir = Path(os.environ.get("RADIOLENS_DATA_DIR", ""))
    if not data_dir.is_dir():
        sys.exit("set RADIOLENS_DATA_DIR to the real data folder")
    uploads = load_uploads(data_dir, n_jpeg=240, dicom_every=args.dicom_every)

    from typer.testing import CliRunner

    from radiolens.cli import app as cli_app
    from radiolens.serve import audit
    from radiolens.serve.db import make_engine

    with tempfile.TemporaryDirectory(prefix="radiolens-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model or make_bundle(tmp / "bench.pt", args.arch, args.size)
        state = tmp / "state"
        out = CliRunner().invoke(cli_app, ["users", "create", "--role", "clinician", "--state-dir", str(state)])
        key = out.stdout.strip().splitlines()[-1]
        port = free_port()
        env = dict(os.environ, RADIOLENS_DEID_SECRET=os.environ.get("RADIOLENS_DEID_SECRET", "bench-secret"),
                   OMP_NUM_THREADS="2")
        proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(model),
                                 "--state-dir", str(state), "--port", str(port), "--log-level", "warning",
                                 "--inference-workers", str(args.inference_workers)], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("server did not start")
                time.sleep(0.3)
            rows = [run_mode(url, key, uploads, args.requests, args.clients, heatmap=h) for h in (False, True)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        engine = make_engine(f"sqlite:///{state / 'radiolens.db'}")
        report = audit.verify(engine)
        engine.dispose()

    print(f"\nserve_load: {args.clients} clients, {args.requests} requests/mode, model {args.arch} "
          f"{args.size}px, {args.inference_workers} inference workers, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs; uploads: Kermany JPEG 224px + SIIM DICOM 1024px (1 in {args.dicom_every + 1})")
    print(f"| {'mode':10} | {'requests':>8} | {'DICOM':>5} | {'errors':>6} | {'req/s':>6} | {'p50 ms':>7} | "
          f"{'p95 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 12}|{'-' * 10}|{'-' * 7}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for r in rows:
        print(f"| {r['mode']:10} | {r['requests']:>8} | {r['dicom']:>5} | {r['errors']:>6} | {r['throughput']:>6.1f} | "
              f"{r['p50']:>7.0f} | {r['p95']:>7.0f} | {r['p99']:>7.0f} |")
    expected = sum(r["requests"] - r["errors"] for r in rows) + 2 * args.clients
    print(f"audit chain: {'OK' if report.ok else 'BROKEN'}, {report.rows} rows "
          f"(expected {expected} = successful predictions incl. warm-up)")


if __name__ == "__main__":
    main()
