"""Lanes, the duplicate window and the device event-time guard (SPEC §5)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.events import DeviceRegistered, Event, PushPermissionRevoked, parse
from consumer.ordering import Decision, DeviceGuard, DuplicateWindow, LaneKeys, Lanes, Lru

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


def test_taking_followers_removes_those_waiting_for_the_head_alone() -> None:
    lanes: Lanes[_Queued] = Lanes()
    head, one, two = _Queued("h", ("a", "b")), _Queued("1", ("a", "b")), _Queued("2", ("a", "b"))
    other, after = _Queued("o", ("a",)), _Queued("3", ("a", "b"))
    for item in (head, one, two, other, after):
        lanes.add(item)
    assert lanes.take(head, lambda i: True, limit=5) == [one, two]  # `other` stops the take
    assert lanes.release(head) == [other]
    assert lanes.release(other) == [after]
    assert lanes.release(after) == []
    assert len(lanes) == 0


def test_a_take_stops_at_the_first_follower_refused_or_at_its_limit() -> None:
    lanes: Lanes[_Queued] = Lanes()
    head, *rest = (_Queued(str(n), ("a",)) for n in range(5))
    for item in (head, *rest):
        lanes.add(item)
    assert lanes.take(head, lambda i: i.name != "3", limit=5) == rest[:2]
    assert lanes.take(head, lambda i: True, limit=1) == [rest[2]]
    assert lanes.release(head) == [rest[3]]


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


# -- exclusive ownership: a registration is a handoff (a global revocation at its time) -----

A, B = ("userId:a",), ("userId:b",)


def _exclusive() -> DeviceGuard:
    return DeviceGuard(100, exclusive=True)


def test_a_handoff_makes_an_older_registration_of_another_profile_stale() -> None:
    guard = _exclusive()
    guard.applied(_register(user_id="b"), B, _at(2))
    assert guard.decide(_register(user_id="a"), A, _at(1)).stale
    assert not DeviceGuard(100).decide(_register(user_id="a"), A, _at(1)).stale  # shared


def test_a_handoff_names_the_profile_it_takes_the_token_from() -> None:
    guard = _exclusive()
    assert guard.decide(_register(user_id="a"), A, _at(1)) == Decision(stale=False, handoff=True)
    guard.applied(_register(user_id="a"), A, _at(1))
    to_b = guard.decide(_register(user_id="b"), B, _at(2))
    assert (to_b.handoff, to_b.taken_from) == (True, A)
    guard.applied(_register(user_id="b"), B, _at(2))
    # Back to a: only b holds it now (a lost it to b's handoff).
    assert guard.decide(_register(user_id="a"), A, _at(3)).taken_from == B


def test_a_token_revoked_since_its_last_registration_is_taken_from_nobody() -> None:
    guard = _exclusive()
    guard.applied(_register(user_id="a"), A, _at(1))
    guard.applied(_revoke(userId="a"), A, _at(2))
    assert guard.decide(_register(user_id="b"), B, _at(3)).taken_from == ()


def test_a_later_scoped_or_global_revocation_still_wins_over_a_handoff() -> None:
    guard = _exclusive()
    guard.applied(_register(user_id="b"), B, _at(2))
    assert not guard.decide(_revoke(userId="b"), B, _at(3)).stale
    assert guard.decide(_revoke(), (), _at(3)) == Decision(stale=False)
    assert guard.decide(_revoke(userId="b"), B, _at(1)).stale  # older than b's registration


def test_a_global_revocation_older_than_a_handoff_is_stale_and_re_sends_nothing() -> None:
    # The handoff disabled every profile after it; sending it would disable b for good.
    guard = _exclusive()
    guard.applied(_register(user_id="a"), A, _at(1))
    guard.applied(_register(user_id="b"), B, _at(3))
    assert guard.decide(_revoke(), (), _at(2)) == Decision(stale=True)


def test_a_handoff_older_than_a_newer_event_of_its_profile_still_disables_the_others() -> None:
    guard = _exclusive()
    guard.applied(_register(user_id="b"), B, _at(1))
    guard.applied(_revoke(userId="a"), A, _at(3))
    decision = guard.decide(_register(user_id="a"), A, _at(2))
    assert (decision.stale, decision.disable_only, decision.handoff) == (False, True, False)
    guard.applied(_revoke(), (), _at(2))  # what the processor records for it
    assert guard.decide(_register(user_id="b"), B, _at(1)).stale


def test_a_handoff_whose_registration_was_refused_still_disabled_every_profile() -> None:
    guard = _exclusive()
    guard.disabled_everywhere("t", _at(2))
    assert guard.decide(_register(user_id="a"), A, _at(1)).stale


def test_only_the_newest_registration_is_re_sent_even_when_the_handoffs_are_forgotten() -> None:
    guard = DeviceGuard(2, exclusive=True)
    newest = _register(user_id="b")
    guard.applied(_register(user_id="a"), A, _at(2))
    guard.applied(newest, B, _at(3))
    for other in ("x", "y"):  # two other tokens push t out of the global revocations
        guard.disabled_everywhere(other, _at(4))
    assert guard.decide(_revoke(), (), _at(1)).replay == (newest,)
    shared = DeviceGuard(2)
    shared.applied(_register(user_id="a"), A, _at(2))
    shared.applied(newest, B, _at(3))
    assert len(shared.decide(_revoke(), (), _at(1)).replay) == 2


def test_a_restored_history_gives_the_same_decisions_as_the_live_one() -> None:
    # Live: a's registration arrives last and is stale. The look-back restores every
    # finished message, stale ones included, in event-time order.
    arrivals = [
        (_register(user_id="b"), B, _at(3)),
        (_revoke(userId="b"), B, _at(5)),
        (_register(user_id="a"), A, _at(1)),
    ]
    live, restored = _exclusive(), _exclusive()
    for data, profiles, when in arrivals:
        if not live.decide(data, profiles, when).stale:
            live.applied(data, profiles, when)
    for data, profiles, when in sorted(arrivals, key=lambda arrival: arrival[2]):
        restored.applied(data, profiles, when)
    probes = [
        (_register(user_id="a"), A, _at(2)),
        (_register(user_id="a"), A, _at(4)),
        (_revoke(), (), _at(2)),
        (_revoke(), (), _at(4)),
        (_revoke(userId="b"), B, _at(4)),
        (_register(user_id="c"), ("userId:c",), _at(6)),
    ]
    for data, profiles, when in probes:
        assert live.decide(data, profiles, when) == restored.decide(data, profiles, when)
