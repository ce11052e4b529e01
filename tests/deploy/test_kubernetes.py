"""The Kubernetes manifests (deploy/kubernetes/) render, are valid Kubernetes objects, and match the service.

``kubectl kustomize`` renders the base and the example overlay offline; every object is validated strictly
(unknown fields refused) by kubernetes-validate against the JSON schemas of Kubernetes ``K8S_VERSION``. Then
what must agree with the code is checked against the code itself, so a renamed route, option or variable
fails here: the probe paths are routes of the app's health router, the container's flags are options of
``radiolens serve``, the RADIOLENS_* variables are the ones the service reads, the placeholder secret is one
the service refuses, and the grace period outlasts uvicorn's graceful shutdown.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml

import radiolens
from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.io.deid import PUBLIC_SECRETS, load_secret
from radiolens.serve.config import DEID_SECRET_FILE_ENV
from radiolens.serve.http.app import create_app
from radiolens.serve.http.launch import GRACEFUL_SHUTDOWN_S
from radiolens.serve.http.routers import health
from radiolens.serve.store.admin import DB_URL_ENV

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = ["deploy/kubernetes/base", "deploy/kubernetes/overlays/example"]
#: The Kubernetes release whose API schemas the objects must satisfy (kubectl 1.32 renders them).
K8S_VERSION = "1.32.0"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (scripts/install-system-deps.sh "
                                "installs it); it renders the kustomizations")


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request) -> dict[str, dict]:
    """The objects of one kustomization, by kind (each kind once, except PersistentVolumeClaim: by name)."""
    out = subprocess.run([KUBECTL, "kustomize", str(ROOT / request.param)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    objects: dict[str, dict] = {}
    for doc in docs:
        key = doc["kind"] if doc["kind"] != "PersistentVolumeClaim" else f"pvc/{doc['metadata']['name']}"
        assert key not in objects, f"two {key} objects"
        objects[key] = doc
    return objects


def _container(objects: dict[str, dict]) -> dict:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_every_object_is_valid_for_the_stated_kubernetes_version(rendered):
    for key, doc in rendered.items():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key}: {exc.message} at {'/'.join(map(str, exc.path))}")


def test_strict_validation_refuses_an_unknown_field():
    """The validator really is strict: a misspelt field is an error, not silently dropped."""
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": 80}], "selectr": {"a": "b"}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_objects_a_deployment_needs_are_there(rendered):
    assert {"Deployment", "Service", "Secret", "HorizontalPodAutoscaler", "NetworkPolicy",
            "PodDisruptionBudget", "pvc/radiolens-state", "pvc/radiolens-model"} <= set(rendered)


def test_probes_point_at_the_apps_health_routes(rendered):
    """The probes' paths are GET routes of the health router, which the app mounts without a prefix."""
    routes = {r.path for r in health.router.routes if "GET" in r.methods}
    container = _container(rendered)
    paths = {name: container[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe",
                                                                  "readinessProbe")}
    assert paths["readinessProbe"] == "/readyz"  # the one that checks the model, the database, shutting down
    assert set(paths.values()) <= routes
    port_names = {p["name"] for p in container["ports"]}
    assert {container[name]["httpGet"]["port"] for name in paths} <= port_names
    # create_app mounts this router as it is (no prefix); building an app here would need a trained model
    assert "app.include_router(health.router)\n" in inspect.getsource(create_app)


def test_the_command_uses_real_serve_options_and_the_exported_model(rendered):
    container = _container(rendered)
    assert container["command"] == ["radiolens", "serve"]
    serve = typer.main.get_command(cli_app).commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    flags = dict(arg.split("=", 1) for arg in container["args"])
    assert set(flags) <= options, set(flags) - options
    assert flags["--model"].endswith(".onnx")  # the lean, torch-free install serves the export
    assert int(flags["--port"]) == container["ports"][0]["containerPort"]
    assert flags["--host"] == "0.0.0.0"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and flags["--model"].startswith("/models/")
    assert flags["--state-dir"].startswith("/var/lib/radiolens/")  # below the state volume's mount


def test_environment_names_are_those_the_service_reads(rendered):
    container = _container(rendered)
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == {DB_URL_ENV, DEID_SECRET_FILE_ENV}
    assert env[DB_URL_ENV]["valueFrom"]["secretKeyRef"]["name"] == rendered["Secret"]["metadata"]["name"]
    assert env[DB_URL_ENV]["valueFrom"]["secretKeyRef"]["key"] in rendered["Secret"]["stringData"]
    secret_file = Path(env[DEID_SECRET_FILE_ENV]["value"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(secret_file.parent) in mounts  # the in-memory folder the init container copies the secret to
    volumes = {v["name"]: v for v in rendered["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[str(secret_file.parent)]["name"]]["emptyDir"]["medium"] == "Memory"
    init = rendered["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]
    assert str(secret_file) in init["command"][-1]


def test_the_placeholder_secret_is_refused_by_the_service(rendered):
    """Applying the example without replacing its de-identification secret stops the pod at start."""
    placeholder = rendered["Secret"]["stringData"]["deid-secret"]
    assert placeholder.lower() in PUBLIC_SECRETS
    with pytest.raises(ConfigError):
        load_secret(placeholder, public="refuse")
    assert "REPLACE-ME" in rendered["Secret"]["stringData"]["db-url"]


def test_pods_run_unprivileged_on_a_read_only_root(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/var/lib/radiolens"]]["persistentVolumeClaim"]["claimName"] == "radiolens-state"
    assert pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN_S


def test_autoscaler_service_and_policies_select_the_deployment(rendered):
    deployment = rendered["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert rendered["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert rendered["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = rendered["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["http"] and ingress["from"]  # only HTTP, only from peers
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (5432, "TCP")}


def test_image_is_the_serve_image_tagged_with_the_package_version(rendered):
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        name, tag = container["image"].rsplit(":", 1)
        assert name.endswith("radiolens-serve") and tag == radiolens.__version__
