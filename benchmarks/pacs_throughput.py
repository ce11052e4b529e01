"""Throughput and latency of the DICOM gateway against a real PACS (Orthanc), with 1, 4 and 8 concurrent
associations, next to a plain storage SCP measured in the same run.

Set-up (all on loopback, fresh state in a temp dir): a real Orthanc (``tests/pacs/orthanc.py``) and the gateway
in this process (``Service`` + ``Gateway``) with Orthanc as its result destination; Orthanc accepts C-STORE from
the gateway's AE title (registered with ``set_modality``). Per setting, K modality SCUs (pynetdicom, one thread and
one association each) C-STORE their share of N distinct real chest instances straight to the gateway: the SIIM
chest DICOM (a JPEG-baseline Secondary Capture, stated BurnedInAnnotation = NO as after a pixel review) and
pydicom-data's RG1_UNCR chest CR (1955x1841, uncompressed), alternating, each copy with new study, series and
instance UIDs (written to the temp dir only). The gateway scores them and C-STOREs an SR (and, unless
``--no-capture``, a heatmap Secondary Capture, sent before the SR) into the source study in Orthanc, whose REST
API a poller thread watches for SR series every ``--poll`` seconds.

Measured per setting:
  * received inst/s: N / (first C-STORE sent -> last C-STORE acknowledged);
  * ack p50/p95: the C-STORE round trip of one instance (the gateway acknowledges once it is in the spool,
    fsync'ed);
  * scored inst/s: N / (first C-STORE sent -> last SR seen in Orthanc);
  * result p50/p95: an instance's C-STORE acknowledgement -> its SR seen in Orthanc (resolution: the poll
    interval).
The reference rows send the same kind of workload to a plain pynetdicom storage SCP (same transfer syntaxes,
writes each data set to a file, no parsing, no fsync, no scoring): what the receive side costs without radiolens.
Both receivers run in this process, as the SCUs do (one Python interpreter, shared GIL), so the ratio compares
like with like. Nothing is asserted; the table states what this machine did under its load at the time.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/pacs_throughput.py [--n 24] [--arch small_cnn --size 64]
        [--model bundle.pt] [--no-capture] [--json out.json]

Without --model a small_cnn (or --arch) bundle is trained for a few seconds on 240 real Kermany images, so the
outputs are not constant; scoring cost depends on the architecture and input size, not on the weights.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt

# The Orthanc launcher and the quick real-data fit live with the tests (tests/pacs/orthanc.py, tests/conftest.py);
# the repository root on sys.path makes them importable when this file is run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import fit_binary  # noqa: E402
from tests.pacs.orthanc import INSTALL_HINT, ORTHANC_BINARY, Orthanc  # noqa: E402

MODALITY_AE, GATEWAY_AE, ORTHANC_AE, REFERENCE_AE = "MODALITY", "RADIOLENS", "ORTHANC", "STORESCP"
SETTINGS = (1, 4, 8)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------- model
def train_bundle(path: Path, data_dir: Path, arch: str, size: int, epochs: int) -> Path:
    """``arch`` at ``size`` px fitted a few epochs on 120 normal + 120 pneumonia Kermany training images."""
    from radiolens.io import read_image
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.registry import create_model

    torch.manual_seed(0)
    root = data_dir / "kermany_pediatric_pneumonia"
    rows: dict[int, list[Path]] = {0: [], 1: []}
    with open(root / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == "train" and len(rows[int(r["label_int"])]) < 120:
                rows[int(r["label_int"])].append(root / r["path"])
    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size),
                      name=f"bench-{arch}", version="0.bench", triage={})
    bundle = ModelBundle(info=info, model=create_model(arch, 1))
    paths = rows[0] + rows[1]
    x = torch.stack([bundle.preprocess(read_image(p)) for p in paths])
    y = torch.tensor([[0.0]] * len(rows[0]) + [[1.0]] * len(rows[1]))
    fit_binary(bundle, x, y, epochs=epochs)
    bundle.save(path)
    return path


# ---------------------------------------------------------------------- workload
def source_datasets(data_dir: Path) -> list[pydicom.Dataset]:
    """The two real chest sources: SIIM (stated BurnedInAnnotation = NO: the service refuses a Secondary
    Capture that does not say, and this image has no burned-in text) and pydicom-data's RG1_UNCR chest CR."""
    import data_store  # the import name of the pydicom-data package

    siim = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    if not siim:
        sys.exit("the SIIM chest DICOM is missing from RADIOLENS_DATA_DIR")
    rg1 = Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"
    if not rg1.is_file():
        sys.exit("pydicom-data lacks RG1_UNCR.dcm")
    reviewed = pydicom.dcmread(siim[0])
    reviewed.BurnedInAnnotation = "NO"
    return [reviewed, pydicom.dcmread(rg1)]


def make_instances(sources: list[pydicom.Dataset], n: int, folder: Path) -> list[Path]:
    """``n`` files alternating over ``sources``, each its own study (new study, series and SOP instance UIDs),
    so every result lands in a study of its own and can be matched to the instance it came from."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = sources[i % len(sources)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


@dataclass
class Sent:
    study_uid: str
    start: float
    ack: float
    status: int


def send_all(port: int, called_ae: str, paths: list[Path], associations: int) -> tuple[list[Sent], float]:
    """C-STORE ``paths`` over ``associations`` concurrent associations (one thread each, an equal share of the
    files, sent one after another); returns what each send saw and the time the first one started."""
    shares = [paths[i::associations] for i in range(associations)]
    results: list[list[Sent]] = [[] for _ in shares]
    barrier = threading.Barrier(associations + 1)

    def one(k: int) -> None:
        datasets = [pydicom.dcmread(p) for p in shares[k]]
        ae = AE(ae_title=MODALITY_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        for sop, ts in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
            ae.add_requested_context(sop, ts)
        barrier.wait()
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
        if not assoc.is_established:
            results[k] = [Sent(str(d.StudyInstanceUID), 0.0, 0.0, -1) for d in datasets]
            return
        try:
            for ds in datasets:
                t0 = time.perf_counter()
                rsp = assoc.send_c_store(ds)
                status = int(rsp.Status) if rsp is not None and "Status" in rsp else -1
                results[k].append(Sent(str(ds.StudyInstanceUID), t0, time.perf_counter(), status))
        finally:
            assoc.release()

    threads = [threading.Thread(target=one, args=(k,), name=f"scu-{k}") for k in range(associations)]
    for t in threads:
        t.start()
    barrier.wait()
    t_first = time.perf_counter()
    for t in threads:
        t.join()
    return [s for share in results for s in share], t_first


# ---------------------------------------------------------------------- receivers
class ReferenceSCP:
    """A plain pynetdicom storage SCP: same storage contexts and transfer syntaxes as the gateway's receiver,
    writes each received data set to a file and acknowledges; nothing else."""

    def __init__(self, folder: Path, max_associations: int):
        from radiolens.gateway.receiver import TRANSFER_SYNTAXES

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._lock = threading.Lock()
        ae = AE(ae_title=REFERENCE_AE)
        ae.maximum_associations = max_associations
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = int(self.server.server_address[1])

    def _store(self, event) -> int:
        with self._lock:
            self._count += 1
            n = self._count
        with open(self.folder / f"{n:06d}.dcm", "wb") as fh:
            fh.write(event.encoded_dataset(include_meta=True))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


class SRWatcher:
    """Polls Orthanc's REST API for SR series and records when each study's SR was first seen."""

    def __init__(self, orthanc: Orthanc, interval: float):
        self.orthanc, self.interval = orthanc, interval
        self.seen: dict[str, float] = {}  # StudyInstanceUID -> perf_counter when first seen
        self._study_uid: dict[str, str] = {}  # Orthanc study id -> StudyInstanceUID
        self._stop = threading.Event()
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="orthanc-poll", daemon=True)

    def poll(self) -> None:
        client = self.orthanc.client
        series = client.post("/tools/find", json={"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True})
        series.raise_for_status()
        now = time.perf_counter()
        for s in series.json():
            parent = s["ParentStudy"]
            if parent not in self._study_uid:
                study = client.get(f"/studies/{parent}")
                study.raise_for_status()
                self._study_uid[parent] = study.json()["MainDicomTags"]["StudyInstanceUID"]
            self.seen.setdefault(self._study_uid[parent], now)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # a slow answer under load: counted, the next poll catches up
                self.errors += 1
            self._stop.wait(self.interval)

    def wait_for(self, studies: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not studies <= self.seen.keys():
            if time.monotonic() > deadline:
                return False
            time.sleep(self.interval)
        return True

    def start(self) -> SRWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# ---------------------------------------------------------------------- measurement
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Row:
    target: str
    associations: int
    n: int
    failed: int  # C-STORE statuses other than success (or no association)
    received_per_s: float
    ack_p50_ms: float
    ack_p95_ms: float
    results: int | None = None  # SRs seen in Orthanc
    scored_per_s: float | None = None
    result_p50_s: float | None = None
    result_p95_s: float | None = None
    ratio: float | None = None  # received_per_s / the reference's at the same associations
    load_after: str = field(default="")


def receive_stats(sent: list[Sent], t_first: float) -> tuple[int, float, list[float]]:
    ok = [s for s in sent if s.status == 0]
    wall = max((s.ack for s in ok), default=t_first) - t_first
    acks = [(s.ack - s.start) * 1000 for s in ok]
    return len(sent) - len(ok), (len(ok) / wall if wall > 0 else float("nan")), acks


def run_gateway_setting(port: int, watcher: SRWatcher, paths: list[Path], k: int, timeout: float) -> Row:
    sent, t_first = send_all(port, GATEWAY_AE, paths, k)
    failed, rate, acks = receive_stats(sent, t_first)
    ok = [s for s in sent if s.status == 0]
    watcher.wait_for({s.study_uid for s in ok}, timeout)
    seen = [(s, watcher.seen[s.study_uid]) for s in ok if s.study_uid in watcher.seen]
    lat = [t - s.ack for s, t in seen]
    last = max((t for _, t in seen), default=t_first)
    scored = len(seen) / (last - t_first) if seen and len(seen) == len(sent) else float("nan")
    return Row("gateway", k, len(sent), failed, rate, pct(acks, 50), pct(acks, 95), results=len(seen),
               scored_per_s=scored, result_p50_s=pct(lat, 50), result_p95_s=pct(lat, 95), load_after=load_average())


def run_reference_setting(port: int, paths: list[Path], k: int) -> Row:
    sent, t_first = send_all(port, REFERENCE_AE, paths, k)
    failed, rate, acks = receive_stats(sent, t_first)
    return Row("reference", k, len(sent), failed, rate, pct(acks, 50), pct(acks, 95), load_after=load_average())


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row]) -> None:
    head = ("target", "assocs", "N", "failed", "recv inst/s", "ack p50 ms", "ack p95 ms", "SRs", "scored inst/s",
            "result p50 s", "result p95 s", "recv ratio", "load after")
    body = [(r.target, str(r.associations), str(r.n), str(r.failed), fmt(r.received_per_s, ".1f"),
             fmt(r.ack_p50_ms, ".0f"), fmt(r.ack_p95_ms, ".0f"), fmt(r.results, "d"), fmt(r.scored_per_s, ".2f"),
             fmt(r.result_p50_s, ".2f"), fmt(r.result_p95_s, ".2f"), fmt(r.ratio, ".2f"), r.load_after)
            for r in rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in body:
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                                 enumerate(zip(cells, widths, strict=True))) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ModelBundle .pt (default: --arch trained a few seconds on Kermany)")
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--size", type=int, default=64, help="input size of the trained bundle")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the quick fit of the trained bundle")
    ap.add_argument("--n", type=int, default=24, help="instances per setting")
    ap.add_argument("--associations", type=int, nargs="+", default=list(SETTINGS))
    ap.add_argument("--mc-passes", type=int, default=8, help="MC-dropout passes of the service (its default)")
    ap.add_argument("--no-capture", action="store_true", help="SR only, no heatmap Secondary Capture")
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between polls of Orthanc for SRs")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a setting's results")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", type=Path, help="also write the rows and machine facts here")
    args = ap.parse_args()
    if max(args.associations) > 64 or min(args.associations) < 1:
        ap.error("--associations must be between 1 and 64")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)

    data_dir = Path(os.environ.get("RADIOLENS_DATA_DIR", ""))
    if not data_dir.is_dir():
        sys.exit("set RADIOLENS_DATA_DIR to the real data folder")
    if not ORTHANC_BINARY.is_file():
        sys.exit(f"{ORTHANC_BINARY} is missing. {INSTALL_HINT}")

    import pynetdicom

    from radiolens.gateway.config import GatewayConfig
    from radiolens.gateway.node import Gateway
    from radiolens.serve.config import ServeSettings
    from radiolens.serve.runtime.service import Service

    load_start = load_average()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="radiolens-pacs-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = args.model or train_bundle(tmp / "bench.pt", data_dir, args.arch, args.size, args.epochs)
        train_s = None if args.model else time.perf_counter() - t0
        sources = source_datasets(data_dir)
        k_max = max(args.associations)

        orthanc = Orthanc(tmp / "orthanc", aet=ORTHANC_AE).start()
        service = gateway = reference = watcher = None
        try:
            orthanc_version = orthanc.client.get("/system").json().get("Version", "?")
            config = GatewayConfig.model_validate({
                "ae_title": GATEWAY_AE, "port": 0, "max_associations": max(k_max, 8),
                "peers": {"modality": {"ae_title": MODALITY_AE},
                          "orthanc": {"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}},
                "destination": {"kind": "peer", "peer": "orthanc"},
                "heatmap_capture": not args.no_capture,
                "send": {"backoff_s": 0.5, "max_attempts": 5, "timeout_s": 60}})
            settings = ServeSettings(model_path=model, state_dir=tmp / "state",
                                     deid_secret=os.environ.get("RADIOLENS_DEID_SECRET") or secrets.token_hex(32),
                                     mc_dropout_passes=args.mc_passes)
            service = Service(settings)
            gateway = Gateway(config, service).start()
            orthanc.set_modality("radiolens", GATEWAY_AE, "127.0.0.1", gateway.port)
            watcher = SRWatcher(orthanc, args.poll).start()

            # warm-up, excluded: one instance of each source through the whole path (model, decoders, Orthanc)
            warm = make_instances(sources, len(sources), tmp / "warm")
            sent, _ = send_all(gateway.port, GATEWAY_AE, warm, 1)
            if not watcher.wait_for({s.study_uid for s in sent if s.status == 0}, args.timeout) or \
                    any(s.status != 0 for s in sent):
                sys.exit(f"warm-up: no results in Orthanc (C-STORE statuses {[hex(s.status) for s in sent]}); "
                         "see the log above")

            reference = ReferenceSCP(tmp / "reference", k_max)
            for k in args.associations:
                folder = tmp / f"gw{k}"
                paths = make_instances(sources, args.n, folder)
                rows.append(run_gateway_setting(gateway.port, watcher, paths, k, args.timeout))
                ref_paths = make_instances(sources, args.n, tmp / f"ref{k}")
                rows.append(run_reference_setting(reference.port, ref_paths, k))
                rows[-2].ratio = rows[-2].received_per_s / rows[-1].received_per_s
                for p in paths + ref_paths:  # 7 MB per CR copy: keep the temp dir small
                    p.unlink()
            processed = {s.labels["outcome"]: int(s.value) for m in gateway.m_processed.collect()
                         for s in m.samples if s.name.endswith("_total")}
            sr_total = len(watcher.seen)
        finally:
            if watcher is not None:
                watcher.stop()
            if reference is not None:
                reference.stop()
            if gateway is not None:
                gateway.stop()
            if service is not None:
                service.close()
            orthanc.stop()

    model_desc = f"{args.model.name}" if args.model else \
        f"{args.arch} {args.size}px trained {args.epochs} epochs on 240 Kermany images ({train_s:.0f} s)"
    print(f"\npacs_throughput: N={args.n} instances per setting (SIIM 1024² JPEG-baseline SC and RG1 1955x1841 "
          f"uncompressed CR, alternating, each its own study), model {model_desc}, {args.mc_passes} MC passes, "
          f"results: SR{'' if args.no_capture else ' + heatmap SC'} to Orthanc {orthanc_version} over C-STORE; "
          f"poll every {args.poll:.2f} s")
    print(f"machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average (1/5/15 min) "
          f"{load_start} at start, {load_average()} at end; python {sys.version.split()[0]}, pydicom "
          f"{pydicom.__version__}, pynetdicom {pynetdicom.__version__}")
    print_table(rows)
    print(f"gateway processed (incl. 2 warm-up): {processed}; SR studies seen in Orthanc: {sr_total}; "
          f"REST polls that failed: {watcher.errors}")
    if args.json:
        args.json.write_text(json.dumps({
            "rows": [r.__dict__ for r in rows], "n": args.n, "model": model_desc, "mc_passes": args.mc_passes,
            "capture": not args.no_capture, "orthanc": orthanc_version, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_start": load_start, "load_end": load_average(),
            "processed": processed, "poll_s": args.poll}, indent=2))


if __name__ == "__main__":
    main()
