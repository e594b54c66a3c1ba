"""The deployment files agree with the code: they parse, the Kubernetes pod exposes only
the sidecar, the configs they ship validate, and every metric and label the alerts and the
dashboard use is one the sidecar exports. `promtool` checks run when it is on PATH
(`bash bench/setup.sh --promtool` installs it)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config import parse_text
from sidecar.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sidecar.json"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
# Labels Prometheus itself or the scrape configs in deploy/prometheus/ attach.
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod", "le", "quantile"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created", "")}
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in docs(path):
            by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(kind: str) -> dict[str, Any]:
    objects = k8s_objects()[kind]
    assert len(objects) == 1, f"expected one {kind}, found {len(objects)}"
    return objects[0]


def containers() -> dict[str, dict[str, Any]]:
    spec = one("Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    assert docs(path), f"{path} holds no document"


def test_the_dashboard_is_valid_json_with_unique_panel_ids_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all(p.get("targets") for p in panels if p["type"] != "row")


def test_the_grafana_datasource_uid_is_the_one_the_dashboard_selects() -> None:
    datasources = docs(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]
    uids = {d["uid"] for d in datasources["datasources"]}
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    ds_var = next(v for v in variables if v["type"] == "datasource")
    assert ds_var["current"]["value"] in uids


# --------------------------------------------------------------------------- kubernetes

def test_the_service_selects_the_pod_and_exposes_only_the_sidecar_port() -> None:
    deployment, service = one("Deployment"), one("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    sidecar_ports = {p["name"]: p["containerPort"] for p in containers()["sidecar"]["ports"]}
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    assert sidecar_ports.get(target, target) == 8000
    assert target not in ("admin", 9901, 8080)


def test_only_the_sidecar_declares_ports_and_the_backend_none() -> None:
    c = containers()
    assert set(c) == {"backend", "sidecar"}
    assert "ports" not in c["backend"]
    assert {p["containerPort"] for p in c["sidecar"]["ports"]} == {8000, 9901}


def test_the_network_policy_admits_the_sidecar_port_and_admin_only_from_monitoring() -> None:
    policy = one("NetworkPolicy")
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports: dict[int, list[Any]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            ports.setdefault(port["port"], []).append(rule.get("from"))
    assert set(ports) == {8000, 9901}
    (admin_from,) = ports[9901]
    assert admin_from == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]


def test_every_container_is_hardened() -> None:
    spec = one("Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{container['name']} needs a writable /tmp (emptyDir)"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_use_the_admin_port_and_grace_outlasts_the_drain() -> None:
    sidecar = containers()["sidecar"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    config = parse_text(one("ConfigMap")["data"]["sidecar.yaml"], env=fake_env()).config
    assert config.admin.listen.endswith(":9901")
    assert config.server.listen.endswith(":8000")
    assert config.upstream.url.startswith("http://127.0.0.1:")
    pre_stop = int(sidecar["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + config.server.shutdown_grace


# --------------------------------------------------------------------------- configs

def env_refs(config_text: str) -> set[str]:
    """``${VAR}`` names used in a config's values (comments do not count)."""
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
        elif isinstance(node, str):
            yield from ENV_RE.findall(node)
    return set(walk(yaml.safe_load(config_text)))


@functools.cache
def fake_env() -> dict[str, str]:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"secret", salt=salt, n=2**14, r=8, p=1, dklen=32)
    scrypt = (f"scrypt${2**14}$8$1${base64.b64encode(salt).decode()}"
              f"${base64.b64encode(digest).decode()}")
    return {"MERCHANT_A_SECRET_HASH": scrypt, "REFUNDS_BOT_SECRET_HASH": scrypt,
            "REDIS_PASSWORD": "pw", "AUDIT_CHAIN_KEY": "chain-key"}


def test_the_compose_config_validates_and_its_variables_come_from_compose() -> None:
    text = (DEPLOY / "config" / "sidecar.yaml").read_text()
    parse_text(text, source="deploy/config/sidecar.yaml", env=fake_env())
    compose = docs(DEPLOY / "compose.yaml")[0]
    assert env_refs(text) <= set(compose["services"]["sidecar"]["environment"])


def test_the_configmap_config_validates_and_its_variables_are_in_the_secret() -> None:
    text = one("ConfigMap")["data"]["sidecar.yaml"]
    parse_text(text, source="deploy/k8s/configmap.yaml", env=fake_env())
    secrets = {d["metadata"]["name"]: d for d in docs(DEPLOY / "k8s" / "secret.example.yaml")}
    env_secret = containers()["sidecar"]["envFrom"][0]["secretRef"]["name"]
    assert env_refs(text) <= set(secrets[env_secret]["stringData"])
    key_secret = next(v["secret"]["secretName"] for v in
                      one("Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    files = {f"/etc/sidecar-keys/{name}" for name in secrets[key_secret]["stringData"]}
    assert set(re.findall(r"/etc/sidecar-keys/[\w.-]+", text)) <= files


def test_compose_publishes_only_the_sidecar_port_of_the_shared_namespace() -> None:
    services = docs(DEPLOY / "compose.yaml")[0]["services"]
    assert services["sidecar"]["network_mode"] == "service:pod"
    assert services["backend"]["network_mode"] == "service:pod"
    assert services["pod"]["ports"] == ["127.0.0.1:8000:8000"]
    scrape = docs(PROMETHEUS / "prometheus.yml")[0]["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["pod:9901"]


def test_the_dockerfile_runs_unprivileged_with_a_stdlib_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", text, re.M)
    assert re.search(r"^ARG UID=10001$", text, re.M)
    assert re.search(r"^EXPOSE 8000 9901$", text, re.M)
    assert 'ENTRYPOINT ["sidecar"]' in text
    healthcheck = text[text.index("HEALTHCHECK"):text.index("ENTRYPOINT")]
    assert "urllib.request" in healthcheck and "127.0.0.1:9901/healthz" in healthcheck
    assert "curl" not in healthcheck


# --------------------------------------------------------------------------- metrics

def exported() -> tuple[dict[str, str], dict[str, set[str]]]:
    """series name -> family, and family -> label names, from the sidecar's own registry."""
    metrics = Metrics()
    series: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for suffix in SUFFIXES[family.type]:
            series[family.name + suffix] = family.name
    labels = {m._name: set(m._labelnames) for m in vars(metrics).values()
              if isinstance(m, MetricWrapperBase)}
    return series, labels


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard target."""
    for group in docs(PROMETHEUS / "alerts.yml")[0]["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yml {rule['alert']}", rule["expr"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield f"dashboard {panel['title']!r}", target["expr"]


def test_every_metric_and_label_the_alerts_and_dashboard_use_is_exported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    series, labels = exported()
    problems, seen = [], set()
    for where, expr in queries():
        used = set(re.findall(r"\bsidecar_[a-z0-9_]+", expr))
        unknown = used - set(series)
        problems += [f"{where}: {name} is not exported" for name in sorted(unknown)]
        families = {series[n] for n in used - unknown}
        seen |= families
        allowed = set().union(*(labels[f] for f in families), TARGET_LABELS)
        for name, selector in re.findall(r"\b(sidecar_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector):
                if name in series and label not in labels[series[name]] | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (s.strip() for s in group.split(","))):
                if label not in allowed:
                    problems.append(f"{where}: groups by unknown label {label!r}")
    assert not problems, "\n".join(problems)
    assert seen == set(labels), (
        f"families on no dashboard panel or alert: {sorted(set(labels) - seen)}; add a panel "
        "to deploy/grafana/dashboards/sidecar.json")


def test_every_exported_family_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    text = (REPO / "docs" / "metrics.md").read_text()
    _, labels = exported()
    missing = sorted(f for f in labels if f not in text)
    assert not missing, f"not in docs/metrics.md: {missing}"


# --------------------------------------------------------------------------- promtool

@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH (bash bench/setup.sh --promtool installs it)")
    return path


@pytest.mark.parametrize("args", [
    ["check", "rules", "alerts.yml"],
    ["test", "rules", "alerts_test.yml"],
    ["check", "config", "prometheus.yml"],
], ids=" ".join)
def test_promtool_accepts(promtool: str, args: list[str]) -> None:
    result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
