"""`users/bulkUpdate` batches: bounded by users and bytes; one entry per user.

Pure. Iterable reports per-record failures inside a 200, keyed by email or userId rather
than by position (reference §2.3), so `failed_entries` maps them back by identifier; a batch
never holds two entries for one identifier, which keeps that mapping unambiguous.
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


def failed_entries(response: Any, users: list[dict[str, Any]]) -> dict[int, str]:
    """Index of each user the response reports as failed → the `failedUpdates` list naming it."""
    failed = response.get("failedUpdates") if isinstance(response, dict) else None
    if not isinstance(failed, dict):
        return {}
    by_email: dict[str, str] = {}
    by_user_id: dict[str, str] = {}
    for reason, identifiers in failed.items():
        if not isinstance(identifiers, list):
            continue
        target = by_email if reason.endswith("Emails") else by_user_id
        for identifier in identifiers:
            target.setdefault(str(identifier), reason)
    result: dict[int, str] = {}
    for index, user in enumerate(users):
        reason = by_email.get(str(user.get("email"))) if user.get("email") else None
        if reason is None and user.get("userId"):
            reason = by_user_id.get(str(user["userId"]))
        if reason is not None:
            result[index] = reason
    return result


def _identifiers(user: dict[str, Any]) -> set[str]:
    return {f"{key}:{user[key]}" for key in ("email", "userId") if user.get(key)}
