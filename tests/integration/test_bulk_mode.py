"""Bulk mode end to end: `user.changed` through `users/bulkUpdate`, devices one by one.

Same outcomes as single mode — the oracle's final state, offsets committed to the end,
refused records dead-lettered with their reason — plus what bulk mode promises: batches
of many users, never two entries for one user in a request, no single `users/update`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    StreamBuilder,
    Topics,
    all_committed,
    applied_updates,
    expected_state,
    first_application_order,
    normalise,
    produce,
    scoped_by,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools

Start = Callable[..., ConsumerProcess]
BULK = {"ITERABLE_USER_UPDATE_MODE": "bulk", "ITERABLE_BULK_LINGER_SECONDS": "0.05"}


def _bulk_requests(emulator: EmulatorProcess) -> list[list[dict[str, object]]]:
    return [c["body"]["users"] for c in emulator.calls() if c["path"] == "/api/users/bulkUpdate"]


@pytest.mark.parametrize("project_type", ["hybrid", "email", "userId"])
def test_bulk_mode_lands_every_event_exactly_in_each_project_type(
    kafka: KafkaTools,
    group_id: str,
    topics: Topics,
    emulators: dict[str, EmulatorProcess],
    start: Start,
    project_type: str,
) -> None:
    emulator = emulators[project_type]
    emulator.reset()
    # Markers name every event a coalesced entry carries, for the first-application order.
    builder = StreamBuilder(users=40, scoped_by=scoped_by(project_type), markers=True)
    events = builder.events(800)
    produce(kafka, topics, events)
    start(emulator, **BULK)
    wait_for(lambda: all_committed(kafka, group_id, topics), 60, "offsets committed to the end")

    assert normalise(emulator.state()["users"]) == expected_state(events, project_type)
    assert [r for t in topics.names for r in kafka.read_all(topics.dlq(t))] == []
    calls = emulator.calls()
    assert not [c for c in calls if c["path"] == "/api/users/update"]
    requests = _bulk_requests(emulator)
    assert max(len(users) for users in requests) > 1
    for users in requests:
        ids = Counter(str(u.get("userId") or u.get("email")) for u in users)
        assert max(ids.values()) == 1, "two entries for one user in one request"
    for user, order in first_application_order(calls):
        assert order == sorted(order), f"updates for {user} first applied out of order"


def test_a_refused_record_is_dead_lettered_alone_and_its_batch_applied(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    builder = StreamBuilder(users=30)
    events = builder.events(300)
    # `tier` is a string in the project; a number for it is refused (type mismatch).
    bad = builder.make("user.changed", "u3", {"userId": "u3", "dataFields": {"tier": 7}})
    events += [bad, *builder.events(300)]
    produce(kafka, topics, events)
    start(emulator, **BULK)
    wait_for(lambda: all_committed(kafka, group_id, topics), 60, "offsets committed to the end")

    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    letters = kafka.read_all(topics.dlq("user.changed"))
    assert [r.value for r in letters] == [bad.record.value]
    headers = dict(letters[0].headers)
    assert headers["dlq.iterable.code"] == b"invalidDataUserIds"
    assert b"u3" not in headers["dlq.error.message"]
    carried = [u for u in applied_updates(emulator.calls()) if u.get("userId") == "u3"]
    assert {"tier": 7} in [u["dataFields"] for u in carried]
    # The refused record rode in a request with others, which were applied.
    assert max(len(users) for users in _bulk_requests(emulator)) > 1


def test_bulk_mode_dead_letters_a_record_refused_through_its_data_fields_email(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    """About bulk mode (hence ITERABLE_USER_UPDATE_MODE=bulk, every other setting default):
    Iterable names a refused email change by the email in `dataFields`, not by the record's
    userId; that record is dead-lettered with the reason and its batch-mates applied."""
    builder = StreamBuilder(users=30)
    events = builder.events(300)
    # u3 moves to u4's address: refused as `conflictEmails: [user4@…]`.
    moved = {"userId": "u3", "email": "user4@example.com", "previousEmail": "user3@example.com"}
    conflict = builder.make("user.changed", "u3", moved)
    # A malformed address in dataFields: refused as `invalidEmails: [not-an-email]`.
    malformed = builder.make(
        "user.changed", "u5", {"userId": "u5", "dataFields": {"email": "not-an-email"}}
    )
    events += [conflict, malformed, *builder.events(300)]
    produce(kafka, topics, events)
    start(emulator, ITERABLE_USER_UPDATE_MODE="bulk")
    wait_for(lambda: all_committed(kafka, group_id, topics), 60, "offsets committed to the end")

    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    letters = {r.value: dict(r.headers) for r in kafka.read_all(topics.dlq("user.changed"))}
    assert set(letters) == {conflict.record.value, malformed.record.value}
    assert letters[conflict.record.value]["dlq.iterable.code"] == b"conflictEmails"
    assert letters[malformed.record.value]["dlq.iterable.code"] == b"invalidEmails"
    for headers in letters.values():
        assert b"example.com" not in headers["dlq.error.message"]
    # Each refused record rode in a request with others, which were applied.
    carrying = [
        users
        for users in _bulk_requests(emulator)
        if any("email" in (u.get("dataFields") or {}) for u in users)
    ]
    assert carrying
    assert all(len(users) > 1 for users in carrying)


def test_kill_9_mid_batch_loses_nothing_and_an_outage_is_waited_out(
    kafka: KafkaTools, group_id: str, topics: Topics, emulator: EmulatorProcess, start: Start
) -> None:
    """Offsets move only past answered requests: a consumer killed with requests out, and
    one facing an outage, leave nothing behind."""
    # Slow answers and few users: the stream outlives two kills and the outage.
    emulator.faults(latency_ms=200)
    events = StreamBuilder(users=60).events(2000)
    produce(kafka, topics, events)
    for _ in range(2):
        process = start(emulator, **BULK)
        target = len(_bulk_requests(emulator)) + 3
        wait_for(lambda: len(_bulk_requests(emulator)) >= target, 60, "bulk requests")  # noqa: B023 - used at once
        process.kill()
    # Longer than the next consumer takes to start and join: it meets the outage.
    emulator.faults(outage_seconds=10)
    start(emulator, **BULK)
    wait_for(lambda: all_committed(kafka, group_id, topics), 120, "offsets committed to the end")

    assert normalise(emulator.state()["users"]) == expected_state(events, "hybrid")
    assert [r for t in topics.names for r in kafka.read_all(topics.dlq(t))] == []
    assert any(c["status"] >= 500 for c in emulator.calls())
