"""Bounded load test of the inference service on loopback, with and without heatmaps.

Starts ``radiolens serve`` in a subprocess (fresh SQLite state in a temp dir), then N concurrent clients
upload real, varied images from RADIOLENS_DATA_DIR over HTTP and the script prints p50/p95/p99 latency,
throughput and error count per mode, and p50 per upload kind. Every request is also checked against the
audit log at the end (rows == successful predictions + the key's creation, chain verifies).

Uploads (all different files): Kermany JPEGs (224 px), NIH ChestX-ray14 PNGs (the 1024 px full-res ones
and 64 px ones), the real SIIM DICOM (1024 px, JPEG-compressed) and uncompressed 12-bit DICOMs built from
other real images (NIH full-res, TBX11K 512 px, Kermany) with the SIIM header as template, each with its
own study/series/instance UIDs.

    python benchmarks/serve_load.py --requests 300 --clients 8 [--arch resnet18 --size 224] [--model bundle.pt]

Micro-batching before/after in one run (heatmaps on; the service with batching off, then on):

    python benchmarks/serve_load.py --compare-batching --arch resnet18 --size 224 --requests 200 --clients 8

Without --model a bundle of --arch/--size with random weights is made (latency does not depend on the
weights; outputs are meaningless).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import os
import secrets
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


def _grey_u8(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def dicom_from_pixels(template, grey_u8: np.ndarray) -> bytes:
    """An uncompressed 12-bit MONOCHROME2 DICOM with the real SIIM header (already anonymised at source) and
    the pixels of another real image; fresh UIDs so every file is a different study."""
    import copy
    import io

    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = copy.deepcopy(template)
    for kw in ("PixelData", "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if kw in ds:
            delattr(ds, kw)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = int(grey_u8.shape[0]), int(grey_u8.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.add_new(0x7FE00010, "OW", (grey_u8.astype(np.uint16) * 16).tobytes())  # PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def load_uploads(data_dir: Path, n_jpeg: int, dicom_every: int, png_every: int) -> list[tuple[str, bytes]]:
    """Interleave distinct JPEGs with a DICOM every ``dicom_every`` and a PNG every ``png_every`` uploads."""
    import io

    import pydicom

    kroot = data_dir / "kermany_pediatric_pneumonia"
    with open(kroot / "manifest.csv") as fh:
        kermany = [kroot / r["path"] for r in csv.DictReader(fh)]
    jpegs = kermany[:n_jpeg]
    nih = data_dir / "nih_chestxray14"
    nih_full = sorted((nih / "images_fullres").glob("*.png"))
    nih_small = sorted((nih / "images_64px").glob("*.png"))[:60]
    pngs = [p.read_bytes() for p in nih_full + nih_small]
    siim = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    template = pydicom.dcmread(str(siim[0]))
    # SIIM is a Secondary Capture without BurnedInAnnotation, which the service refuses (text may be burned
    # in); its pixels have none, so the uploads state NO, as a site does after review.
    template.BurnedInAnnotation = "NO"
    sources = nih_full + sorted((data_dir / "tbx11k").rglob("*.png")) + kermany[-8:]  # not among the JPEGs
    reviewed = io.BytesIO()
    template.save_as(reviewed, enforce_file_format=True)
    dicoms = [reviewed.getvalue()] + [dicom_from_pixels(template, _grey_u8(p)) for p in sources]
    out: list[tuple[str, bytes]] = []
    for i, p in enumerate(jpegs):
        if i % dicom_every == 0:
            out.append(("dicom", dicoms[(i // dicom_every) % len(dicoms)]))
        if i % png_every == 0:
            out.append(("png", pngs[(i // png_every) % len(pngs)]))
        out.append(("jpeg", p.read_bytes()))
    return out


def upload_summary(uploads) -> str:
    import hashlib

    kinds: dict[str, set] = {}
    for kind, data in uploads:
        kinds.setdefault(kind, set()).add(hashlib.sha256(data).hexdigest())
    return ", ".join(f"{len(v)} distinct {k}" for k, v in sorted(kinds.items()))


def make_bundle(path: Path, arch: str, size: int, dropout: float | None = None) -> Path:
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.registry import create_model

    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size),
                      name=f"bench-{arch}")
    ModelBundle(info=info, model=create_model(arch, 1, dropout=dropout)).save(path)
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
            status = r.status_code
        except httpx.HTTPError:
            status = 0  # no HTTP answer
        return time.perf_counter() - t0, status == 201, kind, status

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
    statuses = {str(s): sum(1 for r in results if r[3] == s) for s in sorted({r[3] for r in results if not r[1]})}
    by_kind = {k: float(np.percentile([r[0] * 1000 for r in results if r[1] and r[2] == k], 50))
               for k in ("jpeg", "png", "dicom") if any(r[1] and r[2] == k for r in results)}
    return {"mode": "heatmap" if heatmap else "no heatmap", "requests": n_requests, "errors": errors,
            "error_statuses": statuses,
            "throughput": (n_requests - errors) / wall, "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95),
            "p99": np.percentile(lat, 99), "mean": lat.mean(), "wall": wall,
            "dicom": sum(1 for r in results if r[2] == "dicom"), "png": sum(1 for r in results if r[2] == "png"),
            "by_kind": by_kind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ModelBundle .pt (default: fresh small_cnn)")
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--requests", type=int, default=300, help="requests per mode")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--inference-workers", type=int, default=2)
    ap.add_argument("--dicom-every", type=int, default=4, help="one DICOM upload per this many JPEGs")
    ap.add_argument("--png-every", type=int, default=6, help="one NIH PNG upload per this many JPEGs")
    ap.add_argument("--mc-passes", type=int, default=8, help="passed to radiolens serve --mc-passes")
    ap.add_argument("--dropout", type=float, default=None, help="head dropout of the made bundle (registry default "
                    "if unset); MC-dropout passes only cost time when the model has nn.Dropout modules")
    ap.add_argument("--timeout", type=float, default=120.0, help="passed to radiolens serve --timeout")
    ap.add_argument("--max-pending-uploads", type=int, default=None,
                    help="passed to radiolens serve (default: --clients, so no upload is turned away with 503 and "
                         "the table measures inference; set it lower to measure admission control)")
    ap.add_argument("--batch-max-size", type=int, default=8, help="passed to radiolens serve (1 = micro-batching "
                    "off)")
    ap.add_argument("--batch-max-wait-ms", type=float, default=5.0, help="passed to radiolens serve")
    ap.add_argument("--pixel-text", choices=("refuse", "mask", "off"), default="refuse",
                    help="passed to radiolens serve: OCR of DICOM pixels for burned-in text (the service's default "
                         "refuse runs it on every DICOM upload)")
    ap.add_argument("--compare-batching", action="store_true", help="before/after in one run: heatmaps on, the "
                    "service started with micro-batching off, then on (--batch-max-size), and the ratio")
    args = ap.parse_args()
    torch.set_num_threads(2)

    data_dir = Path(os.environ.get("RADIOLENS_DATA_DIR", ""))
    if not data_dir.is_dir():
        sys.exit("set RADIOLENS_DATA_DIR to the real data folder")
    uploads = load_uploads(data_dir, n_jpeg=240, dicom_every=args.dicom_every, png_every=args.png_every)

    with tempfile.TemporaryDirectory(prefix="radiolens-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model or make_bundle(tmp / "bench.pt", args.arch, args.size, args.dropout)
        from torch import nn

        from radiolens.models.bundle import ModelBundle

        n_drop = sum(isinstance(m, nn.modules.dropout._DropoutNd) for m in ModelBundle.load(model).model.modules())
        if args.compare_batching:
            runs = [("batching off", 1), (f"batching {args.batch_max_size}/{args.batch_max_wait_ms:g}ms",
                                         args.batch_max_size)]
            heatmaps: tuple[bool, ...] = (True,)
        else:
            runs, heatmaps = [("", args.batch_max_size)], (False, True)
        rows, audits, loads = [], [], []
        for i, (label, batch) in enumerate(runs):
            loads.append(os.getloadavg()[0])
            got, report = serve_and_measure(args, model, tmp / f"state{i}", uploads, batch, heatmaps)
            for r in got:
                r["mode"] = f"{r['mode']}, {label}" if label else r["mode"]
            rows += got
            audits.append((report, sum(r["requests"] - r["errors"] for r in got) + len(heatmaps) * args.clients + 2))
            loads.append(os.getloadavg()[0])

    print(f"\nserve_load: {args.clients} clients, {args.requests} requests/mode, model {args.arch} "
          f"{args.size}px, {args.inference_workers} inference workers, {args.mc_passes} MC passes "
          f"({n_drop} dropout modules{': passes skipped' if not n_drop else ''}), "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, load average (1 min) "
          f"{min(loads):.1f}-{max(loads):.1f} at the runs' starts and ends; uploads: {upload_summary(uploads)} "
          f"(1 DICOM per {args.dicom_every} and 1 PNG per {args.png_every} JPEGs)")
    width = max(10, *(len(r["mode"]) for r in rows))
    print(f"| {'mode':{width}} | {'requests':>8} | {'DICOM':>5} | {'PNG':>4} | {'errors':>6} | {'req/s':>6} | "
          f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'p50 JPEG':>8} | {'p50 PNG':>7} | {'p50 DICOM':>9} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 7}|{'-' * 6}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|"
          f"{'-' * 10}|{'-' * 9}|{'-' * 11}|")
    for r in rows:
        k = r["by_kind"]
        print(f"| {r['mode']:{width}} | {r['requests']:>8} | {r['dicom']:>5} | {r['png']:>4} | {r['errors']:>6} | "
              f"{r['throughput']:>6.1f} | {r['p50']:>7.0f} | {r['p95']:>7.0f} | {r['p99']:>7.0f} | "
              f"{k.get('jpeg', float('nan')):>8.0f} | {k.get('png', float('nan')):>7.0f} | "
              f"{k.get('dicom', float('nan')):>9.0f} |")
    for r in rows:
        if r["error_statuses"]:
            print(f"{r['mode']}: failed requests by HTTP status (0: no answer): {r['error_statuses']}")
    if args.compare_batching:
        off, on = rows
        print(f"batching on / off: {on['throughput'] / off['throughput']:.2f}x requests/s, p95 "
              f"{on['p95']:.0f} ms vs {off['p95']:.0f} ms")
    for report, expected in audits:
        print(f"audit chain: {'OK' if report.ok else 'BROKEN'}, {report.rows} rows "
              f"(expected {expected} = successful predictions incl. warm-up + the key's creation + the "
              "de-identification secret's registration)")


def serve_and_measure(args, model: Path, state: Path, uploads, batch_max_size: int, heatmaps: tuple[bool, ...]):
    """Start ``radiolens serve`` on fresh state, run one mode per heatmap setting, stop it, verify the audit."""
    from typer.testing import CliRunner

    from radiolens.cli import app as cli_app
    from radiolens.serve.store import audit
    from radiolens.serve.store.db import make_engine

    out = CliRunner().invoke(cli_app, ["users", "create", "--role", "clinician", "--state-dir", str(state)])
    key = out.stdout.strip().splitlines()[-1]
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="2",
               RADIOLENS_DEID_SECRET=os.environ.get("RADIOLENS_DEID_SECRET") or secrets.token_hex(32))
    proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(model),
                             "--state-dir", str(state), "--port", str(port), "--log-level", "warning",
                             "--inference-workers", str(args.inference_workers), "--mc-passes",
                             str(args.mc_passes), "--timeout", str(args.timeout), "--max-pending-uploads",
                             str(args.max_pending_uploads or args.clients), "--batch-max-size",
                             str(batch_max_size), "--batch-max-wait-ms", str(args.batch_max_wait_ms),
                             "--pixel-text", args.pixel_text], env=env)
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
        rows = [run_mode(url, key, uploads, args.requests, args.clients, heatmap=h) for h in heatmaps]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    engine = make_engine(f"sqlite:///{state / 'radiolens.db'}")
    report = audit.verify(engine)
    engine.dispose()
    return rows, report

if __name__ == "__main__":
    main()
