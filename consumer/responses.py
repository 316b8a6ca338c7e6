"""What an Iterable answer means: success, or which kind of `IterableError`. Pure.

Status first, `code` second: Iterable sometimes sends `code: "Success"` on a 401, and error
bodies may be HTML or plain text (reference §1, §3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final

from consumer.errors import CredentialsError, IterableError, PermanentError, TransientError
from consumer.redact import scrub

_RETRYABLE_4XX: Final = frozenset({408, 429})
_CREDENTIALS: Final = frozenset({401, 403})
_TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_MAX_MESSAGE: Final = 300


def status_class(status: int | None) -> str:
    """A bounded label for metrics: `2xx`…`5xx`, or `error` when no response came back."""
    return "error" if status is None else f"{status // 100}xx"


def read_body(content: bytes) -> Any:
    """The JSON body, or None when the body is not JSON."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def classify(
    endpoint: str,
    status: int,
    content: bytes,
    *,
    retry_after: float | None = None,
    identifiers: Iterable[str | None] = (),
    secrets: Iterable[str] = (),
) -> Any:
    """Return the parsed body of a success; raise the matching `IterableError` otherwise.

    `identifiers` (the request's emails and userIds) are redacted from error messages,
    which Iterable sometimes fills with them ("Invalid email: …"); `secrets` are removed.
    """
    body = read_body(content)
    if 200 <= status < 300:
        return body
    code = body.get("code") if isinstance(body, dict) else None
    message = scrub(_message(status, body, content), identifiers, secrets)[:_MAX_MESSAGE]
    kind: type[IterableError]
    if status in _CREDENTIALS:
        kind = CredentialsError
    elif status in _RETRYABLE_4XX or status >= 500:
        kind = TransientError
    else:
        kind = PermanentError
    raise kind(
        endpoint,
        message,
        status=status,
        code=code if isinstance(code, str) else None,
        retry_after=retry_after,
    )


def _message(status: int, body: Any, content: bytes) -> str:
    if isinstance(body, dict) and isinstance(body.get("msg"), str) and body["msg"]:
        return str(body["msg"])
    title = _TITLE.search(content)
    if title:
        return title.group(1).decode("utf-8", errors="replace").strip()
    return f"HTTP {status} error"
