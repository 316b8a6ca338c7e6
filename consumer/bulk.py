"""`users/bulkUpdate` batches: bounded by users and bytes; one entry per user.

Pure. Iterable reports per-record failures inside a 200, keyed by email or userId rather
than by position (reference §2.3), so `read_failures` maps them back by identifier — any an
entry carries, `dataFields.email` included; a batch never holds two entries sharing an
identifier, which keeps that mapping unambiguous.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
_ENVELOPE = (b'{"users":[', b"]}")


@dataclass(frozen=True, slots=True)
class BulkLimits:
    max_users: int = 1000
    # Below Iterable's 4 MB cap, leaving room for the envelope and any proxy's framing.
    max_bytes: int = MAX_REQUEST_BYTES - 64 * 1024
    linger: float = 0.2  # how long bulk mode lets an entry wait for others (bulk_updates)


@dataclass(slots=True)
class BulkBatch:
    """Users collected for one `bulkUpdate` request."""

    limits: BulkLimits
    users: list[dict[str, Any]] = field(default_factory=list)
    _encoded: list[bytes] = field(default_factory=list)
    _size: int = len(_ENVELOPE[0]) + len(_ENVELOPE[1])
    _identifiers: set[str] = field(default_factory=set)

    def add(self, user: dict[str, Any]) -> bool:
        """Add one user; False when it would break a bound or repeat an identifier."""
        identifiers = _identifiers(user)
        if identifiers & self._identifiers or len(self.users) >= self.limits.max_users:
            return False
        encoded = json.dumps(user, separators=(",", ":"), ensure_ascii=False).encode()
        extra = len(encoded) + (1 if self.users else 0)
        if self.users and self._size + extra > self.limits.max_bytes:
            return False
        self.users.append(user)
        self._encoded.append(encoded)
        self._size += extra
        self._identifiers |= identifiers
        return True

    def holds(self, user: dict[str, Any]) -> bool:
        """Whether the batch already has an entry for this user."""
        return bool(_identifiers(user) & self._identifiers)

    @property
    def size(self) -> int:
        return self._size

    def full(self) -> bool:
        return len(self.users) >= self.limits.max_users

    def body(self) -> bytes:
        return _ENVELOPE[0] + b",".join(self._encoded) + _ENVELOPE[1]


@dataclass(frozen=True, slots=True)
class Failures:
    """A `bulkUpdate` answer read against its entries.

    `refused`: index of each entry a `failedUpdates` list names → that list's name.
    `unaccounted`: failures that name no entry (counted in `failCount` beyond the named
    ones, or naming an identifier no entry carries): some other entry failed unnamed.
    """

    refused: dict[int, str]
    unaccounted: int = 0


_NONE: Final = Failures({})


def read_failures(response: Any, users: list[dict[str, Any]]) -> Failures:
    """Which entries Iterable refused, by every identifier an entry carries (top level and
    `dataFields`: a refused email change is named by its new email)."""
    if not isinstance(response, dict):
        return _NONE
    lists = response.get("failedUpdates")
    if not isinstance(lists, dict):  # the deprecated top-level lists, if that is all there is
        lists = {k: response.get(k) for k in ("invalidEmails", "invalidUserIds")}
    fail_count = response.get("failCount")
    fail_count = fail_count if isinstance(fail_count, int) else 0
    named = [(r, ids) for r, ids in lists.items() if isinstance(ids, list) and ids]
    if not named and fail_count <= 0:  # the common answer: nothing failed
        return _NONE
    entries: dict[str, int] = {}
    for index, user in enumerate(users):
        for identifier in _identifiers(user):
            # A batch never holds an identifier twice; if a caller's list did, -1 = ambiguous.
            entries[identifier] = -1 if identifier in entries else index
    refused: dict[int, str] = {}
    unnamed = 0
    for reason, identifiers in named:
        kind = "email" if reason.endswith("Emails") else "userId"
        for identifier in identifiers:
            index = entries.get(_identifier(kind, identifier), -1)
            if index < 0:
                unnamed += 1
            else:
                refused.setdefault(index, reason)
    return Failures(refused, max(unnamed, fail_count - len(refused)))


def _identifiers(user: dict[str, Any]) -> set[str]:
    """Every identifier an entry names: Iterable may report it under any of them."""
    fields = user.get("dataFields")
    sources = (user, fields) if isinstance(fields, dict) else (user,)
    return {
        _identifier(key, source[key])
        for source in sources
        for key in ("email", "userId")
        if isinstance(source.get(key), str) and source[key]
    }


def _identifier(kind: str, value: object) -> str:
    # Iterable stores emails lowercased and may report them so; userIds are case-sensitive.
    text = str(value)
    return f"email:{text.strip().lower()}" if kind == "email" else f"userId:{text}"
