"""Translation per project type (SPEC §4), table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.endpoints import Endpoint
from consumer.events import Event, parse
from consumer.translate import Translator


def _event(event_type: str, data: dict[str, Any]) -> Event:
    envelope = {"specversion": "1.0", "id": "1", "source": "/t", "type": event_type, "data": data}
    return parse(json.dumps(envelope).encode())


def _calls(
    project: str, event_type: str, data: dict[str, Any], prefer: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    translator = Translator(project, prefer)  # type: ignore[arg-type]
    return [(c.endpoint.value, c.payload) for c in translator.calls(_event(event_type, data))]


BOTH = {"email": "A@Example.com", "userId": "42"}
DEVICE = {"token": "t", "platform": "APNS", "applicationName": "App"}

CASES = [
    # (project, event type, data, expected calls)
    (
        "hybrid",
        "user.changed",
        {**BOTH, "dataFields": {"a": 1}},
        [
            (
                "users/update",
                {
                    "email": "a@example.com",
                    "userId": "42",
                    "dataFields": {"a": 1},
                    "mergeNestedObjects": False,
                },
            )
        ],
    ),
    (
        "email",
        "user.changed",
        {"userId": "42"},
        [
            (
                "users/update",
                {
                    "userId": "42",
                    "dataFields": {},
                    "mergeNestedObjects": False,
                    "preferUserId": True,
                },
            )
        ],
    ),
    (
        "email",
        "user.changed",
        {"userId": "42", "preferUserId": False},
        [
            (
                "users/update",
                {
                    "userId": "42",
                    "dataFields": {},
                    "mergeNestedObjects": False,
                    "preferUserId": False,
                },
            )
        ],
    ),
    (
        "hybrid",
        "user.changed",
        {"userId": "42"},
        [("users/update", {"userId": "42", "dataFields": {}, "mergeNestedObjects": False})],
    ),
    (
        "userId",
        "user.changed",
        {**BOTH, "mergeNestedObjects": True, "dataFields": {"s": {"x": True}}},
        [
            (
                "users/update",
                {
                    "email": "a@example.com",
                    "userId": "42",
                    "dataFields": {"s": {"x": True}},
                    "mergeNestedObjects": True,
                },
            )
        ],
    ),
    (
        "email",
        "user.changed",
        {"email": "new@example.com", "previousEmail": "old@example.com", "dataFields": {"k": 1}},
        [
            (
                "users/updateEmail",
                {"currentEmail": "old@example.com", "newEmail": "new@example.com"},
            ),
            (
                "users/update",
                {"email": "new@example.com", "dataFields": {"k": 1}, "mergeNestedObjects": False},
            ),
        ],
    ),
    (
        "hybrid",
        "user.changed",
        {**BOTH, "previousEmail": "old@example.com"},
        [
            (
                "users/update",
                {
                    "userId": "42",
                    "dataFields": {"email": "a@example.com"},
                    "mergeNestedObjects": False,
                },
            )
        ],
    ),
    (
        "userId",
        "user.changed",
        {**BOTH, "previousEmail": "old@example.com"},
        [
            (
                "users/update",
                {
                    "userId": "42",
                    "dataFields": {"email": "a@example.com"},
                    "mergeNestedObjects": False,
                },
            )
        ],
    ),
    (
        "hybrid",
        "user.changed",
        {"email": "new@example.com", "previousEmail": "old@example.com"},
        [
            (
                "users/update",
                {
                    "email": "old@example.com",
                    "dataFields": {"email": "new@example.com"},
                    "mergeNestedObjects": False,
                },
            )
        ],
    ),
    (
        "email",
        "device.registered",
        {**BOTH, "device": DEVICE},
        [("users/registerDeviceToken", {"email": "a@example.com", "device": DEVICE})],
    ),
    (
        "email",
        "device.registered",
        {"userId": "42", "device": DEVICE},
        [("users/registerDeviceToken", {"userId": "42", "device": DEVICE, "preferUserId": True})],
    ),
    (
        "hybrid",
        "device.registered",
        {**BOTH, "device": {**DEVICE, "dataFields": {"m": "6"}}},
        [
            (
                "users/registerDeviceToken",
                {"userId": "42", "device": {**DEVICE, "dataFields": {"m": "6"}}},
            )
        ],
    ),
    (
        "userId",
        "device.registered",
        {"email": "a@example.com", "device": DEVICE},
        [("users/registerDeviceToken", {"email": "a@example.com", "device": DEVICE})],
    ),
    (
        "email",
        "push.permission.revoked",
        {"token": "t", **BOTH},
        [("users/disableDevice", {"token": "t", "email": "a@example.com"})],
    ),
    (
        "hybrid",
        "push.permission.revoked",
        {"token": "t", **BOTH},
        [("users/disableDevice", {"token": "t", "userId": "42"})],
    ),
    (
        "userId",
        "push.permission.revoked",
        {"token": "t"},
        [("users/disableDevice", {"token": "t"})],
    ),
]


@pytest.mark.parametrize(("project", "event_type", "data", "expected"), CASES)
def test_translation(
    project: str, event_type: str, data: dict[str, Any], expected: list[tuple[str, dict[str, Any]]]
) -> None:
    assert _calls(project, event_type, data) == expected


def test_the_configured_prefer_user_id_default_applies_to_user_id_only_users() -> None:
    calls = _calls("email", "user.changed", {"userId": "42"}, prefer=False)
    assert calls[0][1]["preferUserId"] is False


def test_an_email_change_call_knows_both_addresses() -> None:
    event = _event("user.changed", {"email": "n@example.com", "previousEmail": "o@example.com"})
    first = Translator("email").calls(event)[0]
    assert first.endpoint is Endpoint.UPDATE_EMAIL
    assert first.email_change == ("o@example.com", "n@example.com")


def test_identifiers_travel_with_each_call_for_redaction() -> None:
    event = _event("device.registered", {**BOTH, "device": DEVICE})
    assert Translator("hybrid").calls(event)[0].identifiers == ("a@example.com", "42")


@pytest.mark.parametrize("project", ["email", "userId", "hybrid"])
def test_an_exclusive_registration_disables_the_token_everywhere_then_registers(
    project: str,
) -> None:
    translator = Translator(project, device_ownership="exclusive")  # type: ignore[arg-type]
    registered = _event("device.registered", {**BOTH, "device": DEVICE})
    disable, register = translator.calls(registered)
    assert (disable.endpoint, disable.payload) == (Endpoint.DISABLE_DEVICE, {"token": "t"})
    assert register == Translator(project).calls(registered)[0]  # type: ignore[arg-type]
    # Revocations and user updates are the same in both modes.
    revoked = _event("push.permission.revoked", {"token": "t", "userId": "42"})
    assert translator.calls(revoked) == Translator(project).calls(revoked)  # type: ignore[arg-type]
