"""Personal identifiers in the redacted form logs, errors and headers may carry.

An identifier becomes `pii:` plus the first 10 hex digits of its SHA-256, so an operator
holding the clear value can find it (hash it the same way) but a reader of logs cannot.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_EMAIL_LIKE = re.compile(r"[^\s@\"',;:<>()\[\]{}]+@[^\s@\"',;:<>()\[\]{}]+")


def pii(value: str) -> str:
    """The redacted form of one identifier."""
    return "pii:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]


def scrub(text: str, identifiers: Iterable[str | None] = (), secrets: Iterable[str] = ()) -> str:
    """`text` with secrets removed, and every email-like token and given identifier redacted."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    for identifier in sorted({i for i in identifiers if i}, key=len, reverse=True):
        # Whole tokens only: a userId "2" must not eat the 2 in "HTTP 429".
        token = re.compile(rf"(?<![\w.@:+-]){re.escape(identifier)}(?![\w.@+-])")
        text = token.sub(pii(identifier), text)
    return _EMAIL_LIKE.sub(lambda match: pii(match.group(0)), text)
