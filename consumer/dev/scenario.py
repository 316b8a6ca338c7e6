"""Scenarios for end-to-end tests and the chaos runner: an event stream, its expected
Iterable state (the oracle), and waits."""

from __future__ import annotations

import bisect
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.emulator.store import ApiError, Project
from consumer.dev.topics import KafkaTools, Record
from consumer.errors import InvalidEvent
from consumer.events import parse
from consumer.translate import DeviceOwnership, Translator

TYPES = ("user.changed", "device.registered", "push.permission.revoked")
START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@dataclass
class Produced:
    """An event as produced: its type, Kafka record, and its position in the stream."""

    event_type: str
    record: Record
    seq: int


@dataclass
class Topics:
    names: dict[str, str]  # event type → topic

    def env(self) -> dict[str, str]:
        return {
            "TOPIC_USER_CHANGED": self.names["user.changed"],
            "TOPIC_DEVICE_REGISTERED": self.names["device.registered"],
            "TOPIC_PUSH_REVOKED": self.names["push.permission.revoked"],
        }

    def dlq(self, event_type: str) -> str:
        return self.names[event_type] + ".dlq"


def create_topics(kafka: KafkaTools, partitions: int = 3) -> Topics:
    prefix = kafka.unique_name("t")
    names = {t: kafka.create_topic(f"{prefix}.{t}", partitions) for t in TYPES}
    for name in names.values():
        kafka.create_topic(f"{name}.dlq", 1)
    return Topics(names)


def _envelope(event_type: str, seq: int, data: dict[str, Any], when: datetime) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"evt-{seq}",
            "source": "/tests",
            "type": event_type,
            "time": when.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    ).encode()


# Marker fields per project (Iterable allows 1,000 field names): more than coalescing's 100
# events per call in single mode, so a call never carries two events' markers in one field.
MARKERS: Final = 128


@dataclass
class StreamBuilder:
    """A deterministic mix of events over `users` users and their device tokens."""

    users: int = 20
    seed: int = 7
    seq: int = 0
    clock: datetime = START
    tokens: dict[int, list[str]] = field(default_factory=dict)
    tokens_per_user: int = 3
    realtime: bool = False  # event times from the wall clock (open-loop benchmarks)
    # The share of registrations that take another user's token (a phone changing hands).
    handoffs: float = 0.0
    # Users drawn from a Zipf distribution with this exponent (a few hot users, a long
    # tail) instead of uniformly; 0 is uniform.
    zipf: float = 0.0
    # Every update's mergeNestedObjects, or None for a coin toss per update.
    merge_nested: bool | None = None
    # Each update also writes its `n` into a marker field `m<k>`, k its user's update count
    # modulo MARKERS, so a ledger sees every event arrive even when several of a user's
    # updates reach Iterable as one call (coalesced: at most 100 in a row, in single mode).
    markers: bool = False
    # The identifier a scoped revocation names (70% of revocations; the rest name none).
    scoped_by: str = "userId"
    _updates: dict[int, int] = field(default_factory=dict, repr=False)
    _weights: list[float] = field(default_factory=list, repr=False)

    def next_time(self) -> datetime:
        step = timedelta(milliseconds=10)
        if self.realtime:
            step = max(datetime.now(UTC) - self.clock, timedelta(microseconds=1))
        self.clock += step
        return self.clock

    def _user(self, rng: random.Random) -> int:
        if not self.zipf:
            return rng.randrange(self.users)
        if not self._weights:
            self._weights = list(
                itertools.accumulate(1 / rank**self.zipf for rank in range(1, self.users + 1))
            )
        return bisect.bisect_left(self._weights, rng.random() * self._weights[-1])

    def make(
        self, event_type: str, key: str, data: dict[str, Any], when: datetime | None = None
    ) -> Produced:
        self.seq += 1
        value = _envelope(event_type, self.seq, data, when or self.next_time())
        return Produced(event_type, Record(key.encode(), value), self.seq)

    def events(self, count: int, user_changed_only: bool = False) -> list[Produced]:
        rng = random.Random(self.seed + self.seq)
        out: list[Produced] = []
        for _ in range(count):
            user = self._user(rng)
            ids = {"userId": f"u{user}", "email": f"user{user}@example.com"}
            draw = 0.0 if user_changed_only else rng.random()
            if draw < 0.7 or (not self.tokens.get(user) and draw >= 0.9):
                fields = {
                    "n": self.seq + 1,
                    "tier": rng.choice(["a", "b", "c"]),
                    "prefs": {rng.choice("xyz"): rng.random() < 0.5},
                }
                if self.markers:
                    count = self._updates[user] = self._updates.get(user, -1) + 1
                    fields[f"m{count % MARKERS}"] = self.seq + 1
                merge = rng.random() < 0.5 if self.merge_nested is None else self.merge_nested
                data = {**ids, "dataFields": fields, "mergeNestedObjects": merge}
                out.append(self.make("user.changed", ids["userId"], data))
            elif draw < 0.9:
                token = f"tok-{user}-{rng.randrange(self.tokens_per_user)}"
                if self.handoffs and rng.random() < self.handoffs:
                    token = f"tok-{rng.randrange(self.users)}-{rng.randrange(self.tokens_per_user)}"
                self.tokens.setdefault(user, []).append(token)
                device = {
                    "token": token,
                    "platform": rng.choice(["APNS", "GCM"]),
                    "applicationName": "App",
                    "dataFields": {"seq": self.seq + 1},
                }
                out.append(self.make("device.registered", token, {**ids, "device": device}))
            else:
                token = rng.choice(self.tokens[user])
                scoped = {self.scoped_by: ids[self.scoped_by]} if rng.random() < 0.7 else {}
                out.append(self.make("push.permission.revoked", token, {"token": token, **scoped}))
        return out


def scoped_by(project_type: str) -> str:
    """What a stream's scoped revocations name in a project: the identifier its device calls
    send. In an email project a userId-only revocation reaches only a profile Iterable
    already knows by that userId, which the user's `user.changed` (another topic, so in no
    order with it) may not have applied yet: its outcome is a race, not the oracle's."""
    sent = Translator(project_type).device_identifier("x@example.com", "x")  # type: ignore[arg-type]
    assert sent is not None  # noqa: S101 - both identifiers given
    return sent[0]


def produce(kafka: KafkaTools, topics: Topics, events: list[Produced]) -> None:
    for event_type in TYPES:
        records = [e.record for e in events if e.event_type == event_type]
        if records:
            kafka.produce(topics.names[event_type], records)


def expected_state(
    events: list[Produced], project_type: str, ownership: DeviceOwnership = "shared"
) -> list[dict[str, Any]]:
    """Iterable's state after applying the valid events in stream order (the oracle); with
    exclusive `ownership` the newest registration owns its token (a handoff's calls)."""
    project = Project(project_type)  # type: ignore[arg-type]
    translator = Translator(project_type, device_ownership=ownership)  # type: ignore[arg-type]
    handlers: dict[str, Callable[[dict[str, Any], float], object]] = {
        "users/update": project.update,
        "users/registerDeviceToken": project.register_device,
        "users/disableDevice": project.disable_device,
        "users/updateEmail": project.update_email,
    }
    for produced in sorted(events, key=lambda e: e.seq):
        try:
            event = parse(produced.record.value, produced.record.headers)
        except InvalidEvent:
            continue  # invalid events change nothing
        for call in translator.calls(event):
            try:
                handlers[call.endpoint.value](json.loads(json.dumps(call.payload)), 0.0)
            except ApiError:
                break
    return normalise([u.as_json() for u in project.users])


def normalise(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Profiles without timestamps or random placeholder addresses, in a stable order."""
    out = []
    for profile in users:
        user = {k: v for k, v in profile.items() if k not in ("signupDate", "profileUpdatedAt")}
        if str(user.get("email", "")).endswith("@placeholder.email"):
            user["email"] = "<placeholder>"
        fields = dict(user.get("dataFields", {}))
        # Only enabled devices count: a registration skipped as stale because a newer
        # revocation was applied first never creates the (disabled) entry (SPEC §5).
        enabled = [d for d in fields.get("devices", []) if d.get("endpointEnabled")]
        fields["devices"] = sorted(enabled, key=lambda d: d["token"])
        user["dataFields"] = fields
        if fields == {"devices": []}:
            # Nothing but a revoked device: the profile exists only if its registration was
            # applied before the newer revocation; seen after it, the registration is stale
            # and never sent (SPEC §5), so the profile is never made. Either is correct.
            continue
        out.append(user)
    return sorted(out, key=lambda u: (str(u.get("userId")), str(u.get("email"))))


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def all_committed(kafka: KafkaTools, group: str, topics: Topics) -> bool:
    for name in topics.names.values():
        ends = kafka.end_offsets(name)
        committed = kafka.committed(group, name)
        if any(committed.get(p, -1) < end for p, end in ends.items() if end > 0):
            return False
    return True


def events_committed(kafka: KafkaTools, group: str, topics: Topics) -> int:
    """Events the group has committed over every topic (their offsets start at 0)."""
    return sum(
        max(0, offset)
        for name in topics.names.values()
        for offset in kafka.committed(group, name).values()
    )


def behind(kafka: KafkaTools, group: str, topics: Topics) -> dict[str, tuple[int, int]]:
    """`topic[partition]` → (committed, end) for every partition not committed to its end."""
    found: dict[str, tuple[int, int]] = {}
    for name in topics.names.values():
        committed = kafka.committed(group, name)
        for partition, end in kafka.end_offsets(name).items():
            if end > 0 and committed.get(partition, -1) < end:
                found[f"{name}[{partition}]"] = (committed.get(partition, -1), end)
    return found


def first_application_order(calls: list[dict[str, Any]]) -> Iterator[tuple[str, list[int]]]:
    """Per user, the `n` of each successful update in the order each first reached Iterable.

    A coalesced call carries several events but one `n` (the last one's); a stream built
    with `markers` names each of them, so an event hidden in a coalesced call and sent
    again alone after a rebalance does not read as first applied out of order."""
    seen: dict[str, list[int]] = {}
    for body in applied_updates(calls):
        fields = body.get("dataFields") or {}
        n = fields.get("n")
        key = str(body.get("userId") or body.get("email"))
        for each in sorted(markers(fields)) or ([n] if isinstance(n, int) else []):
            if each not in seen.setdefault(key, []):
                seen[key].append(each)
    yield from seen.items()


def markers(fields: dict[str, Any]) -> list[int]:
    """The `n` of every event whose marker (`m<k>`, `StreamBuilder.markers`) is here."""
    return [v for k, v in fields.items() if k[:1] == "m" and k[1:].isdigit() and isinstance(v, int)]


def applied_updates(calls: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The user records of accepted `users/update` calls and `bulkUpdate` requests (a
    record a bulk response refused inside its 200 is listed too)."""
    for call in calls:
        body = call.get("body")
        if call["status"] != 200 or not isinstance(body, dict):
            continue
        if call["path"] == "/api/users/update":
            yield body
        elif call["path"] == "/api/users/bulkUpdate":
            yield from body.get("users", [])


def consumer_env(
    kafka: KafkaTools,
    emulator: EmulatorProcess,
    group: str,
    topics_env: dict[str, str],
    **extra: str,
) -> dict[str, str]:
    """Environment for a consumer process against a local broker and the emulator."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_GROUP_ID": group,
        "ITERABLE_API_KEY": emulator.api_key,
        "ITERABLE_BASE_URL": emulator.url,
        "ITERABLE_ALLOW_INSECURE_HTTP": "true",  # the emulator speaks plain http
        "ITERABLE_PROJECT_TYPE": emulator.project_type,
        "LOG_LEVEL": "debug",
        # Session timeouts are the broker's (KIP-848); the local broker keeps them short.
        # Commits and key probes more often than the defaults, so tests that wait for a
        # committed offset or a fixed key do not wait seconds for it.
        "CONSUMER_COMMIT_INTERVAL_SECONDS": "0.2",
        "CONSUMER_CREDENTIALS_PROBE_SECONDS": "0.5",
        **topics_env,
        **extra,
    }
