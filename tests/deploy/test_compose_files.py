"""compose.yaml, compose.grafana.yaml, Prometheus' scrape configuration and the provisioned Grafana dashboard,
checked without starting anything (tests/deploy/test_compose.py runs the stack).

The dashboard's queries must name metrics the service really exports: a real app (the service tests' trained
model) answers one prediction, and every ``radiolens_*`` series a panel queries must be a sample name of its
``/metrics`` exposition (as a counter's ``_total``, a histogram's ``_bucket``/``_sum``/``_count`` or a gauge).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.serve.conftest import (  # noqa: F401
    app_factory,
    bundle_path,
    client,
    kermany_dir,
    kermany_samples,
    settings_factory,
)

import radiolens

ROOT = Path(radiolens.__file__).parents[2]
COMPOSE = ROOT / "deploy" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "radiolens.json"
#: What the dashboard must show (issue: request rate, latency, review flags, gate refusals, drift alerts).
REQUIRED_PANELS = {
    "Request rate": "radiolens_http_requests_total",
    "Request latency": "radiolens_http_request_duration_seconds_bucket",
    "Review flags": "radiolens_review_flags_total",
    "Input gate refusals": "radiolens_input_gate_rejections_total",
    "Drift alerts": "radiolens_drift_alert_active",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", "")}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_services_run_hardened_with_healthchecks_volumes_and_file_secrets():
    compose = _load(ROOT / "compose.yaml")
    grafana = _load(ROOT / "compose.grafana.yaml")
    services = {**compose["services"], **grafana["services"]}
    assert set(services) == {"radiolens", "radiolens-gateway", "postgres", "orthanc", "prometheus", "grafana"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), name
        assert svc.get("user") and not str(svc["user"]).startswith("0"), name  # never root
    declared_volumes = set(compose["volumes"]) | set(grafana["volumes"])
    declared_secrets = {**compose["secrets"], **grafana["secrets"]}
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert source.startswith(("./", "${")) or source in declared_volumes, (name, vol)
        for secret in svc.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in declared_secrets, name
    assert all(set(s) == {"file"} for s in declared_secrets.values())  # files, never environment values
    for radiolens_svc in (services["radiolens"], services["radiolens-gateway"]):
        assert radiolens_svc["read_only"] and radiolens_svc["init"] and radiolens_svc["cap_drop"] == ["ALL"]
        url = radiolens_svc["environment"]["RADIOLENS_DB_URL"]
        assert "@postgres:" in url and ":" not in url.split("//")[1].split("@")[0]  # no password in the URL
    for svc in services.values():  # no password or key in any environment value
        for key in svc.get("environment", {}):
            assert not re.search(r"PASSWORD$|SECRET$|KEY$", key), key


def test_prometheus_scrapes_radiolens_with_a_key_from_a_file():
    config = _load(COMPOSE / "prometheus" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "radiolens")
    assert job["static_configs"][0]["targets"] == ["radiolens:8000"]
    assert job["authorization"]["credentials_file"].startswith("/var/lib/radiolens-scrape/")
    prometheus = _load(ROOT / "compose.yaml")["services"]["prometheus"]
    assert "radiolens-scrape:/var/lib/radiolens-scrape:ro" in prometheus["volumes"]


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    datasource = _load(COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")["datasources"][0]
    provider = _load(COMPOSE / "grafana" / "provisioning" / "dashboards" / "radiolens.yaml")["providers"][0]
    grafana = _load(ROOT / "compose.grafana.yaml")["services"]["grafana"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    mount = next(v for v in grafana["volumes"] if v.startswith("./deploy/compose/grafana/dashboards:"))
    assert mount.split(":")[1] == provider["options"]["path"]
    dash = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_name_metrics_the_service_exports(client, kermany_samples):  # noqa: F811
    path, _ = kermany_samples[0]
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"),
                    files={"file": ("upload", path.read_bytes(), "image/jpeg")})
    assert r.status_code == 201, r.text
    metrics = client.get("/metrics", headers=client.keys.h("admin"))
    assert metrics.status_code == 200
    exported = {f.name + suffix for f in text_string_to_metric_families(metrics.text)
                for suffix in SUFFIXES.get(f.type, ("",))}
    titles = {title for title, _ in _exprs()}
    assert set(REQUIRED_PANELS) <= titles
    for title, metric in REQUIRED_PANELS.items():
        assert any(metric in expr for t, expr in _exprs() if t == title), title
    for title, expr in _exprs():
        names = set(re.findall(r"\bradiolens_[a-z0-9_]+", expr))
        assert names, (title, expr)
        missing = names - exported
        assert not missing, (title, missing)


@pytest.mark.parametrize("path", ["compose.yaml", "compose.grafana.yaml"])
def test_published_ports_bind_to_localhost_by_default(path):
    for svc in _load(ROOT / path)["services"].values():
        for port in svc.get("ports", []):
            assert re.search(r":-127\.0\.0\.1:\d+}", port), port
