"""Which events may be applied, and in what order. Pure and bounded.

- `lane_key`: events with one key run one at a time, in arrival order; different keys run
  concurrently (Parallel Consumer's KEY mode). A user is keyed by userId, else email; a
  device event by its token, so a registration and a revocation of one token share a lane.
- `DeviceGuard`: registrations and revocations of a token come from two topics, so Kafka
  gives no order between them; the guard makes the outcome equal applying them in event
  time order (SPEC §5).
- `DuplicateWindow`: exact duplicates (same CloudEvents id and source) are skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, UserChanged

K = TypeVar("K")
V = TypeVar("V")


def lane_key(event: Event) -> str:
    data = event.data
    if isinstance(data, UserChanged):
        return f"user:id:{data.userId}" if data.userId is not None else f"user:email:{data.email}"
    if isinstance(data, DeviceRegistered):
        return f"token:{data.device.token}"
    return f"token:{data.token}"


class Lru(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def drop(self, matches: Callable[[K], bool]) -> None:
        for key in [k for k in self._items if matches(k)]:
            del self._items[key]


class DuplicateWindow:
    """Remembers the last `size` (partition, source, id) applied here.

    Scoped by partition and forgotten when the partition leaves: while another member
    owned it, it may have re-applied older events, and skipping the newer re-delivery
    here would leave the older state in Iterable.
    """

    def __init__(self, size: int) -> None:
        # One flat string per entry: a tuple of tuples and strings costs twice the memory,
        # and the window holds 100,000 of them by default.
        self._seen: Lru[str, bool] = Lru(size)

    def seen(self, event: Event, partition: object) -> bool:
        """True if an event with this id and source was applied from this partition."""
        return bool(self._seen.get(_entry(partition, event)))

    def remember(self, event: Event, partition: object) -> None:
        """Record an applied event (only once applied: a dropped one must run again)."""
        self._seen.put(_entry(partition, event), True)

    def forget(self, partition: object) -> None:
        prefix = f"{partition!r}\0"
        self._seen.drop(lambda key: key.startswith(prefix))


def _entry(partition: object, event: Event) -> str:
    # NUL cannot occur in a partition's repr; source and id are split by their lengths.
    return f"{partition!r}\0{len(event.source)}:{event.source}{event.id}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a device event: skip it as stale, or send it (and maybe re-send)."""

    stale: bool
    # Registrations newer than a global revocation being applied and not disabled since:
    # re-send them after it.
    replay: tuple[DeviceRegistered, ...] = ()


_Registration = tuple[datetime, DeviceRegistered, tuple[str, ...]]


class DeviceGuard:
    """Per token: the last global revocation, and the last applied event per profile.

    `profiles` are the identifiers an event names for its profile ("email:…", "userId:…"),
    the one the call sends first; an empty tuple is a revocation on every profile. Times
    are remembered under every identifier, so an event naming a profile by userId and a
    later one naming it by email still see each other.
    """

    def __init__(self, size: int) -> None:
        self._revoked_all: Lru[str, datetime] = Lru(size)
        self._applied: Lru[tuple[str, str], datetime] = Lru(size)
        # Per token, per profile: its newest applied registration and every identifier it named.
        self._registrations: Lru[str, dict[str, _Registration]] = Lru(size)

    def decide(
        self,
        data: DeviceRegistered | PushPermissionRevoked,
        profiles: tuple[str, ...],
        when: datetime,
    ) -> Decision:
        """Decide before sending; call `applied` once the call (and any replay) succeeded."""
        token = _token(data)
        if not profiles:  # a global revocation
            return Decision(stale=False, replay=self._enabled_since(token, when))
        remembered = [t for p in profiles if (t := self._applied.get((token, p))) is not None]
        if remembered and when < max(remembered):
            return Decision(stale=True)
        revoked = self._revoked_all.get(token)
        if isinstance(data, DeviceRegistered) and revoked is not None and when < revoked:
            return Decision(stale=True)
        return Decision(stale=False)

    def _enabled_since(self, token: str, when: datetime) -> tuple[DeviceRegistered, ...]:
        """Registrations newer than `when` that nothing applied since has disabled."""
        revoked = self._revoked_all.get(token)
        enabled = []
        for at, registration, profiles in (self._registrations.get(token) or {}).values():
            if at <= when or (revoked is not None and at < revoked):
                continue
            # A scoped revocation (or a newer registration) of the profile came after it.
            if any((t := self._applied.get((token, p))) is not None and t > at for p in profiles):
                continue
            enabled.append(registration)
        return tuple(enabled)

    def applied(
        self,
        data: DeviceRegistered | PushPermissionRevoked,
        profiles: tuple[str, ...],
        when: datetime,
    ) -> None:
        token = _token(data)
        if not profiles:
            previous = self._revoked_all.get(token)
            self._revoked_all.put(token, max(when, previous) if previous else when)
            return
        for profile in profiles:
            last = self._applied.get((token, profile))
            self._applied.put((token, profile), max(when, last) if last else when)
        if isinstance(data, DeviceRegistered):
            registrations = dict(self._registrations.get(token) or {})
            current = registrations.get(profiles[0])
            if current is None or when >= current[0]:
                registrations[profiles[0]] = (when, data, profiles)
            self._registrations.put(token, registrations)


def _token(data: DeviceRegistered | PushPermissionRevoked) -> str:
    return data.device.token if isinstance(data, DeviceRegistered) else data.token
