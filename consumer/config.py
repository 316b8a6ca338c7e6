"""Settings from the environment (or `.env`), with one clear line naming a bad variable.

The SPEC §7 names are the contract; the `CONSUMER_*`, `DLQ_*` and extra `ITERABLE_*`
variables tune the pipeline. `KAFKA_CONFIG_*` passes any librdkafka property through:
`KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.endpoints import Endpoint
from consumer.errors import ConfigError

KAFKA_CONFIG_PREFIX = "KAFKA_CONFIG_"
# librdkafka properties a deployment must not override: the delivery guarantees rest on them.
_OWNED = frozenset(
    {
        "group.id",
        "bootstrap.servers",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.protocol",
        "group.remote.assignor",
    }
)
# With the next-generation protocol these live on the broker (`group.consumer.*`), and
# librdkafka refuses them: say so at start, naming the variable, instead of a traceback.
_BROKER_SIDE = frozenset(
    {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"}
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(min_length=1)
    kafka_group_id: str = Field(default="iterable-consumer", min_length=1)
    # KIP-848 with the broker's range assignor: partition i of both device topics on one
    # member, incremental rebalances. `classic` (eager range) for brokers before Kafka 4.0.
    kafka_group_protocol: Literal["consumer", "classic"] = "consumer"
    topic_user_changed: str = Field(default="user.changed", min_length=1)
    topic_device_registered: str = Field(default="device.registered", min_length=1)
    topic_push_revoked: str = Field(default="push.permission.revoked", min_length=1)

    iterable_api_key: SecretStr
    iterable_region: Literal["us", "eu"] = "us"
    # Local emulators and tests only: over http:// the API key travels in clear.
    iterable_allow_insecure_http: bool = False
    iterable_base_url: str | None = None
    iterable_project_type: Literal["email", "userId", "hybrid"] = "hybrid"
    iterable_prefer_user_id: bool = True
    # exclusive: a registration disables its token on every other profile first (handoff).
    iterable_device_token_ownership: Literal["shared", "exclusive"] = Field(default="shared")
    iterable_user_update_mode: Literal["single", "bulk"] = "single"
    iterable_bulk_max_users: int = Field(default=1000, ge=1)
    iterable_bulk_linger_seconds: float = Field(default=0.2, gt=0)
    iterable_max_connections: int = Field(default=128, ge=1)
    iterable_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    iterable_read_timeout_seconds: float = Field(default=30.0, gt=0)
    iterable_max_attempts: int | None = Field(default=None, ge=1)
    iterable_ca_bundle: str | None = None
    # "users/update=400,users/bulkUpdate=4" overrides the client-side pace per endpoint;
    # "off" removes it (benchmarks against an unlimited emulator; never in production).
    iterable_rate_limits: str | None = None

    metrics_port: int = Field(default=9400, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    consumer_max_in_flight: int = Field(default=64, ge=1)
    consumer_max_buffered: int = Field(default=5_000, ge=1)
    consumer_max_buffered_per_partition: int = Field(default=2_000, ge=1)
    consumer_max_event_bytes: int = Field(default=1024 * 1024, ge=1024)
    consumer_commit_interval_seconds: float = Field(default=1.0, gt=0)
    consumer_shutdown_grace_seconds: float = Field(default=25.0, ge=0)
    consumer_revoke_drain_seconds: float = Field(default=20.0, ge=0)
    consumer_liveness_timeout_seconds: float = Field(default=60.0, gt=0)
    consumer_credentials_probe_seconds: float = Field(default=30.0, gt=0)
    consumer_dedup_window: int = Field(default=100_000, ge=1)
    consumer_device_guard_size: int = Field(default=100_000, ge=1)
    consumer_device_lookback_records: int = Field(default=10_000, ge=0)

    dlq_topic_suffix: str = Field(default=".dlq", min_length=1)
    dlq_breaker_ratio: float = Field(default=0.5, gt=0, le=1)
    dlq_breaker_window_seconds: float = Field(default=60.0, gt=0)
    dlq_breaker_min_events: int = Field(default=20, ge=1)
    dlq_breaker_cooldown_seconds: float = Field(default=60.0, gt=0)

    @field_validator("iterable_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("iterable_base_url")
    @classmethod
    def _not_in_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (
            value
            and value.startswith("http://")
            and not info.data.get("iterable_allow_insecure_http")
        ):
            raise ValueError(
                "http:// would send the API key in clear; use https:// "
                "(ITERABLE_ALLOW_INSECURE_HTTP=true is for local emulators and tests only)"
            )
        return value

    @field_validator("iterable_ca_bundle")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load` reads the environment and `.env` itself, so tests can pass a clean mapping.
        return (init_settings,)

    @field_validator("iterable_rate_limits")
    @classmethod
    def _rates(cls, value: str | None) -> str | None:
        if value is not None and value != "off":
            rate_overrides(value)
        return value

    @property
    def topics(self) -> dict[str, str]:
        """Topic name → the event type it carries."""
        return {
            self.topic_user_changed: "user.changed",
            self.topic_device_registered: "device.registered",
            self.topic_push_revoked: "push.permission.revoked",
        }


def environment(env_file: Path | None = Path(".env")) -> dict[str, str]:
    """The process environment over the `.env` file's values."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    return {**values, **os.environ}


def load(environ: Mapping[str, str]) -> Settings:
    """Read the settings, or raise `ConfigError` naming the first bad variable."""
    fields = Settings.model_fields
    values: dict[str, Any] = {
        k.lower(): v for k, v in environ.items() if k.lower() in fields and k.isupper()
    }
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        variable = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        reason = "is required" if error["type"] == "missing" else error["msg"]
        raise ConfigError(variable, reason.removeprefix("Value error, ")) from None


def kafka_passthrough(
    environ: Mapping[str, str], group_protocol: str = "consumer"
) -> dict[str, str]:
    """librdkafka properties from `KAFKA_CONFIG_*` variables."""
    properties: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(KAFKA_CONFIG_PREFIX) or name == KAFKA_CONFIG_PREFIX:
            continue
        key = name.removeprefix(KAFKA_CONFIG_PREFIX).lower().replace("_", ".")
        if key in _OWNED:
            raise ConfigError(name, f"{key} is managed by the service and cannot be overridden")
        if group_protocol == "consumer" and key in _BROKER_SIDE:
            raise ConfigError(
                name,
                f"{key} is set on the broker with KAFKA_GROUP_PROTOCOL=consumer"
                " (group.consumer.* broker or group configs)",
            )
        properties[key] = value
    return properties


def rate_overrides(text: str) -> dict[str, float]:
    """Parse `endpoint=rps,…`; raises ValueError naming the bad entry."""
    rates: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        endpoint, _, rate = entry.partition("=")
        if endpoint.strip() not in {e.value for e in Endpoint}:
            raise ValueError(f"unknown endpoint in {entry!r}; use e.g. users/update")
        try:
            rates[endpoint.strip()] = float(rate)
        except ValueError:
            raise ValueError(f"expected endpoint=requests_per_second, got {entry!r}") from None
        if rates[endpoint.strip()] <= 0:
            raise ValueError(f"a rate must be positive, got {entry!r}")
    return rates


def refused_property(reason: str, properties: Mapping[str, str]) -> ConfigError:
    """librdkafka refused a `KAFKA_CONFIG_*` property: name the variable, never the value."""
    named = [key for key in properties if f'"{key}"' in reason or f"`{key}`" in reason]
    if not named:
        return ConfigError(
            f"{KAFKA_CONFIG_PREFIX}*", f"librdkafka refuses the configuration: {reason}"
        )
    key = named[0]
    variable = KAFKA_CONFIG_PREFIX + key.upper().replace(".", "_")
    if "No such configuration property" in reason:
        return ConfigError(variable, f"librdkafka has no property {key}")
    if properties[key] in reason:
        return ConfigError(variable, "librdkafka refuses this value")
    return ConfigError(variable, f"librdkafka refuses it: {reason}")
