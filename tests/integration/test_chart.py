"""The Helm chart, rendered by a real helm: lint, schema, Kubernetes and CRD schemas."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "iterable-consumer"
HELM = str(ROOT / ".venv" / "bin" / "helm")
KUBE = "1.30.0"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CRDS = ROOT / "tests" / "data" / "crds"
REQUIRED = [
    "--set",
    "kafka.bootstrapServers=kafka:9092",
    "--set",
    "iterable.apiKey.existingSecret=k",
]


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=False, timeout=60)


def render(*args: str) -> list[dict[str, Any]]:
    result = _helm("template", "rel", str(CHART), "--kube-version", KUBE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == kind)


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_lint_is_clean_in_strict_mode(values: Path) -> None:
    result = _helm("lint", "--strict", str(CHART), "-f", str(values), "--kube-version", KUBE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_rendered_manifests_match_kubernetes_and_crd_schemas(values: Path) -> None:
    for doc in render("-f", str(values)):
        crd = CRDS / f"{doc['kind']}.json"
        if crd.exists():
            schema = json.loads(crd.read_text())
            version = doc["apiVersion"].split("/")[1]
            # The CRD schema is OpenAPI v3 (close to draft 4); its (?i) patterns are Go
            # regexes that Python refuses in a schema check, so validate without one.
            errors = list(jsonschema.Draft4Validator(schema["versions"][version]).iter_errors(doc))
            assert errors == [], [e.message for e in errors]
        else:
            kubernetes_validate.validate(doc, KUBE, strict=True)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "unknownKey=1"], "additional properties"),
        (["--set", "iterable.projectType=emailish"], "/iterable/projectType"),
        (["--set", "iterable.deviceTokenOwnership=owner"], "/iterable/deviceTokenOwnership"),
        (["--set", "autoscaling.mode=both"], "/autoscaling/mode"),
        (["--set", "consumer.maxInFlight=0"], "maxInFlight"),
        (["--set", "podMonitor.interval=30"], "interval"),
        (
            ["--set", "autoscaling.mode=keda", "--set", "autoscaling.keda.maxReplicaCount=20"],
            "must not exceed",
        ),
        (
            ["--set", "terminationGracePeriodSeconds=10"],
            "must exceed consumer.shutdownGraceSeconds",
        ),
        (["--set", "kafka.config.sasl\\.password=x"], "kafka.secretConfig"),
        (
            ["--set", "serviceMonitor.enabled=true", "--set", "service.enabled=false"],
            "service.enabled",
        ),
    ],
)
def test_bad_values_are_refused_with_a_reason(args: list[str], complaint: str) -> None:
    result = _helm("template", "rel", str(CHART), "--kube-version", KUBE, *REQUIRED, *args)
    assert result.returncode != 0
    assert complaint.lower() in result.stderr.lower()


def test_missing_broker_or_key_is_refused() -> None:
    result = _helm("template", "rel", str(CHART), "--kube-version", KUBE)
    assert "kafka.bootstrapServers is required" in result.stderr
    result = _helm(
        "template",
        "rel",
        str(CHART),
        "--kube-version",
        KUBE,
        "--set",
        "kafka.bootstrapServers=k:9092",
    )
    assert "iterable.apiKey.existingSecret" in result.stderr


def test_the_pod_is_hardened_by_default() -> None:
    pod = _kind(render(*REQUIRED), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["terminationGracePeriodSeconds"] > 25
    probes = {
        k: container[k]["httpGet"]["path"]
        for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }


def test_every_setting_reaches_the_environment_and_the_key_comes_from_a_secret() -> None:
    env = {
        e["name"]: e
        for e in _kind(render("-f", str(CHART / "ci" / "sasl-values.yaml")), "Deployment")["spec"][
            "template"
        ]["spec"]["containers"][0]["env"]
    }
    assert env["ITERABLE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "iterable-api-key",
        "key": "api-key",
    }
    assert (
        env["KAFKA_CONFIG_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
        == "kafka-credentials"
    )
    assert env["KAFKA_CONFIG_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["ITERABLE_REGION"]["value"] == "eu"
    assert env["ITERABLE_DEVICE_TOKEN_OWNERSHIP"]["value"] == "exclusive"
    readme = (ROOT / "README.md").read_text()
    for name in env:
        if not name.startswith("KAFKA_CONFIG_"):
            assert f"`{name}`" in readme, f"{name} is set by the chart but not documented"


def test_a_changed_chart_secret_or_setting_rolls_the_pods() -> None:
    def annotations(*args: str) -> dict[str, str]:
        base = ["--set", "kafka.bootstrapServers=k:9092"]
        deployment = _kind(render(*base, *args), "Deployment")
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    first = annotations("--set", "iterable.apiKey.value=one")
    assert (
        first["checksum/secret"]
        != annotations("--set", "iterable.apiKey.value=two")["checksum/secret"]
    )
    assert (
        first["checksum/config"]
        != annotations("--set", "iterable.apiKey.value=one", "--set", "logging.level=debug")[
            "checksum/config"
        ]
    )


def test_keda_scales_on_each_topic_and_excludes_hpa() -> None:
    docs = render("-f", str(CHART / "ci" / "keda-values.yaml"))
    scaled = _kind(docs, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] <= 6
    assert {t["metadata"]["topic"] for t in scaled["spec"]["triggers"]} == {
        "user.changed",
        "device.registered",
        "push.permission.revoked",
    }
    assert not any(doc["kind"] == "HorizontalPodAutoscaler" for doc in docs)
    assert "replicas" not in _kind(docs, "Deployment")["spec"]


def test_monitoring_objects_carry_the_selector_labels_and_the_same_rules_file() -> None:
    docs = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    rule = _kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert _kind(docs, "PodMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules_file = yaml.safe_load(
        (CHART / "files" / "rules" / "iterable-consumer.rules.yaml").read_text()
    )
    shipped = json.dumps(rule["spec"]["groups"]).replace(
        "https://github.com/iterable-consumer/iterable-consumer/blob/main", "RUNBOOK_BASE_URL"
    )
    assert json.loads(shipped) == rules_file["groups"]


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_json() -> None:
    docs = render(*REQUIRED, "--set", "dashboards.labelValue=yes")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "yes"
    shipped = json.loads(configmap["data"]["iterable-consumer.json"])
    assert shipped == json.loads(
        (CHART / "files" / "dashboards" / "iterable-consumer.json").read_text()
    )


def test_the_helm_test_hook_calls_readyz() -> None:
    pod = next(d for d in render(*REQUIRED) if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/readyz" in " ".join(pod["spec"]["containers"][0]["args"])
