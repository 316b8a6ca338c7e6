"""The consumer end to end: real broker, real emulator over HTTP, the service as a process.

Every test checks the final Iterable state against the oracle (`pipeline.expected_state`),
the committed offsets, and the dead-letter topics — what a user relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.examples import load
from consumer.dev.scenario import (
    StreamBuilder,
    Topics,
    all_committed,
    expected_state,
    first_application_order,
    normalise,
    produce,
    scoped_by,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record
from consumer.dlq import original_headers

Start = Callable[..., ConsumerProcess]


def _settle(kafka: KafkaTools, group: str, topics: Topics, timeout: float = 60.0) -> None:
    wait_for(lambda: all_committed(kafka, group, topics), timeout, "offsets committed to the end")


def consumed(process: ConsumerProcess) -> float:
    """Messages a consumer process received, from its own metrics."""
    return _metric(process, "iterable_consumer_events_consumed_total")


def _dead_letters(kafka: KafkaTools, topics: Topics) -> list[Record]:
    return [r for t in topics.names for r in kafka.read_all(topics.dlq(t))]


@pytest.mark.parametrize("project_type", ["hybrid", "email", "userId"])
def test_every_event_type_lands_exactly_in_each_project_type(
    kafka: KafkaTools,
    group_id: str,
    topics: Topics,
    emulators: dict[str, EmulatorProcess],
    start: Start,
    project_type: str,
) -> None:
    emulator = emulators[project_type]
    emulator.reset()
    events = StreamBuilder(users=15, scoped_by=scoped_by(project_type)).events(300)
    produce(kafka, topics, events)
    start(emulator)
    _settle(kafka, group_id, topics)
    assert normalise(emulator.state()["users"]) == expected_state(events, project_type)
    assert _dead_letters(kafka, topics) == []


def test_poison_pills_are_dead_lettered_with_their_reason_and_good_events_applied(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    good = StreamBuilder(users=10).events(200)
    invalid = load("invalid")
    # Poison on every partition of every topic, between good events of the same partitions.
    batches: dict[str, list[Record]] = {name: [] for name in topics.names.values()}
    for i, event in enumerate(good):
        if i % 2 == 0 and i // 2 < len(invalid):
            example = invalid[i // 2]
            poison = Record(b"poison", example.value, example.headers, partition=i % 3)
            batches[topics.names[example.event_type]].append(poison)
        key = event.record.key or b""  # one entity, one partition: keep its order
        pinned = Record(key, event.record.value, partition=sum(key) % 3)
        batches[topics.names[event.event_type]].append(pinned)
    oversized = Record(
        b"big",
        good[0].record.value.replace(b'"n"', b'"pad": "' + b"x" * 70_000 + b'", "n"'),
        partition=0,
    )
    batches[topics.names["user.changed"]].insert(3, oversized)
    for name, records in batches.items():
        kafka.produce(name, records)
    assert len(good) // 2 >= len(invalid)
    # The poison is packed at partition starts (20 in a row open a 1.0 circuit): this test is
    # about what is dead-lettered, not about the circuit.
    start(emulator, DLQ_BREAKER_MIN_EVENTS="1000000", CONSUMER_MAX_EVENT_BYTES="65536")
    _settle(kafka, group_id, topics)

    assert normalise(emulator.state()["users"]) == expected_state(good, "hybrid")
    letters = _dead_letters(kafka, topics)
    assert len(letters) == len(invalid) + 1
    too_big = [dict(r.headers) for r in letters if r.key == b"big"]
    assert too_big[0]["dlq.error.message"].startswith(b"value: is ")
    by_message = {
        (dict(r.headers)["dlq.source.topic"], r.value, original_headers(r.headers)): dict(r.headers)
        for r in letters
    }
    for example in invalid:
        message = (topics.names[example.event_type].encode(), example.value, example.headers)
        headers = by_message[message]
        assert headers["dlq.error.class"] == b"InvalidEvent"
        assert example.field is not None
        assert example.field.encode() in headers["dlq.error.message"]
        assert int(headers["dlq.source.offset"]) >= 0
        assert headers["dlq.source.partition"] in (b"0", b"1", b"2")


def test_kill_9_three_times_mid_stream_loses_nothing(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    emulator.faults(latency_ms=5)
    builder = StreamBuilder(users=25)
    events = builder.events(1500)
    produce(kafka, topics, events)
    # 100 calls per life, not 300: coalescing sends the ~1,050 user updates of 25 users in
    # far fewer calls than events, and 900 calls could outlast the whole stream.
    for _ in range(3):
        process = start(emulator)
        target = len(emulator.calls()) + 100
        wait_for(lambda: len(emulator.calls()) > target, 60, "progress")  # noqa: B023 - used at once
        process.kill()
    start(emulator)
    _settle(kafka, group_id, topics, timeout=120)
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert _dead_letters(kafka, topics) == []


# The classic protocol keeps the session timeout in the client: short, as the broker's.
CLASSIC = {
    "KAFKA_GROUP_PROTOCOL": "classic",
    "KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS": "500",
}


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_a_rebalance_mid_stream_keeps_order_and_loses_nothing(
    kafka: KafkaTools,
    group_id: str,
    topics: Topics,
    emulator: EmulatorProcess,
    start: Start,
    protocol: str,
) -> None:
    """Both group protocols keep partition i of both device topics on one member, so
    device state is exact across members, as are profiles and per-user order."""
    # Slow enough that the stream outlives both rebalances.
    emulator.faults(latency_ms=30)
    # Markers name every event a coalesced call carries: an event hidden in one and sent
    # again alone after the rebalance (at least once) is not first applied out of order.
    events = StreamBuilder(users=30, markers=True).events(2000)
    produce(kafka, topics, events)
    config = {"CONSUMER_MAX_IN_FLIGHT": "8", **(CLASSIC if protocol == "classic" else {})}
    first = start(emulator, **config)
    wait_for(lambda: len(emulator.calls()) > 100, 60, "progress")
    second = start(emulator, **config)
    wait_for(lambda: consumed(second) > 0, 60, "the second member receiving work")
    calls = len(emulator.calls())
    wait_for(lambda: len(emulator.calls()) > calls + 200, 60, "progress with two members")
    assert second.terminate() == 0
    assert len(emulator.calls()) < len(events)  # it left mid-stream
    _settle(kafka, group_id, topics, timeout=120)
    assert first.probe("/readyz") == 200
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    for user, order in first_application_order(emulator.calls()):
        assert order == sorted(order), f"updates for {user} first applied out of order"


def _metric(process: ConsumerProcess, name: str) -> float:
    lines = [line for line in process.metrics().splitlines() if line.startswith(name)]
    return sum(float(line.split()[-1]) for line in lines)


def test_an_iterable_outage_pauses_with_bounded_memory_then_everything_lands(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    events = StreamBuilder(users=40).events(800)
    produce(kafka, topics, events)
    emulator.faults(outage_seconds=20)
    process = start(
        emulator, CONSUMER_MAX_BUFFERED="200", CONSUMER_MAX_BUFFERED_PER_PARTITION="100"
    )
    wait_for(lambda: _metric(process, "iterable_consumer_paused_partitions") > 0, 30, "a pause")
    peak = 0.0
    while emulator.faults()["outage_seconds_left"] > 1:
        peak = max(peak, _metric(process, "iterable_consumer_buffered_events"))
        assert process.probe("/livez") == 200
    assert 0 < peak <= 200
    _settle(kafka, group_id, topics, timeout=90)
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert _dead_letters(kafka, topics) == []
    assert (
        _metric(
            process,
            'iterable_consumer_iterable_requests_total{endpoint="users/update",status_class="5xx"}',
        )
        > 0
    )


def test_a_429_storm_dead_letters_nothing_and_everything_lands(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    events = StreamBuilder(users=30).events(600)
    produce(kafka, topics, events)
    emulator.faults(throttle_seconds=5, retry_after=1)
    start(emulator)
    _settle(kafka, group_id, topics, timeout=90)
    assert any(call["status"] == 429 for call in emulator.calls())
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert _dead_letters(kafka, topics) == []


def test_a_wrong_api_key_holds_everything_until_the_key_works(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    events = StreamBuilder(users=10).events(200)
    produce(kafka, topics, events)
    emulator.faults(api_keys=["a-different-key"])
    process = start(emulator)
    wait_for(
        lambda: (
            process.probe("/readyz") == 503
            and _metric(process, "iterable_consumer_credentials_failed") == 1
        ),
        30,
        "credentials failure reported",
    )
    assert process.probe("/livez") == 200
    assert (
        sum(1 for line in process.logs().splitlines() if "Iterable refuses every call" in line) == 1
    )
    assert emulator.state()["users"] == []

    emulator.faults(api_keys=[emulator.api_key])
    _settle(kafka, group_id, topics)
    wait_for(lambda: process.probe("/readyz") == 200, 10, "ready again")
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert _dead_letters(kafka, topics) == []


def test_a_revocation_consumed_before_an_older_registration_leaves_the_device_disabled(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    builder = StreamBuilder()
    registered_at = builder.next_time()
    revoked_at = builder.next_time()
    ids = {"userId": "u-race", "email": "race@example.com"}
    device = {"token": "race-token", "platform": "APNS", "applicationName": "App"}
    register = builder.make(
        "device.registered", "race-token", {**ids, "device": device}, when=registered_at
    )
    revoke = builder.make(
        "push.permission.revoked",
        "race-token",
        {"token": "race-token", "userId": "u-race"},
        when=revoked_at,
    )
    produce(kafka, topics, [revoke])
    start(emulator)
    _settle(kafka, group_id, topics)
    produce(kafka, topics, [register])
    _settle(kafka, group_id, topics)

    user = emulator.user_by_id("u-race")
    enabled = [
        d for d in (user or {}).get("dataFields", {}).get("devices", []) if d["endpointEnabled"]
    ]
    assert enabled == []
    assert not any(c["path"] == "/api/users/registerDeviceToken" for c in emulator.calls())


def test_sigterm_under_load_finishes_in_flight_calls_commits_and_exits_0(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    emulator.faults(latency_ms=200)
    events = StreamBuilder(users=50).events(600)
    produce(kafka, topics, events)
    process = start(emulator)
    wait_for(
        lambda: _metric(process, "iterable_consumer_in_flight_events") > 10, 30, "calls in flight"
    )
    assert process.terminate(timeout=30) == 0
    calls = emulator.calls()
    # Every call that was sent got its answer before the process left.
    assert all(call["status"] == 200 for call in calls)
    committed = sum(
        max(0, o)
        for name in topics.names.values()
        for o in kafka.committed(group_id, name).values()
    )
    assert committed > 0
    start(emulator)
    _settle(kafka, group_id, topics)
    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")


def test_the_dead_letter_circuit_opens_on_a_poison_flood_and_holds_consumption(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    good = StreamBuilder(users=10).events(100)
    poison = [Record(b"poison", b"{not json", partition=0) for _ in range(100)]
    mixed = [r for pair in zip(poison, [e.record for e in good], strict=True) for r in pair]
    kafka.produce(topics.names["user.changed"], mixed)
    process = start(
        emulator,
        DLQ_BREAKER_RATIO="0.3",
        DLQ_BREAKER_MIN_EVENTS="10",
        DLQ_BREAKER_COOLDOWN_SECONDS="600",
        CONSUMER_MAX_BUFFERED="20",  # fetch a little at a time, so the pause bites
    )
    wait_for(
        lambda: _metric(process, "iterable_consumer_dead_letter_circuit_open") == 1,
        60,  # 30 s was missed under load now and then (closing note: being looked into)
        "the circuit to open",
    )
    assert process.probe("/readyz") == 503
    assert "dead_letter_circuit" in httpx.get(f"{process.url}/readyz").text
    wait_for(lambda: _metric(process, "iterable_consumer_paused_partitions") > 0, 10, "a pause")
    # Consumption stopped short of the end, and what was committed was all handled.
    committed = kafka.committed(group_id, topics.names["user.changed"])
    ends = kafka.end_offsets(topics.names["user.changed"])
    assert sum(max(0, c) for c in committed.values()) < sum(ends.values())
    # The share is judged over the stream in offset order: good events of the other
    # partitions may be counted first, so up to the ratio's worth goes out, never all.
    dead = len(kafka.read_all(topics.dlq("user.changed")))
    assert 0 < dead < len(poison) // 2
    # Once open, nothing buffered is dead-lettered (a short look: it must not change).
    later = time.monotonic() + 2
    while time.monotonic() < later:
        assert len(kafka.read_all(topics.dlq("user.changed"))) == dead


def test_a_backlog_with_a_little_poison_never_opens_the_dead_letter_circuit(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    """17 invalid events among 6,662 (0.25%), as found in the field: invalid events finish
    at once while valid ones wait for Iterable, so the first outcomes are dead letters."""
    emulator.faults(latency_ms=200)  # about Iterable's own
    good = StreamBuilder(users=40).events(6645)
    batches: dict[str, list[Record]] = {name: [] for name in topics.names.values()}
    for i, event in enumerate(good):
        name = topics.names[event.event_type]
        if i % 391 == 0:
            batches[name].append(Record(b"poison", b"{not json", partition=i % 3))
        key = event.record.key or b""  # one entity, one partition: keep its order
        batches[name].append(Record(key, event.record.value, partition=sum(key) % 3))
    for name, records in batches.items():
        kafka.produce(name, records)
    process = start(emulator)
    wait_for(lambda: process.probe("/readyz") == 200, 30, "ready")
    seen_open: list[float] = []
    unready: list[int | None] = []

    def settled() -> bool:
        seen_open.append(_metric(process, "iterable_consumer_dead_letter_circuit_open"))
        if (answer := process.probe("/readyz")) != 200:
            unready.append(answer)
        return all_committed(kafka, group_id, topics)

    wait_for(settled, 120, "offsets committed to the end", interval=0.1)
    assert max(seen_open) == 0
    assert unready == []
    assert normalise(emulator.state()["users"]) == expected_state(good, "hybrid")
    assert len(_dead_letters(kafka, topics)) == 17
