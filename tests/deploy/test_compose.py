"""compose.yaml brought up for real with podman-compose: radiolens (the serving image), PostgreSQL, Orthanc and
Prometheus, all from images built here out of Debian packages (scripts/build-compose-images.sh), and the
DICOM gateway.

The stack gets its own secret files (scripts/compose-secrets.sh), a real ONNX export of the service tests'
trained model and free host ports. Every service's own healthcheck must pass; the real SIIM chest DICOM is
uploaded and predicted (the service's database is the PostgreSQL container); Prometheus must have scraped the
service (with the auditor key the service made for it) and answer every query of the provisioned Grafana
dashboard; Orthanc answers with its DICOMweb plugin loaded, and the DICOM it forwards to the gateway gets its
SR back into the same study. ``down -v`` removes containers and volumes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

# The export fixture and the fixtures it needs.
from tests.serve.conftest import bundle_path, free_port, kermany_dir, siim_dicom, siim_original  # noqa: F401
from tests.serve.test_torch_free import exported  # noqa: F401

import radiolens

ROOT = Path(radiolens.__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "compose" / "grafana" / "dashboards" / "radiolens.json"
SERVICES = ("postgres", "radiolens", "radiolens-gateway", "orthanc", "prometheus")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR: the TID 1500 report
UID = 10001

pytestmark = pytest.mark.slow


def _run(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True):
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert not check or done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def images() -> None:
    if os.geteuid() != 0:
        pytest.skip("the compose stack runs rootful (secret files owned by the containers' user ids)")
    t0 = time.monotonic()
    _run(str(ROOT / "scripts" / "build-compose-images.sh"), timeout=3600)
    print(f"[compose] images built (or reused): {time.monotonic() - t0:.0f} s")


def _healthy(container: str) -> bool:
    return _run("podman", "healthcheck", "run", container, check=False, timeout=60).returncode == 0


def test_stack_predicts_a_real_dicom_and_prometheus_scrapes_it(images, exported, siim_dicom, tmp_path):  # noqa: F811
    _, onnx_path = exported
    models = tmp_path / "models"
    models.mkdir(mode=0o755)
    shutil.copyfile(onnx_path, models / "model.onnx")
    (models / "model.onnx").chmod(0o644)
    secrets = tmp_path / "secrets"
    _run(str(ROOT / "scripts" / "compose-secrets.sh"), str(secrets))
    assert all((p.stat().st_mode & 0o077) == 0 for p in secrets.iterdir())  # owner-only, every one
    ports = {k: free_port() for k in ("radiolens", "radiolens_dicom", "prometheus", "orthanc_http", "orthanc_dicom")}
    project = f"radiolenstest{os.getpid()}"
    env = {**os.environ, "RADIOLENS_SECRETS_DIR": str(secrets), "RADIOLENS_MODEL_DIR": str(models),
           "RADIOLENS_PORT": f"127.0.0.1:{ports['radiolens']}", "PROMETHEUS_PORT": f"127.0.0.1:{ports['prometheus']}",
           "ORTHANC_HTTP_PORT": f"127.0.0.1:{ports['orthanc_http']}",
           "RADIOLENS_DICOM_PORT": f"127.0.0.1:{ports['radiolens_dicom']}",
           "ORTHANC_DICOM_PORT": f"127.0.0.1:{ports['orthanc_dicom']}"}
    compose = ("podman-compose", "-p", project, "-f", str(ROOT / "compose.yaml"))
    containers = {s: f"{project}_{s}_1" for s in SERVICES}
    url = f"http://127.0.0.1:{ports['radiolens']}"
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    started = time.monotonic()
    try:
        _run(*compose, "up", "-d", env=env)
        deadline = started + 420
        waiting = set(SERVICES)
        while waiting:
            waiting = {s for s in waiting if not _healthy(containers[s])}
            if waiting and time.monotonic() > deadline:
                logs = {s: _run("podman", "logs", "--tail", "30", containers[s], check=False).stderr[-2000:]
                        for s in waiting}
                pytest.fail(f"not healthy after {deadline - started:.0f} s: {logs}")
            time.sleep(2)
        load = os.getloadavg()
        print(f"[compose] up -d to every healthcheck passing: {time.monotonic() - started:.1f} s "
              f"({os.cpu_count()} cores, load average {load[0]:.2f})")

        # A clinician key in the service's database (PostgreSQL), and the real DICOM through the HTTP API.
        created = _run("podman", "exec", containers["radiolens"], "radiolens", "users", "create", "--role",
                       "clinician", "--state-dir", "/var/lib/radiolens/state")
        key = created.stdout.strip().splitlines()[-1]
        r = httpx.post(f"{url}/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("upload", siim_dicom.read_bytes(), "application/dicom")}, timeout=120)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["model"]["backend"] == "onnx" and body["source_format"] == "dicom"
        assert body["status"] in ("ok", "refused"), body
        if body["status"] == "ok":
            assert 0.0 <= body["probabilities"][0]["probability"] <= 1.0
        # Keys and the prediction are in PostgreSQL (over TCP with the password: SCRAM, as the service connects).
        password = (secrets / "postgres-password").read_text().strip()
        rows = _run("podman", "exec", "-e", f"PGPASSWORD={password}", containers["postgres"], "psql", "-h",
                    "127.0.0.1", "-U", "radiolens", "-d", "radiolens", "-Atc",
                    "select (select count(*) from api_keys), (select count(*) from predictions)").stdout.strip()
        assert rows == "2|1", rows  # the Prometheus auditor key and the clinician's; the one prediction

        # Prometheus scraped the service (the auditor key from the radiolens-scrape volume) and saw the upload.
        deadline = time.monotonic() + 120
        while True:
            q = httpx.get(f"{prom}/api/v1/query", params={
                "query": 'sum(radiolens_http_requests_total{job="radiolens",route="/v1/predictions"})'},
                timeout=10).json()
            if q["status"] == "success" and q["data"]["result"] and float(q["data"]["result"][0]["value"][1]) >= 1:
                break
            assert time.monotonic() < deadline, (q, httpx.get(f"{prom}/api/v1/targets", timeout=10).text[-2000:])
            time.sleep(2)
        up = httpx.get(f"{prom}/api/v1/query", params={"query": 'up{job="radiolens"}'}, timeout=10).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        print(f"[compose] prediction scraped by Prometheus: {q['data']['result'][0]['value'][1]} request(s)")
        # Every query of the provisioned Grafana dashboard is valid PromQL for this Prometheus.
        dash = json.loads(DASHBOARD.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                a = httpx.get(f"{prom}/api/v1/query", params={"query": target["expr"]}, timeout=10).json()
                assert a["status"] == "success", (panel["title"], target["expr"], a)

        # Orthanc: authentication on, the DICOMweb plugin loaded, the credentials from the secret file.
        users = json.loads(subprocess.run(["cat", str(secrets / "orthanc-credentials.json")], capture_output=True,
                                          text=True, check=True).stdout)["RegisteredUsers"]
        auth = next(iter(users.items()))
        orthanc = f"http://127.0.0.1:{ports['orthanc_http']}"
        assert httpx.get(f"{orthanc}/system", timeout=10).status_code == 401
        assert "dicom-web" in httpx.get(f"{orthanc}/plugins", auth=auth, timeout=10).json()
        assert httpx.get(f"{orthanc}/dicom-web/studies", auth=auth, timeout=10).status_code == 200

        # The PACS round trip: the DICOM stored in Orthanc, forwarded by Orthanc (C-STORE) to the gateway, whose
        # TID 1500 SR comes back into the same study in Orthanc.
        stored = httpx.post(f"{orthanc}/instances", content=siim_dicom.read_bytes(), auth=auth, timeout=60)
        assert stored.status_code == 200, stored.text
        study = stored.json()["ParentStudy"]
        sent = httpx.post(f"{orthanc}/modalities/radiolens/store", content=stored.json()["ID"], auth=auth,
                          timeout=120)
        assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 240
        while True:
            classes = [httpx.get(f"{orthanc}/instances/{i['ID']}/simplified-tags", auth=auth, timeout=10)
                       .json().get("SOPClassUID") for i in
                       httpx.get(f"{orthanc}/studies/{study}/instances", auth=auth, timeout=10).json()]
            if SR_CLASS in classes:
                break
            assert time.monotonic() < deadline, (classes, _run("podman", "logs", "--tail", "40",
                                                               containers["radiolens-gateway"], check=False).stderr)
            time.sleep(2)
        print(f"[compose] PACS round trip: the study in Orthanc holds {len(classes)} instances {sorted(classes)}")

        # Hardening as declared: the service runs as 10001 on a read-only root filesystem.
        assert _run("podman", "exec", containers["radiolens"], "id", "-u").stdout.strip() == str(UID)
        ro = _run("podman", "exec", containers["radiolens"], "touch", "/opt/probe", check=False)
        assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    finally:
        t_down = time.monotonic()
        down = _run(*compose, "down", "-v", env=env, check=False, timeout=300)
        print(f"[compose] down -v: {time.monotonic() - t_down:.1f} s (rc {down.returncode})")
        # podman-compose 1.0.3 leaves the project's network behind
        _run("podman", "network", "rm", "-f", f"{project}_default", check=False)
    left = _run("podman", "ps", "-a", "--filter", f"name={project}", "--format", "{{.Names}}").stdout.split()
    assert left == []
    volumes = _run("podman", "volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in volumes if v.startswith(project)]
