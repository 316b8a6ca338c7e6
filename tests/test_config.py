"""Configuration: SPEC §7 names, defaults, passthrough, one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumer.bulk import BulkLimits
from consumer.cli import main
from consumer.config import kafka_passthrough, load
from consumer.errors import ConfigError
from consumer.metrics import Metrics
from consumer.service import bulk_limits
from consumer.source import consumer_config

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "ITERABLE_API_KEY": "secret-key"}


def test_defaults_follow_the_spec() -> None:
    settings = load(BASE)
    assert settings.kafka_group_id == "iterable-consumer"
    assert settings.topics == {
        "user.changed": "user.changed",
        "device.registered": "device.registered",
        "push.permission.revoked": "push.permission.revoked",
    }
    assert (settings.iterable_region, settings.iterable_project_type) == ("us", "hybrid")
    assert settings.iterable_prefer_user_id is True
    assert (settings.metrics_port, settings.log_level, settings.log_format) == (
        9400,
        "info",
        "json",
    )


def test_device_tokens_are_shared_unless_ownership_is_exclusive() -> None:
    assert load(BASE).iterable_device_token_ownership == "shared"
    exclusive = load({**BASE, "ITERABLE_DEVICE_TOKEN_OWNERSHIP": "exclusive"})
    assert exclusive.iterable_device_token_ownership == "exclusive"


def test_a_bad_token_ownership_stops_the_start_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run"], environ={**BASE, "ITERABLE_DEVICE_TOKEN_OWNERSHIP": "owner"}) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "iterable-consumer: configuration error: ITERABLE_DEVICE_TOKEN_OWNERSHIP: "
    )
    assert "'shared' or 'exclusive'" in line


def test_bulk_mode_takes_its_batch_bounds() -> None:
    settings = load({**BASE, "ITERABLE_USER_UPDATE_MODE": "bulk", "ITERABLE_BULK_MAX_USERS": "500"})
    assert bulk_limits(settings) == BulkLimits(max_users=500, linger=0.2)
    assert bulk_limits(load(BASE)) is None


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"ITERABLE_API_KEY": "k"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "b"}, "ITERABLE_API_KEY"),
        ({**BASE, "METRICS_PORT": "ninety"}, "METRICS_PORT"),
        ({**BASE, "ITERABLE_PROJECT_TYPE": "emailish"}, "ITERABLE_PROJECT_TYPE"),
        ({**BASE, "ITERABLE_REGION": "ap"}, "ITERABLE_REGION"),
        ({**BASE, "ITERABLE_BASE_URL": "api.iterable.com"}, "ITERABLE_BASE_URL"),
        ({**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({**BASE, "ITERABLE_USER_UPDATE_MODE": "batch"}, "ITERABLE_USER_UPDATE_MODE"),
        ({**BASE, "ITERABLE_DEVICE_TOKEN_OWNERSHIP": "owner"}, "ITERABLE_DEVICE_TOKEN_OWNERSHIP"),
        ({**BASE, "ITERABLE_BULK_LINGER_SECONDS": "0"}, "ITERABLE_BULK_LINGER_SECONDS"),
        ({**BASE, "DLQ_BREAKER_RATIO": "2"}, "DLQ_BREAKER_RATIO"),
    ],
)
def test_a_bad_or_missing_variable_is_named(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ)
    assert caught.value.variable == variable


def test_the_secret_never_appears_in_settings_repr() -> None:
    assert "secret-key" not in repr(load(BASE))


def test_kafka_config_variables_pass_through_as_librdkafka_properties() -> None:
    assert kafka_passthrough(
        {
            "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_CONFIG_SASL_MECHANISM": "SCRAM-SHA-512",
            "OTHER": "x",
        }
    ) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}


def test_properties_the_guarantees_rest_on_cannot_be_overridden() -> None:
    with pytest.raises(ConfigError, match="KAFKA_CONFIG_ENABLE_AUTO_COMMIT"):
        kafka_passthrough({"KAFKA_CONFIG_ENABLE_AUTO_COMMIT": "true"})


def test_run_with_bad_configuration_prints_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run"], environ={"ITERABLE_API_KEY": "k"}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iterable-consumer: configuration error: KAFKA_BOOTSTRAP_SERVERS: is required"]


def test_session_timeouts_are_refused_with_the_next_generation_protocol() -> None:
    # librdkafka refuses them with group.protocol=consumer: the broker owns them (KIP-848).
    with pytest.raises(ConfigError, match=r"KAFKA_CONFIG_SESSION_TIMEOUT_MS.*broker"):
        kafka_passthrough({"KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000"})
    assert kafka_passthrough({"KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000"}, "classic") == {
        "session.timeout.ms": "6000"
    }


def test_the_default_group_protocol_co_partitions_the_device_topics() -> None:
    config = consumer_config("b:9092", "g", {}, Metrics(CollectorRegistry()))
    assert (config["group.protocol"], config["group.remote.assignor"]) == ("consumer", "range")
    classic = consumer_config("b:9092", "g", {}, Metrics(CollectorRegistry()), "classic")
    assert classic["partition.assignment.strategy"] == "range"
    assert load(BASE).kafka_group_protocol == "consumer"


def test_an_http_iterable_url_is_refused_at_start_unless_allowed_for_an_emulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The API key travels in a header: over http:// anyone on the path reads it."""
    environ = {**BASE, "ITERABLE_BASE_URL": "http://iterable.internal:8080"}
    assert main(["run"], environ=environ) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("iterable-consumer: configuration error: ITERABLE_BASE_URL: ")
    assert "ITERABLE_ALLOW_INSECURE_HTTP" in line
    allowed = load({**environ, "ITERABLE_ALLOW_INSECURE_HTTP": "true"})
    assert allowed.iterable_base_url == "http://iterable.internal:8080"
    assert load({**BASE, "ITERABLE_BASE_URL": "https://api.iterable.com"}).iterable_base_url


def test_a_missing_ca_bundle_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    environ = {**BASE, "ITERABLE_CA_BUNDLE": str(tmp_path / "absent.pem")}
    assert main(["run"], environ=environ) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("iterable-consumer: configuration error: ITERABLE_CA_BUNDLE: ")
    (tmp_path / "present.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert load({**BASE, "ITERABLE_CA_BUNDLE": str(tmp_path / "present.pem")}).iterable_ca_bundle
