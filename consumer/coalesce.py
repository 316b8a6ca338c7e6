"""Several `users/update` payloads of one user as one, where that is provably the same. Pure.

Applying the coalesced payload once leaves the profile as applying the payloads in order
does (Iterable merges `dataFields` into the profile, SPEC §6):

- `mergeNestedObjects` false: a top-level field replaces the stored one, so the later
  event's value wins.
- `mergeNestedObjects` true: an object is merged one level into a stored object (scalars
  and arrays replace), so two events' objects at one key combine key by key. That equals
  the sequence only where the stored value cannot tell them apart, so a run ends at an
  object written over a non-object (the sequence replaces, one payload would merge into the
  stored object), and where an object below the top level is written by two events
  (one-level and deep merge would then differ; without that the two agree).
- Either way, a field written twice with different types (or a value then null) ends the
  run: Iterable types a field by its first value and refuses others (reference §5.4), so
  the sequence would refuse the later event where one payload would not.

Payloads must name the user the same way (`same_user`): email changes, identifier changes
in `dataFields` and another `mergeNestedObjects` are never coalesced.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.endpoints import Endpoint
from consumer.translate import Call

# Events per coalesced call: a permanent failure re-sends each of them alone.
MAX_EVENTS: Final = 100
# In bulk mode a request carries one entry per user and requests go at 5/s, so a hot user's
# backlog drains at this many events times 5/s; 1,000 (not 100) keeps a hot user off the
# critical path, and the entry's messages stay within CONSUMER_MAX_EVENT_BYTES either way.
MAX_EVENTS_BULK: Final = 1000
_IDENTITY: Final = ("email", "userId", "preferUserId", "mergeNestedObjects")
_IDENTIFIER_FIELDS: Final = ("email", "userId")  # in dataFields they change the identifier
_Path = tuple[str, ...]


def coalescible(call: Call) -> bool:
    """A plain `users/update`: no email change, no identifier written through dataFields."""
    if call.endpoint is not Endpoint.UPDATE or call.email_change is not None:
        return False
    fields = call.payload.get("dataFields") or {}
    return not any(key in fields for key in _IDENTIFIER_FIELDS)


def same_user(first: dict[str, Any], other: dict[str, Any]) -> bool:
    """Both payloads name the profile alike and merge alike."""
    return all(first.get(key) == other.get(key) for key in _IDENTITY)


class Coalesced:
    """A run of `users/update` payloads being merged into one, in stream order."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._first = payload
        self._nested = bool(payload.get("mergeNestedObjects", False))
        self._fields: dict[str, Any] = {}
        self._types: dict[_Path, str | None] = {}  # every path written so far: its type
        self.events = 0
        self.add(payload)

    def add(self, payload: dict[str, Any]) -> bool:
        """Merge the next payload in; False (and nothing merged) if it must start a new run."""
        if self.events and not same_user(self._first, payload):
            return False
        fields: dict[str, Any] = payload.get("dataFields") or {}
        types: dict[_Path, str | None] = {}
        for key, value in fields.items():
            if not self._fits(key, value):
                return False
            _paths(value, (key,), types)
        known = self._types
        if any(p in known and not _same_type(known[p], t) for p, t in types.items()):
            return False
        for path, kind in types.items():
            if kind is not None or path not in self._types:
                self._types[path] = kind
        for key, value in fields.items():
            current = self._fields.get(key)
            if self._nested and isinstance(value, dict) and isinstance(current, dict):
                self._fields[key] = {**current, **value}
            else:
                self._fields[key] = value
        self.events += 1
        return True

    def _fits(self, key: str, value: Any) -> bool:
        """Whether a write of `key` merges here as it would after the run's earlier events."""
        if not self._nested or key not in self._fields or not isinstance(value, dict):
            return True
        current = self._fields[key]
        if not isinstance(current, dict):
            return False  # the sequence replaces; one payload would merge into the stored value
        return not any(
            isinstance(value[k], dict) or isinstance(current[k], dict)
            for k in value.keys() & current.keys()
        )

    @property
    def payload(self) -> dict[str, Any]:
        """The one payload carrying the run."""
        return {**self._first, "dataFields": dict(self._fields)}


def _same_type(before: str | None, after: str | None) -> bool:
    """A path written again keeps its type; null may be replaced, never replace a value."""
    return before is None or before == after


def _paths(value: Any, path: _Path, out: dict[_Path, str | None]) -> None:
    out[path] = field_type(value)
    if isinstance(value, dict):
        for key, inner in value.items():
            _paths(inner, (*path, key), out)


def field_type(value: Any) -> str | None:
    """Iterable's type for a value (as the emulator infers it); None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"
