"""Static validation of deploy/: images, compose and Kubernetes, by construction (no engine, no cluster here)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saim.events import TOPICS
from saim.settings import GatewaySettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS = ROOT / ".venv-deploy" / "bin"
OVERLAYS = ["base", "overlays/dev", "overlays/gpu"]
CRD_KINDS = {"KafkaTopic", "ServiceMonitor"}
# Read by the services but not deployment configuration: written by `saim up` for its own supervision.
NOT_DEPLOYMENT_SETTINGS = {"SAIM_READY_FILE"}
# Set only where certificates exist (docs/operations.md: TLS); every other setting must be set explicitly.
# Unset means something: TLS off, and every slice of a series (SAIM_MAX_SLICES is only a scoring/training budget).
OPTIONAL_SETTINGS = {
    "SAIM_TLS_CERT_FILE",
    "SAIM_TLS_KEY_FILE",
    "SAIM_TLS_CA_FILE",
    "SAIM_TLS_SERVER_NAME",
    "SAIM_MAX_SLICES",
    "SAIM_SELECTOR_ADVERTISE",  # unset: the host's name; set per selector (test_selectors_lead_and_stand_by)
}
SECRETS = {"SAIM_S3_ACCESS_KEY", "SAIM_S3_SECRET_KEY", "SAIM_ADMIN_TOKEN", "SAIM_SERVICE_TOKEN"}
GATEWAY = "saim-gateway"
# The gateway's settings a deployment sets (the rest: TLS to the services, and the image's own SAIM_WEB_ROOT).
GATEWAY_OPTIONAL = {"SAIM_TLS_CA_FILE", "SAIM_TLS_SERVER_NAME", "SAIM_WEB_ROOT", "SAIM_READY_FILE"}


def gateway_settings() -> tuple[set[str], set[str]]:
    """(every setting the gateway reads, those a deployment must set)."""
    every = {f"SAIM_{name.upper()}" for name in GatewaySettings.model_fields}
    return every, every - GATEWAY_OPTIONAL


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make deploy-tools` (make test does)")
    return str(path)


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize) is required to render deploy/k8s")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / overlay)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory) -> tuple[str, list[dict], Path]:
    docs = render(request.param)
    path = tmp_path_factory.mktemp("render") / f"{request.param.replace('/', '-')}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return request.param, docs, path


def _nested() -> dict[str, type]:
    """Settings that are a core dataclass (SAIM_MODEL__*, SAIM_TRAIN__*): their defaults live in saim.model.config."""
    return {n: f.annotation for n, f in ServiceSettings.model_fields.items() if dataclasses.is_dataclass(f.annotation)}


def settings_read_by_services() -> set[str]:
    """Every flat setting, which a deployment must set explicitly."""
    names = {f"SAIM_{name.upper()}" for name in ServiceSettings.model_fields if name not in _nested()}
    source = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    names |= set(re.findall(r"SAIM_[A-Z_]+", source))
    return names - NOT_DEPLOYMENT_SETTINGS - OPTIONAL_SETTINGS


def known_settings() -> set[str]:
    """Every variable the services read: flat, nested (SAIM_TRAIN__EPOCHS) and the secrets directory."""
    nested = {
        f"SAIM_{group.upper()}__{f.name.upper()}" for group, cls in _nested().items() for f in dataclasses.fields(cls)
    }
    return settings_read_by_services() | nested | NOT_DEPLOYMENT_SETTINGS | OPTIONAL_SETTINGS | {"SAIM_SECRETS_DIR"}


def test_every_overlay_validates_strictly_against_kubernetes_schemas(rendered):
    name, docs, path = rendered
    out = subprocess.run([tool("kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    passed = re.findall(r"passed for resource (\S+)/", out.stdout)
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert len(passed) == len(core), out.stdout
    # CRD kinds have no bundled schema: check the fields their operators require.
    for d in docs:
        if d["kind"] == "KafkaTopic":
            assert d["metadata"]["labels"]["strimzi.io/cluster"] and d["spec"]["partitions"] >= 1
        if d["kind"] == "ServiceMonitor":
            assert d["spec"]["endpoints"][0]["port"] == "metrics"


def test_security_scan_passes(rendered):
    _, _, path = rendered
    out = subprocess.run(
        [tool("checkov"), "--config-file", str(DEPLOY / ".checkov.yaml"), "-f", str(path), "--framework", "kubernetes"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert re.search(r"Failed checks: 0", out.stdout), out.stdout[-2000:]


def test_dockerfile_security_scan_passes():
    out = subprocess.run(
        [
            tool("checkov"),
            "--config-file",
            str(DEPLOY / ".checkov.yaml"),
            "-f",
            str(DEPLOY / "docker" / "Dockerfile"),
            "--framework",
            "dockerfile",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def test_compose_validates_against_the_compose_specification():
    out = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose" / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hardened_pods_and_native_grpc_probes(rendered):
    name, docs, _ = rendered
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    assert {d["metadata"]["name"] for d in workloads} == {
        "saim-annotator",
        "saim-selector",
        "saim-scorer",
        "saim-trainer",
        "saim-bootstrap",
        GATEWAY,
    }
    for d in workloads:
        pod = d["spec"]["template"]["spec"]
        assert (
            pod["securityContext"]["runAsNonRoot"]
            and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        )
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert (
                sc["readOnlyRootFilesystem"]
                and not sc["allowPrivilegeEscalation"]
                and sc["capabilities"]["drop"] == ["ALL"]
            )
            assert c["resources"]["requests"] and c["resources"]["limits"]
            if d["metadata"]["name"] == GATEWAY:  # HTTP: alive while the process answers, ready with the annotator
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            elif d["kind"] == "Deployment":
                assert c["readinessProbe"]["grpc"]["port"] == 50051 and "service" not in c["readinessProbe"]["grpc"]
                assert c["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    kinds = {d["kind"] for d in docs}
    assert {"PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor", "KafkaTopic"} <= kinds
    if name == "overlays/gpu":
        gpu = {
            d["metadata"]["name"]
            for d in workloads
            if d["kind"] == "Deployment"
            and "nvidia.com/gpu" in d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        }
        assert gpu == {"saim-annotator", "saim-trainer", "saim-scorer"}


def test_every_setting_the_services_read_is_set_in_compose_and_kubernetes(rendered):
    _, docs, _ = rendered
    needed = settings_read_by_services()
    cfg = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "saim-config")["data"]
    secret_doc = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "saim-secrets")
    secret = {k.upper() for k in secret_doc["stringData"]}  # files in SAIM_SECRETS_DIR, named like the variable
    for d in docs:
        if d["metadata"]["name"] == GATEWAY and d["kind"] == "Deployment":
            check_gateway_pod(docs, d)
        elif d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            container = pod["containers"][0]
            per_pod = {e["name"] for e in container.get("env", [])}
            missing = needed - set(cfg) - secret - per_pod
            assert not missing or d["kind"] == "Job", f"{d['metadata']['name']}: {sorted(missing)} not set"
            secret_volumes = {
                v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "saim-secrets"
            }
            mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in secret_volumes}
            assert mounts == {cfg["SAIM_SECRETS_DIR"]}, d["metadata"]["name"]
    assert secret == SECRETS and not secret & set(cfg)
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    for svc in ("annotator", "selector", "scorer", "trainer"):
        env = compose["services"][svc]["environment"]
        missing = needed - set(env)
        assert not missing, f"compose {svc}: {sorted(missing)} not set"
        unknown = {k for k in env if k.startswith("SAIM_")} - known_settings()
        assert not unknown, f"compose {svc}: {sorted(unknown)} are read by no service"
    unknown = set(cfg) - known_settings()
    assert not unknown, f"ConfigMap saim-config: {sorted(unknown)} are read by no service"
    every, needed_gw = gateway_settings()
    env = compose["services"]["gateway"]["environment"]
    assert needed_gw <= set(env) <= every, f"compose gateway: {sorted(needed_gw ^ set(env))}"


def check_gateway_pod(docs: list[dict], d: dict) -> None:
    """The gateway's settings come from its own ConfigMap, and it gets no secret (no bucket, no shared token)."""
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    names = [ref["configMapRef"]["name"] for ref in container["envFrom"]]
    cfg = next(x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == names[0])["data"]
    every, needed = gateway_settings()
    assert needed <= set(cfg) <= every, sorted(needed ^ set(cfg))
    assert not any("secret" in v for v in pod["volumes"]) and not container.get("env")


def test_ports_and_probes_match_what_the_servers_listen_on(rendered):
    _, docs, _ = rendered
    cfg = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    grpc_port, metrics_port = int(cfg["SAIM_GRPC_PORT"]), int(cfg["SAIM_METRICS_PORT"])
    gw = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "saim-gateway-config")["data"]
    for d in docs:
        gateway = d["metadata"]["name"] == GATEWAY
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            if gateway:
                assert ports == {"http": int(gw["SAIM_HTTP_PORT"]), "metrics": int(gw["SAIM_METRICS_PORT"])}
                assert c["readinessProbe"]["httpGet"]["port"] == "http" == c["startupProbe"]["httpGet"]["port"]
            else:
                assert ports == {"grpc": grpc_port, "metrics": metrics_port}
                assert c["readinessProbe"]["grpc"]["port"] == grpc_port == c["startupProbe"]["grpc"]["port"]
        if d["kind"] == "Service":
            expected = {"http": "http", "metrics": "metrics"} if gateway else {"grpc": "grpc", "metrics": "metrics"}
            assert {p["name"]: p["targetPort"] for p in d["spec"]["ports"]} == expected
        if d["kind"] == "Ingress":  # TLS in front, to the gateway's HTTP port
            assert d["spec"]["tls"][0]["secretName"]
            backend = d["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            assert backend == {"name": GATEWAY, "port": {"name": "http"}}
    assert any(d["kind"] == "Ingress" for d in docs)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "gateway")
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": int(gw["SAIM_HTTP_PORT"])}]
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert f"SAIM_GRPC_PORT={grpc_port}" in dockerfile and f"SAIM_METRICS_PORT={metrics_port}" in dockerfile
    assert f"EXPOSE {grpc_port} {metrics_port}" in dockerfile
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    for svc in ("annotator", "selector", "trainer"):
        env = compose["services"][svc]["environment"]
        assert int(env["SAIM_GRPC_PORT"]) == grpc_port and int(env["SAIM_METRICS_PORT"]) == metrics_port
        assert all(p.endswith(f":{grpc_port}") for p in compose["services"][svc].get("ports", []))
    # production's shape: replicated annotators and gateways (no host port: the edge is the way in), three brokers
    for svc in ("annotator", "gateway", "scorer"):
        assert "ports" not in compose["services"][svc] and compose["services"][svc]["deploy"]["replicas"] >= 2
    gateway = compose["services"]["gateway"]
    assert gateway["environment"]["SAIM_ANNOTATOR_TARGET"] == f"dns:///annotator:{grpc_port}"
    http_port = gateway["environment"]["SAIM_HTTP_PORT"]
    assert compose["services"]["edge"]["ports"] == [f"{http_port}:{http_port}"]
    edge = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert f"listen {http_port};" in edge and f"server gateway:{http_port} resolve;" in edge
    brokers = [name for name in compose["services"] if name.startswith("kafka-")]
    saim_env = compose["services"]["selector"]["environment"]
    assert len(brokers) == 3 and saim_env["SAIM_KAFKA_REPLICATION_FACTOR"] == "3"
    assert saim_env["SAIM_KAFKA_BOOTSTRAP"] == ",".join(f"{b}:9092" for b in brokers)
    assert f"SAIM_HTTP_PORT={gw['SAIM_HTTP_PORT']}" in dockerfile
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert set(prom["scrape_configs"][0]["static_configs"][0]["targets"]) == {
        f"{s}:{metrics_port}" for s in ("selector-1", "selector-2", "trainer")
    }
    replicas = prom["scrape_configs"][1]["dns_sd_configs"][0]  # every replica of the scaled services
    assert replicas == {"names": ["scorer", "annotator", "gateway"], "type": "A", "port": metrics_port}
    # Kubernetes: the gateways balance over every annotator pod (a headless Service), 2 of each in every overlay
    pods = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "saim-annotator-pods")
    assert pods["spec"]["clusterIP"] == "None"
    assert gw["SAIM_ANNOTATOR_TARGET"] == f"dns:///saim-annotator-pods:{grpc_port}"


def test_every_overlay_runs_two_annotators_and_two_gateways():
    for overlay in OVERLAYS:
        docs = render(overlay)
        for name in ("saim-annotator", "saim-gateway"):
            deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
            assert deployment["spec"]["replicas"] >= 2, (overlay, name)
        hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and "annotator" in d["metadata"]["name"]]
        assert all(h["spec"]["minReplicas"] >= 2 for h in hpa), overlay


def test_selectors_lead_and_stand_by(rendered):
    """Two selectors, replaced one at a time, each advertising an address the other reaches (its pod IP), and
    allowed to reach each other; compose runs two, each with its own name, both answering to `selector`."""
    _, docs, _ = rendered
    selector = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "saim-selector")
    assert selector["spec"]["replicas"] >= 2
    assert selector["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e for e in selector["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SAIM_SELECTOR_ADVERTISE"]["value"] == "$(POD_IP):50051"
    assert "SAIM_INSTANCE_ID" in env
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    egress = policies["selector-to-selector"]["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
    assert egress == {"app.kubernetes.io/name": "saim-selector"}
    ingress = policies["grpc-ingress"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "saim-selector"}}} in ingress
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())["services"]
    names = {}
    for svc in ("selector", "selector-2"):
        env = compose[svc]["environment"]
        host = env["SAIM_SELECTOR_ADVERTISE"].split(":")[0]
        aliases = compose[svc]["networks"]["default"]["aliases"]
        assert host in [svc, *aliases] and env["SAIM_INSTANCE_ID"] == host  # a name only this selector answers to
        names[svc] = host
    assert len(set(names.values())) == 2 and "selector" in compose["selector-2"]["networks"]["default"]["aliases"]


def test_kafka_topics_match_the_code(rendered):
    _, docs, _ = rendered
    declared = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in docs if d["kind"] == "KafkaTopic"}
    assert declared == {t.name: t.partitions for t in TOPICS}


def test_images_are_multi_stage_non_root_with_grpc_healthcheck():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M))
    services = {"annotator", "selector", "trainer", "annotator-cuda", "trainer-cuda", "selector-cuda"}
    assert services | {"tools", "gateway", "web"} <= targets
    assert "npm ci" in text and "COPY --from=web" in text  # the pages are built from the committed lock
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text and "saim-healthcheck" in text
    runtime = text[text.index("AS runtime\n") :]
    assert "pip install" not in runtime and "apt-get" not in runtime  # no build tools in the final stages
    assert (ROOT / ".dockerignore").exists()


def test_healthcheck_entry_point_reports_unreachable_server():
    out = subprocess.run([sys.executable, "-m", "saim.rpc.healthcheck", "127.0.0.1:9"], capture_output=True, text=True)
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr
