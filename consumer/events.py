"""The event contract: CloudEvents 1.0 envelopes over Kafka and the three event models.

`parse` turns a Kafka message value and its headers into an `Event`, accepting both
content modes of the CloudEvents Kafka binding. Every way an event can be wrong ends in
`InvalidEvent`, whose message names the field and never echoes its value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from consumer.errors import InvalidEvent

USER_CHANGED: Final = "user.changed"
DEVICE_REGISTERED: Final = "device.registered"
PUSH_PERMISSION_REVOKED: Final = "push.permission.revoked"
EVENT_TYPES: Final = (USER_CHANGED, DEVICE_REGISTERED, PUSH_PERMISSION_REVOKED)

DEFAULT_MAX_BYTES: Final = 1024 * 1024
# Deeper JSON is almost surely a bug upstream, and costs every layer that walks it.
MAX_DEPTH: Final = 32
PLATFORMS: Final = ("APNS", "APNS_SANDBOX", "GCM")

# The rules below are shared with the JSON Schemas (consumer.schema), so the two agree.
_LOCAL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN: Final = rf"^{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$"
EMAIL_MAX_LENGTH: Final = 254
USER_ID_PATTERN: Final = r"^[ -~]{0,51}[!-~]$"
USER_ID_MAX_LENGTH: Final = 52
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
TIME_PATTERN: Final = rf"^{_DATE_TIME}(?:[Zz]|[+-][0-9]{{2}}:[0-9]{{2}})$"
NOT_BLANK_PATTERN: Final = r"\S"

_EMAIL = re.compile(EMAIL_PATTERN)
_USER_ID = re.compile(USER_ID_PATTERN)
_SURROGATE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_TIME = re.compile(TIME_PATTERN)
_CE_PREFIX = "ce_"
_STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def _normalise_email(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _check_email(value: str) -> str:
    if len(value) > EMAIL_MAX_LENGTH or not _EMAIL.match(value):
        raise ValueError("is not a valid email address")
    return value


def _check_user_id(value: str) -> str:
    if not _USER_ID.match(value):
        raise ValueError(
            f"must be 1 to {USER_ID_MAX_LENGTH} printable ASCII characters without a trailing space"
        )
    return value


def _check_not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _parse_time(value: object) -> object:
    if not isinstance(value, str):
        return value  # the strict datetime check rejects it with a type error
    if not _TIME.match(value):
        raise ValueError("must be an RFC 3339 timestamp with a time zone")
    return datetime.fromisoformat(value.upper())


Email = Annotated[str, BeforeValidator(_normalise_email), AfterValidator(_check_email)]
UserId = Annotated[str, AfterValidator(_check_user_id)]
NotBlank = Annotated[str, AfterValidator(_check_not_blank)]
Timestamp = Annotated[datetime, BeforeValidator(_parse_time)]
DataFields = dict[str, Any]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Identified(_Data):
    email: Email | None = None
    userId: UserId | None = None

    @model_validator(mode="after")
    def _needs_an_identifier(self) -> _Identified:
        if self.email is None and self.userId is None:
            raise ValueError("email or userId is required")
        return self


class UserChanged(_Identified):
    """`user.changed`: upsert a profile, optionally after an email change."""

    dataFields: DataFields = Field(default_factory=dict)
    mergeNestedObjects: bool = False
    preferUserId: bool | None = None
    previousEmail: Email | None = None

    @model_validator(mode="after")
    def _previous_email_needs_email(self) -> UserChanged:
        if self.previousEmail is not None and self.email is None:
            raise ValueError("previousEmail requires email (the new address)")
        return self


class Device(_Data):
    token: NotBlank
    platform: Literal["APNS", "APNS_SANDBOX", "GCM"]
    applicationName: NotBlank
    dataFields: DataFields = Field(default_factory=dict)


class DeviceRegistered(_Identified):
    """`device.registered`: register (or re-enable) a push token on a profile."""

    device: Device


class PushPermissionRevoked(_Data):
    """`push.permission.revoked`: disable a token on one profile, or on all without ids."""

    token: NotBlank
    email: Email | None = None
    userId: UserId | None = None


EventData = UserChanged | DeviceRegistered | PushPermissionRevoked

DATA_MODELS: Final[
    Mapping[str, type[UserChanged] | type[DeviceRegistered] | type[PushPermissionRevoked]]
] = {
    USER_CHANGED: UserChanged,
    DEVICE_REGISTERED: DeviceRegistered,
    PUSH_PERMISSION_REVOKED: PushPermissionRevoked,
}


class _Envelope(BaseModel):
    # Unknown extension attributes are ignored, as CloudEvents asks.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    specversion: Literal["1.0"]
    id: NotBlank
    source: NotBlank
    type: NotBlank
    time: Timestamp | None = None
    subject: str | None = None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event: the CloudEvents attributes the service uses, and its data."""

    id: str
    source: str
    type: str
    time: datetime | None
    subject: str | None
    data: EventData


Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


def parse(
    value: bytes | None,
    headers: Headers = None,
    *,
    expected_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event:
    """Parse one Kafka message into an `Event`, or raise `InvalidEvent` naming the field."""
    if value is None:
        raise InvalidEvent("value", "is empty (a tombstone is not an event)")
    if len(value) > max_bytes:
        raise InvalidEvent("value", f"is {len(value)} bytes, over the limit of {max_bytes}")
    header_bytes = _header_bytes(headers)
    if header_bytes > max_bytes:
        raise InvalidEvent("headers", f"are {header_bytes} bytes, over the limit of {max_bytes}")
    attributes = _ce_headers(headers)
    payload = _decode_json(value)
    # Nesting needs brackets: with few of them (every ordinary event) the walk is skipped.
    if value.count(b"{") + value.count(b"[") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise InvalidEvent("value", f"is nested deeper than {MAX_DEPTH} levels")
    if attributes is None:
        if not isinstance(payload, dict):
            raise InvalidEvent("value", "must be a JSON object (a structured CloudEvent)")
        envelope_input: dict[str, Any] = payload
    else:
        if not isinstance(payload, dict):
            raise InvalidEvent("data", "must be a JSON object")
        envelope_input = {**attributes, "data": payload}
    return _validate(envelope_input, expected_type)


def _validate(envelope_input: dict[str, Any], expected_type: str | None) -> Event:
    try:
        envelope = _Envelope.model_validate(envelope_input)
    except ValidationError as exc:
        raise _invalid(exc, prefix=()) from None
    if expected_type is not None and envelope.type != expected_type:
        raise InvalidEvent("type", f"must be {expected_type!r} on this topic")
    model = DATA_MODELS.get(envelope.type)
    if model is None:
        raise InvalidEvent("type", f"must be one of {', '.join(EVENT_TYPES)}")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise _invalid(exc, prefix=("data",)) from None
    return Event(
        id=envelope.id,
        source=envelope.source,
        type=envelope.type,
        time=envelope.time,
        subject=envelope.subject,
        data=data,
    )


def _ce_headers(headers: Headers) -> dict[str, str] | None:
    """The CloudEvents attributes carried in headers (binary mode), or None (structured)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    attributes: dict[str, str] = {}
    content_type = ""
    for name, raw in items:
        lowered = name.lower()
        if lowered == "content-type":
            content_type = _header_text(name, raw).split(";")[0].strip().lower()
        elif lowered.startswith(_CE_PREFIX):
            attributes[lowered.removeprefix(_CE_PREFIX)] = _header_text(name, raw)
    if not attributes or content_type == _STRUCTURED_CONTENT_TYPE:
        return None
    return attributes


def _header_bytes(headers: Headers) -> int:
    if not headers:
        return 0
    items = headers.items() if isinstance(headers, Mapping) else headers
    return sum(len(name) + len(raw or b"") for name, raw in items)


def _depth(value: object) -> int:
    """How deeply JSON containers nest (iteratively: no recursion on hostile input)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _header_text(name: str, raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(f"header {name}", "is not valid UTF-8") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _decode_json(value: bytes) -> object:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("value", f"is not valid UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidEvent("value", "is nested too deeply") from None
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidEvent("value", f"is not valid JSON ({reason})") from None
    # A `\ud800`-style escape without its pair decodes to a string no request body can
    # encode: every send would fail, so the event is invalid (checked only when one may be).
    if "\\u" in text and _SURROGATE.search(text):
        try:
            json.dumps(payload, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidEvent("value", "has an unpaired surrogate escape") from None
    return payload


def _invalid(exc: ValidationError, prefix: tuple[str, ...]) -> InvalidEvent:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    loc = prefix + tuple(str(part) for part in first["loc"])
    field = ".".join(loc) or "value"
    reason = first["msg"].removeprefix("Value error, ")
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more)"
    return InvalidEvent(field, reason)
