"""Alerts and dashboard, checked with promtool and against the metrics a real run exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    StreamBuilder,
    all_committed,
    consumer_env,
    create_topics,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = str(ROOT / ".venv" / "bin" / "promtool")
FILES = ROOT / "helm" / "iterable-consumer" / "files"
RULES = FILES / "rules" / "iterable-consumer.rules.yaml"
DASHBOARD = json.loads((FILES / "dashboards" / "iterable-consumer.json").read_text())
METRIC = re.compile(r"\b((?:iterable_consumer|process)_[a-z_]+)\b")
# Series Prometheus adds itself rather than the service.
SYNTHETIC = {"up"}


def _targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def _concrete(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$namespace", "default")
        .replace("$pod", ".*")
    )


def _rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_file() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests() -> None:
    tests = ROOT / "tests" / "rules" / "iterable-consumer.test.yaml"
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert tested == {name for name, _ in _rule_exprs()}


def test_every_alert_has_summary_description_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbook, re.M)
    }
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            annotations = rule["annotations"]
            assert annotations["summary"], rule["alert"]
            assert annotations["description"], rule["alert"]
            assert annotations["runbook_url"].split("#")[1] in anchors, rule["alert"]


def test_the_dashboard_provisions_through_a_sidecar() -> None:
    assert "__inputs" not in DASHBOARD
    assert "__requires" not in DASHBOARD
    assert DASHBOARD["uid"] == "iterable-consumer"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel, target in _targets():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert not re.search(r"\[\d+[smh]\]", target["expr"]), (
            f"{panel['title']}: use $__rate_interval"
        )
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Processing", "Iterable API", "Kafka", "Saturation"]


def test_every_panel_query_parses() -> None:
    for panel, target in _targets():
        try:
            promql_parser.parse(_concrete(target["expr"]))
        except Exception as exc:  # noqa: BLE001 - the parser raises plain exceptions
            pytest.fail(f"{panel['title']}: {exc}")


def test_every_alert_is_visible_on_a_panel() -> None:
    shown = {m for _, target in _targets() for m in METRIC.findall(target["expr"])}
    for alert, expr in _rule_exprs():
        assert set(METRIC.findall(expr)) <= shown, f"{alert} watches a metric no panel shows"


@pytest.fixture(scope="module")
def exposition(kafka: KafkaTools, emulators: dict[str, EmulatorProcess]) -> Iterator[str]:
    """/metrics of a consumer that processed good and bad events against the emulator."""
    emulator = emulators["hybrid"]
    emulator.reset()
    topics = create_topics(kafka)
    group = kafka.unique_name("group")
    produce(kafka, topics, StreamBuilder(users=5).events(100))
    kafka.produce(topics.names["user.changed"], [Record(b"bad", b"{not json")])
    env = consumer_env(kafka, emulator, group, topics.env(), ITERABLE_RATE_LIMITS="users/update=50")
    process = ConsumerProcess(env).start()
    try:
        wait_for(lambda: all_committed(kafka, group, topics), 60, "the run to finish")
        wait_for(
            lambda: "iterable_consumer_lag_records{" in process.metrics(),
            15,
            "librdkafka statistics",
        )
        yield process.metrics()
    finally:
        process.stop()


def _families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
                kind, []
            )
            names.update(name + s for s in suffixes)
    return names


def test_every_metric_a_panel_or_alert_names_is_exported(exposition: str) -> None:
    exported = _families(exposition)
    wanted = {m for _, t in _targets() for m in METRIC.findall(t["expr"])}
    wanted |= {m for _, expr in _rule_exprs() for m in METRIC.findall(expr)}
    assert wanted - SYNTHETIC - exported == set()


def test_the_exposition_passes_promtool_and_names_no_person(exposition: str) -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "@example.com" not in exposition
    assert not re.search(r'="u\d+"', exposition)  # no userId as a label value
