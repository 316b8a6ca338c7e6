"""The event contract: examples, normalisation, and parse's single failure mode."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.dev.examples import Example, load
from consumer.errors import InvalidEvent
from consumer.events import (
    DeviceRegistered,
    PushPermissionRevoked,
    UserChanged,
    parse,
)

VALID = load("valid")
INVALID = load("invalid")


def _structured(data: object, **attributes: object) -> bytes:
    envelope = {"specversion": "1.0", "id": "e-1", "source": "/test", "type": "user.changed"}
    return json.dumps({**envelope, **attributes, "data": data}).encode()


def test_there_are_enough_examples_of_each_type() -> None:
    for event_type in ("user.changed", "device.registered", "push.permission.revoked"):
        assert sum(e.event_type == event_type for e in VALID) >= 8
        assert sum(e.event_type == event_type for e in INVALID) >= 15


@pytest.mark.parametrize("example", VALID, ids=lambda e: e.name)
def test_every_valid_example_parses_as_its_type(example: Example) -> None:
    event = parse(example.value, example.headers, expected_type=example.event_type)
    assert event.type == example.event_type


@pytest.mark.parametrize("example", INVALID, ids=lambda e: e.name)
def test_every_invalid_example_is_rejected_naming_the_field(example: Example) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse(example.value, example.headers, expected_type=example.event_type)
    assert example.field is not None
    assert example.field in str(caught.value)


def test_binary_and_structured_modes_give_the_same_event() -> None:
    data = {"userId": "u-1", "dataFields": {"a": 1}}
    structured = parse(_structured(data, time="2026-01-01T00:00:00Z"))
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-1"),
        ("ce_source", b"/test"),
        ("ce_type", b"user.changed"),
        ("ce_time", b"2026-01-01T00:00:00Z"),
    ]
    binary = parse(json.dumps(data).encode(), headers)
    assert binary == structured


def test_a_structured_content_type_wins_over_stray_ce_headers() -> None:
    headers = [("content-type", b"application/cloudevents+json"), ("ce_id", b"other")]
    event = parse(_structured({"userId": "u-1"}), headers)
    assert event.id == "e-1"


def test_emails_are_trimmed_and_lower_cased() -> None:
    event = parse(_structured({"email": "  Ada.Lovelace@Example.COM ", "previousEmail": "A@B.CO"}))
    assert isinstance(event.data, UserChanged)
    assert event.data.email == "ada.lovelace@example.com"
    assert event.data.previousEmail == "a@b.co"


def test_defaults_of_user_changed() -> None:
    event = parse(_structured({"userId": "u-1"}))
    assert event.data == UserChanged(userId="u-1", dataFields={}, mergeNestedObjects=False)
    assert event.time is None


def test_device_and_revocation_models() -> None:
    device = {"token": "t", "platform": "GCM", "applicationName": "a"}
    registered = parse(_structured({"userId": "u", "device": device}, type="device.registered"))
    revoked = parse(_structured({"token": "t"}, type="push.permission.revoked"))
    assert isinstance(registered.data, DeviceRegistered)
    assert registered.data.device.platform == "GCM"
    assert revoked.data == PushPermissionRevoked(token="t")


def test_time_keeps_its_offset() -> None:
    event = parse(_structured({"userId": "u"}, time="2026-11-28T11:00:00.5+01:00"))
    assert event.time is not None
    assert event.time.isoformat() == "2026-11-28T11:00:00.500000+01:00"


def test_a_value_over_the_size_limit_is_invalid() -> None:
    value = _structured({"userId": "u", "dataFields": {"blob": "x" * 2000}})
    with pytest.raises(InvalidEvent, match=r"^value: is \d+ bytes, over the limit of 1000$"):
        parse(value, max_bytes=1000)


def test_a_tombstone_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match=r"^value: "):
        parse(None)


def test_nan_is_not_json() -> None:
    with pytest.raises(InvalidEvent, match="NaN is not valid JSON"):
        parse(_structured({"userId": "u"}).replace(b'"e-1"', b"NaN"))


def test_absurd_nesting_is_invalid_not_a_crash() -> None:
    value = b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        parse(value, max_bytes=len(value))


def test_a_non_utf8_header_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match=r"^header ce_id: is not valid UTF-8$"):
        parse(b'{"userId": "u"}', [("ce_id", b"\xff")])


def test_errors_never_echo_the_offending_value() -> None:
    secret_email = "person.private@example"  # no TLD: invalid
    with pytest.raises(InvalidEvent) as caught:
        parse(_structured({"email": secret_email}))
    assert "person.private" not in str(caught.value)
    assert str(caught.value) == "data.email: is not a valid email address"


_header_items = st.lists(
    st.tuples(
        st.sampled_from(["ce_id", "ce_type", "ce_specversion", "ce_source", "content-type", "x"])
        | st.text(max_size=8),
        st.none() | st.binary(max_size=16) | st.text(max_size=16),
    ),
    max_size=6,
)


@settings(max_examples=500, deadline=None)
@given(value=st.none() | st.binary(max_size=256), headers=st.none() | _header_items)
def test_parse_only_ever_raises_invalid_event_on_arbitrary_bytes(
    value: bytes | None, headers: list[tuple[str, bytes | str | None]] | None
) -> None:
    with contextlib.suppress(InvalidEvent):
        parse(value, headers)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(["email", "userId", "dataFields", "token", "device", "previousEmail", "x"]),
        _json,
        max_size=5,
    ),
    event_type=st.sampled_from(["user.changed", "device.registered", "push.permission.revoked"]),
)
def test_parse_only_ever_raises_invalid_event_on_arbitrary_json(
    data: dict[str, object], event_type: str
) -> None:
    with contextlib.suppress(InvalidEvent):
        parse(_structured(data, type=event_type))


def test_deeply_nested_data_fields_are_invalid() -> None:
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(40):
        nested = {"n": nested}
    with pytest.raises(InvalidEvent, match="nested deeper than 32 levels"):
        parse(_structured({"userId": "u", "dataFields": nested}))


def test_nesting_within_the_limit_is_fine() -> None:
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(20):
        nested = {"n": nested}
    assert parse(_structured({"userId": "u", "dataFields": nested})).type == "user.changed"


def test_huge_headers_are_invalid() -> None:
    headers = [("x-trace", b"x" * 2000), ("ce_id", b"1")]
    with pytest.raises(InvalidEvent, match=r"^headers: are \d+ bytes, over the limit of 1024$"):
        parse(_structured({"userId": "u"}), headers, max_bytes=1024)
