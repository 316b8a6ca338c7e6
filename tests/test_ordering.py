"""Lanes, the duplicate window and the device event-time guard (SPEC §5)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, parse
from consumer.ordering import DeviceGuard, DuplicateWindow, LaneKeys, Lanes, Lru

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EARLY, LATE = T0, T0 + timedelta(seconds=1)
PROFILE = ("userId:42", "email:a@example.com")


def _event(event_type: str, data: dict[str, Any], event_id: str = "1") -> Event:
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/t",
        "type": event_type,
        "data": data,
    }
    return parse(json.dumps(envelope).encode())


def _register(token: str = "t", user_id: str = "42") -> DeviceRegistered:
    data = {
        "userId": user_id,
        "device": {"token": token, "platform": "GCM", "applicationName": "A"},
    }
    registered = _event("device.registered", data).data
    assert isinstance(registered, DeviceRegistered)
    return registered


def _revoke(token: str = "t", **scope: str) -> PushPermissionRevoked:
    revoked = _event("push.permission.revoked", {"token": token, **scope}).data
    assert isinstance(revoked, PushPermissionRevoked)
    return revoked


def test_a_user_event_has_a_lane_per_identifier_it_names() -> None:
    keys = LaneKeys()
    change = {"userId": "1", "email": "b@b.co", "previousEmail": "a@b.co"}
    assert keys(_event("user.changed", change)) == (
        "user:id:1",
        "user:email:b@b.co",
        "user:email:a@b.co",
    )
    assert keys(_event("user.changed", {"email": "c@b.co"})) == ("user:email:c@b.co",)


def test_an_email_seen_with_a_user_id_also_takes_that_user_id_lane() -> None:
    keys = LaneKeys()
    keys(_event("user.changed", {"userId": "1", "email": "a@b.co"}))
    assert keys(_event("user.changed", {"email": "a@b.co"})) == ("user:id:1", "user:email:a@b.co")
    moved = keys(_event("user.changed", {"email": "b@b.co", "previousEmail": "a@b.co"}))
    assert moved == ("user:id:1", "user:email:b@b.co", "user:email:a@b.co")
    assert keys(_event("user.changed", {"email": "b@b.co"}))[0] == "user:id:1"


def test_email_links_are_bounded() -> None:
    keys = LaneKeys(size=1)
    keys(_event("user.changed", {"userId": "1", "email": "a@b.co"}))
    keys(_event("user.changed", {"userId": "2", "email": "b@b.co"}))
    assert keys(_event("user.changed", {"email": "a@b.co"})) == ("user:email:a@b.co",)


def test_a_device_event_has_its_token_lane() -> None:
    keys = LaneKeys()
    device = {"token": "x", "platform": "GCM", "applicationName": "A"}
    assert keys(_event("device.registered", {"userId": "1", "device": device})) == ("token:x",)
    assert keys(_event("push.permission.revoked", {"token": "x", "userId": "1"})) == ("token:x",)


@dataclass(eq=False)
class _Queued:
    name: str
    keys: tuple[str, ...]
    waiting: int = 0


def test_an_item_runs_once_it_heads_every_lane_it_is_in() -> None:
    lanes: Lanes[_Queued] = Lanes()
    a, b, both = _Queued("a", ("a",)), _Queued("b", ("b",)), _Queued("ab", ("a", "b"))
    later_a, alone = _Queued("a2", ("a",)), _Queued("none", ())
    assert [lanes.add(i) for i in (a, b, both, later_a, alone)] == [True, True, False, False, True]
    assert lanes.release(a) == []  # `both` still waits for b
    assert lanes.release(b) == [both]
    assert lanes.release(both) == [later_a]
    assert lanes.release(later_a) == []
    assert len(lanes) == 0


def test_dropping_waiting_items_lets_the_ones_behind_them_run() -> None:
    lanes: Lanes[_Queued] = Lanes()
    running, dropped = _Queued("run", ("a",)), _Queued("drop", ("a", "b"))
    behind = _Queued("behind", ("b",))
    for item in (running, dropped, behind):
        lanes.add(item)
    assert lanes.drop(lambda i: i.name in ("drop", "run")) == [behind]  # a running one stays
    assert lanes.release(running) == []
    assert lanes.release(behind) == []
    assert len(lanes) == 0


def test_the_duplicate_window_remembers_applied_events_only() -> None:
    window = DuplicateWindow(size=2)
    first = _event("user.changed", {"userId": "1"}, event_id="a")
    assert not window.seen(first, "p0")
    window.remember(first, "p0")
    assert window.seen(first, "p0")
    for other in ("b", "c"):
        window.remember(_event("user.changed", {"userId": "1"}, event_id=other), "p0")
    assert not window.seen(first, "p0")  # bounded: the oldest is forgotten


def test_a_partition_that_leaves_forgets_its_duplicates() -> None:
    window = DuplicateWindow(size=10)
    event = _event("user.changed", {"userId": "1"})
    window.remember(event, "p0")
    window.remember(event, "p1")
    window.forget("p0")
    assert not window.seen(event, "p0")
    assert window.seen(event, "p1")


def test_lru_forgets_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.get("a")
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)


def test_a_registration_older_than_an_applied_scoped_revocation_is_stale() -> None:
    guard = DeviceGuard(100)
    guard.applied(_revoke(userId="42"), ("userId:42",), LATE)
    assert guard.decide(_register(), PROFILE, EARLY).stale


def test_the_profile_matches_under_either_identifier() -> None:
    guard = DeviceGuard(100)
    guard.applied(_register(), PROFILE, LATE)
    assert guard.decide(_revoke(email="a@example.com"), ("email:a@example.com",), EARLY).stale


def test_a_registration_older_than_a_global_revocation_is_stale() -> None:
    guard = DeviceGuard(100)
    guard.applied(_revoke(), (), LATE)
    assert guard.decide(_register(), PROFILE, EARLY).stale
    assert not guard.decide(_register(), PROFILE, LATE + timedelta(seconds=1)).stale


def test_an_older_global_revocation_is_sent_then_newer_registrations_again() -> None:
    guard = DeviceGuard(100)
    newer = _register()
    guard.applied(newer, PROFILE, LATE)
    decision = guard.decide(_revoke(), (), EARLY)
    assert not decision.stale
    assert decision.replay == (newer,)


def test_newer_events_are_never_stale() -> None:
    guard = DeviceGuard(100)
    guard.applied(_register(), PROFILE, EARLY)
    assert not guard.decide(_revoke(userId="42"), ("userId:42",), LATE).stale
    assert not guard.decide(_register(token="other"), PROFILE, EARLY).stale


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_late_global_revocation_does_not_re_send_a_registration_revoked_on_its_profile() -> None:
    guard = DeviceGuard(100)
    guard.applied(_register(), PROFILE, _at(2))
    guard.applied(_revoke(userId="42"), ("userId:42",), _at(3))
    assert guard.decide(_revoke(), (), _at(1)).replay == ()


def test_a_late_global_revocation_does_not_re_send_a_registration_a_newer_one_revoked() -> None:
    guard = DeviceGuard(100)
    guard.applied(_register(), PROFILE, _at(5))
    guard.applied(_revoke(), (), _at(6))
    assert guard.decide(_revoke(), (), _at(4)).replay == ()


def test_a_late_global_revocation_re_sends_only_the_registrations_still_enabled() -> None:
    guard = DeviceGuard(100)
    kept, revoked = _register(user_id="42"), _register(user_id="7")
    guard.applied(kept, PROFILE, _at(3))
    guard.applied(revoked, ("userId:7",), _at(3))
    guard.applied(_revoke(userId="7"), ("userId:7",), _at(4))
    guard.applied(_register(user_id="9"), ("userId:9",), _at(1))  # older than the revocation
    assert guard.decide(_revoke(), (), _at(2)).replay == (kept,)


def test_a_registration_re_sent_after_an_older_global_revocation_still_counts() -> None:
    guard = DeviceGuard(100)
    newer = _register()
    guard.applied(newer, PROFILE, _at(5))
    guard.applied(_revoke(), (), _at(4))  # sent, then the newer registration again
    assert guard.decide(_revoke(), (), _at(3)).replay == (newer,)
    assert guard.decide(_revoke(userId="42"), ("userId:42",), _at(4)).stale


def test_a_scoped_revocation_under_another_identifier_also_blocks_the_replay() -> None:
    guard = DeviceGuard(100)
    guard.applied(_register(), PROFILE, _at(2))
    guard.applied(_revoke(email="a@example.com"), ("email:a@example.com",), _at(3))
    assert guard.decide(_revoke(), (), _at(1)).replay == ()


def test_a_newer_registration_after_a_scoped_revocation_is_re_sent() -> None:
    guard = DeviceGuard(100)
    latest = _register()
    guard.applied(_register(), PROFILE, _at(2))
    guard.applied(_revoke(userId="42"), ("userId:42",), _at(3))
    guard.applied(latest, PROFILE, _at(4))
    assert guard.decide(_revoke(), (), _at(1)).replay == (latest,)
