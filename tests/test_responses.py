"""Classification: status first, code second, any body."""

from __future__ import annotations

import json

import pytest

from consumer.errors import CredentialsError, PermanentError, TransientError
from consumer.redact import pii, scrub
from consumer.responses import classify, status_class


def _body(msg: str, code: str) -> bytes:
    return json.dumps({"msg": msg, "code": code, "params": None}).encode()


def test_a_2xx_returns_the_body() -> None:
    assert classify("users/update", 200, _body("User updated", "Success"))["msg"] == "User updated"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    with pytest.raises(TransientError):
        classify("users/update", status, b"Too Many Requests")


@pytest.mark.parametrize("status", [400, 404, 409, 413])
def test_permanent_statuses_carry_status_code_and_message(status: int) -> None:
    with pytest.raises(PermanentError) as caught:
        classify("users/update", status, _body("Bad thing", "BadParams"))
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        status,
        "BadParams",
        "Bad thing",
    )


def test_a_401_saying_success_is_still_a_credentials_error() -> None:
    with pytest.raises(CredentialsError) as caught:
        classify("users/update", 401, _body("Invalid API key", "Success"))
    assert caught.value.status == 401


def test_403_is_a_credentials_error() -> None:
    with pytest.raises(CredentialsError):
        classify("users/update", 403, b"")


def test_an_html_error_page_yields_its_title() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head></html>"
    with pytest.raises(TransientError, match="502 Bad Gateway"):
        classify("users/update", 502, page)


def test_an_empty_error_body_yields_the_status() -> None:
    with pytest.raises(TransientError, match="HTTP 503 error"):
        classify("users/update", 503, b"")


def test_identifiers_in_iterable_messages_are_redacted() -> None:
    with pytest.raises(PermanentError) as caught:
        classify(
            "users/update",
            400,
            _body("Invalid email: jane.doe@example User does not exist: u-77", "BadParams"),
            identifiers=["jane.doe@example", "u-77"],
        )
    text = str(caught.value)
    assert "jane.doe" not in text
    assert "u-77" not in text
    assert pii("u-77") in text


def test_scrub_redacts_whole_tokens_only() -> None:
    assert scrub("HTTP 429 for user 2", ["2"]) == f"HTTP 429 for user {pii('2')}"
    assert scrub("write to a@b.co failed") == f"write to {pii('a@b.co')} failed"


def test_status_classes_are_bounded() -> None:
    assert [status_class(s) for s in (200, 429, 503, None)] == ["2xx", "4xx", "5xx", "error"]
