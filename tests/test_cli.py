"""The command line, driven through `main` as a user would drive the script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from consumer.cli import main
from consumer.schema import event_schema


def test_schema_prints_one_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "device.registered"]) == 0
    assert json.loads(capsys.readouterr().out) == event_schema("device.registered")


def test_schema_without_a_type_prints_all_three_keyed_by_type(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed) == ["device.registered", "push.permission.revoked", "user.changed"]


def test_an_unknown_type_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["schema", "user.deleted"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "schema", "user.changed"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["title"] == "user.changed"


def _run_service(**kafka_config: str) -> subprocess.CompletedProcess[str]:
    """`iterable-consumer run` as a process with these KAFKA_CONFIG_* variables (no broker)."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "ITERABLE_API_KEY": "k" * 32,
        "METRICS_PORT": "0",
        **{f"KAFKA_CONFIG_{name}": value for name, value in kafka_config.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def test_an_unknown_kafka_property_is_one_line_naming_the_variable_and_exit_2() -> None:
    result = _run_service(NO_SUCH_PROPERTY="1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "iterable-consumer: configuration error: KAFKA_CONFIG_NO_SUCH_PROPERTY: "
        "librdkafka has no property no.such.property"
    ]


def test_a_property_only_the_consumer_refuses_is_one_line_naming_the_variable_and_exit_2() -> None:
    # The dead-letter producer accepts it (a consumer property); the consumer checks its range.
    result = _run_service(FETCH_MIN_BYTES="0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("iterable-consumer: configuration error: KAFKA_CONFIG_FETCH_MIN_BYTES")
