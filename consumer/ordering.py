"""Which events may be applied, and in what order. Pure and bounded.

- `LaneKeys` and `Lanes`: an event has a key per identifier it names (userId, email,
  previous email; a device event its token) and runs once every earlier event sharing a
  key with it has finished; events sharing none run concurrently (Parallel Consumer's
  KEY mode, with a user named several ways). A registration and a revocation of one
  token share a lane.
- `DeviceGuard`: registrations and revocations of a token come from two topics, so Kafka
  gives no order between them; the guard makes the outcome equal applying them in event
  time order (SPEC §5). With exclusive ownership a registration is a handoff: a global
  revocation at its time, then the registration (the newest registration owns the token).
- `DuplicateWindow`: exact duplicates (same CloudEvents id and source) are skipped.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, Protocol, TypeVar

from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, UserChanged

K = TypeVar("K")
V = TypeVar("V")
# A link matters only while an event of its user waits or runs, and at most
# CONSUMER_MAX_BUFFERED (5,000 by default) do: twice that covers them (~2 MB).
LINKS: Final = 10_000


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
    # Exclusive ownership: the registration is sent as a handoff; `taken_from` are the
    # profiles the token is remembered enabled on, which it takes the token from.
    handoff: bool = False
    taken_from: tuple[str, ...] = ()
    # A handoff whose profile has a newer event: only its disableDevice is sent, applied
    # as a global revocation at its time (the registration itself is stale).
    disable_only: bool = False


_Registration = tuple[datetime, DeviceRegistered, tuple[str, ...]]


class DeviceGuard:
    """Per token: the last global revocation, and the last applied event per profile.

    `profiles` are the identifiers an event names for its profile ("email:…", "userId:…"),
    the one the call sends first; an empty tuple is a revocation on every profile. Times
    are remembered under every identifier, so an event naming a profile by userId and a
    later one naming it by email still see each other.

    With `exclusive`, a registration is sent as a handoff (disableDevice with the token
    alone, then the registration), so it counts as a global revocation at its time too: an
    older registration of another profile is then stale, as is an older global revocation
    (the handoff disabled everything it would), and only the newest registration of a token
    is ever re-sent.
    """

    def __init__(self, size: int, *, exclusive: bool = False) -> None:
        self.exclusive = exclusive
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
        revoked = self._revoked_all.get(token)
        # At equal times a revocation counts as before a registration (log out, then log
        # in), whichever is consumed first: a registration as old as a revocation is sent,
        # a revocation as old as a registration it would disable is stale or re-sends it.
        if not profiles:  # a global revocation
            if self.exclusive and revoked is not None and when <= revoked:
                return Decision(stale=True)
            return Decision(stale=False, replay=self._enabled_since(token, when, ties=True))
        registration = isinstance(data, DeviceRegistered)
        if registration and revoked is not None and when < revoked:
            return Decision(stale=True)
        remembered = [t for p in profiles if (t := self._applied.get((token, p))) is not None]
        newest = max(remembered) if remembered else None
        if newest is not None and (when < newest or (when == newest and not registration)):
            if self.exclusive and registration:  # it still disabled every other profile then
                return Decision(
                    stale=False, replay=self._enabled_since(token, when), disable_only=True
                )
            return Decision(stale=True)
        if self.exclusive and registration:
            enabled = (r[2] for r in self._enabled(token) if not set(r[2]) & set(profiles))
            taken_from = tuple(p for named in enabled for p in named)
            return Decision(stale=False, handoff=True, taken_from=taken_from)
        return Decision(stale=False)

    def _enabled_since(
        self, token: str, when: datetime, *, ties: bool = False
    ) -> tuple[DeviceRegistered, ...]:
        """Registrations newer than `when` (`ties`: or as old) that nothing applied since
        has disabled."""
        return tuple(
            registration
            for at, registration, _ in self._enabled(token)
            if at > when or (ties and at == when)
        )

    def _enabled(self, token: str) -> list[_Registration]:
        """The remembered registrations of `token` that nothing applied since has disabled."""
        revoked = self._revoked_all.get(token)
        known = list((self._registrations.get(token) or {}).values())
        if self.exclusive and known:
            # The newest registration owns the token: no other may be enabled again, even
            # when the memory of the handoffs (`_revoked_all`) was forgotten first.
            known = [max(known, key=lambda registration: registration[0])]
        enabled = []
        for at, registration, profiles in known:
            if revoked is not None and at < revoked:
                continue
            # A scoped revocation (or a newer registration) of the profile came after it.
            if any((t := self._applied.get((token, p))) is not None and t > at for p in profiles):
                continue
            enabled.append((at, registration, profiles))
        return enabled

    def applied(
        self,
        data: DeviceRegistered | PushPermissionRevoked,
        profiles: tuple[str, ...],
        when: datetime,
    ) -> None:
        token = _token(data)
        if not profiles:
            self.disabled_everywhere(token, when)
            return
        for profile in profiles:
            last = self._applied.get((token, profile))
            self._applied.put((token, profile), max(when, last) if last else when)
        if isinstance(data, DeviceRegistered):
            if self.exclusive:
                self.disabled_everywhere(token, when)
            registrations = dict(self._registrations.get(token) or {})
            current = registrations.get(profiles[0])
            if current is None or when >= current[0]:
                registrations[profiles[0]] = (when, data, profiles)
            self._registrations.put(token, registrations)

    def disabled_everywhere(self, token: str, when: datetime) -> None:
        """A global revocation was applied, or a handoff's disableDevice (even when the
        registration after it was refused)."""
        previous = self._revoked_all.get(token)
        self._revoked_all.put(token, max(when, previous) if previous else when)


def _token(data: DeviceRegistered | PushPermissionRevoked) -> str:
    return data.device.token if isinstance(data, DeviceRegistered) else data.token


class LaneKeys:
    """An event's lane keys: each identifier it names, and the userId its emails came with.

    Events naming both a userId and an email teach the link (bounded LRU), so `{email: a}`
    and a later `{userId: u1}` of the same user are ordered too while it is remembered.
    """

    def __init__(self, size: int = LINKS) -> None:
        self._user_ids: Lru[str, str] = Lru(size)  # email → the userId last seen with it

    def __call__(self, event: Event) -> tuple[str, ...]:
        data = event.data
        if isinstance(data, DeviceRegistered):
            return (f"token:{data.device.token}",)
        if isinstance(data, PushPermissionRevoked):
            return (f"token:{data.token}",)
        return self._user(data)

    def _user(self, data: UserChanged) -> tuple[str, ...]:
        user_id, email, previous = data.userId, data.email, data.previousEmail
        if previous is not None and previous != email:
            return self._email_change(user_id, email, previous)
        if email is None:
            return (f"user:id:{user_id}",)
        if user_id is None:
            linked = self._user_ids.get(email)
            if linked is None:
                return (f"user:email:{email}",)
            return (f"user:id:{linked}", f"user:email:{email}")
        self._user_ids.put(email, user_id)
        return (f"user:id:{user_id}", f"user:email:{email}")

    def _email_change(self, user_id: str | None, new: str | None, old: str) -> tuple[str, ...]:
        emails = [e for e in (new, old) if e is not None]
        if user_id is None:
            # The old email's user is the one changing; the new one may be linked to a
            # user who left that address earlier.
            linked = [u for e in reversed(emails) if (u := self._user_ids.get(e)) is not None]
            user_id = linked[0] if linked else None
            keys = {f"user:id:{u}": None for u in linked}
        else:
            keys = {f"user:id:{user_id}": None}
        if user_id is not None:  # the link moves on to the new address
            for email in emails:
                self._user_ids.put(email, user_id)
        for email in emails:
            keys[f"user:email:{email}"] = None
        return tuple(keys)


class Queued(Protocol):
    """What `Lanes` keeps on an item: its keys, and in how many it waits behind another."""

    keys: tuple[str, ...]
    waiting: int


Q = TypeVar("Q", bound=Queued)


class Lanes(Generic[Q]):
    """Per key a FIFO of items; an item may run once it heads the queue of each of its keys.

    An item only ever waits for items that arrived before it, so there is no cycle and no
    deadlock. An item without keys may run at once and is not kept.
    """

    def __init__(self) -> None:
        # A key's lone item is kept bare: most keys never queue a second, and a deque costs
        # ~1 µs and 600 bytes to make.
        self._queues: dict[str, Q | deque[Q]] = {}

    def add(self, item: Q) -> bool:
        """Queue an item behind every earlier one sharing a key; True if it may run now."""
        queues, waiting = self._queues, 0
        for key in item.keys:
            queue = queues.get(key)
            if queue is None:
                queues[key] = item
                continue
            if not isinstance(queue, deque):
                queue = queues[key] = deque((queue,))
            queue.append(item)
            waiting += 1
        item.waiting = waiting
        return not waiting

    def release(self, item: Q) -> list[Q]:
        """Remove an item that may run (finished or dropped); the items that may run now."""
        ready: list[Q] = []
        queues = self._queues
        for key in item.keys:
            queue = queues[key]
            if not isinstance(queue, deque):
                del queues[key]
                continue
            queue.popleft()
            if not queue:
                del queues[key]
                continue
            head = queue[0]
            head.waiting -= 1
            if not head.waiting:
                ready.append(head)
        return ready

    def take(self, head: Q, matches: Callable[[Q], bool], limit: int) -> list[Q]:
        """Remove the items right behind `head` (running) that wait for it alone, in order.

        A follower is taken while it has exactly `head`'s keys, is second in each of their
        queues and `matches`; the first that does not stops the take. The items behind the
        taken ones keep waiting for `head`, as they waited for the taken ones.
        """
        queues = [self._queues.get(key) for key in head.keys]
        lanes = [q for q in queues if isinstance(q, deque)]
        if not head.keys or len(lanes) != len(queues):
            return []
        taken: list[Q] = []
        while len(taken) < limit and len(lanes[0]) > 1:
            follower = lanes[0][1]
            if follower.keys != head.keys or any(len(q) < 2 or q[1] is not follower for q in lanes):
                break
            if not matches(follower):
                break
            for queue in lanes:
                del queue[1]
            taken.append(follower)
        return taken

    def drop(self, matches: Callable[[Q], bool]) -> list[Q]:
        """Remove the waiting items that match; the items that may run now."""
        queues = {k: q if isinstance(q, deque) else deque((q,)) for k, q in self._queues.items()}
        blocked = {id(i): i for q in queues.values() for i in q if i.waiting}
        kept = {k: deque(i for i in q if not (i.waiting and matches(i))) for k, q in queues.items()}
        self._queues = {k: q for k, q in kept.items() if q}
        for item in blocked.values():
            item.waiting = 0
        for queue in kept.values():
            for item in itertools.islice(queue, 1, None):
                item.waiting += 1
        return [i for i in blocked.values() if not i.waiting and not matches(i)]

    def __len__(self) -> int:
        """How many keys have items queued."""
        return len(self._queues)
