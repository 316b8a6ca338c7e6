"""Which partitions pause: the buffer's bounds, fair shares, and no flapping."""

from __future__ import annotations

from consumer.backpressure import BufferLimits, to_pause

LIMITS = BufferLimits(total=1000, per_partition=400)
USERS = [f"user.changed/{n}" for n in range(4)]
DEVICES = [f"device.registered/{n}" for n in range(4)]


def pause(
    pending: dict[str, int],
    at_end: frozenset[str] = frozenset(),
    paused: frozenset[str] = frozenset(),
    held: bool = False,
) -> set[str]:
    return to_pause(pending, at_end=at_end, paused=paused, limits=LIMITS, held=held)


def test_under_every_bound_nothing_pauses() -> None:
    assert pause(dict.fromkeys(USERS + DEVICES, 50)) == set()


def test_a_full_buffer_pauses_nothing_the_source_takes_only_the_room_left() -> None:
    # Pausing makes librdkafka drop what it prefetched: the total is kept by taking less.
    assert pause(dict.fromkeys(USERS + DEVICES, 124)) == set()  # 992, in the overflow


def test_a_stall_reaching_the_bound_pauses_everything_until_there_is_room_again() -> None:
    assert (LIMITS.fill, LIMITS.overflow) == (990, 10)
    stalled = dict.fromkeys(USERS + DEVICES, 125)  # 1,000: a poll's message at a time added up
    everything = frozenset(stalled)
    assert pause(stalled) == everything
    assert pause(dict.fromkeys(stalled, 124), paused=everything) == everything  # 992: no room
    assert pause(dict.fromkeys(stalled, 123), paused=everything) == set()  # 984: room again


def test_one_partition_over_its_own_bound_pauses_alone() -> None:
    pending = {USERS[0]: 400, USERS[1]: 10}
    assert pause(pending) == {USERS[0]}
    assert pause({USERS[0]: 330, USERS[1]: 10}, paused=frozenset({USERS[0]})) == {USERS[0]}
    assert pause({USERS[0]: 310, USERS[1]: 10}, paused=frozenset({USERS[0]})) == set()  # < 80%


def test_once_half_full_a_backlog_on_one_topic_leaves_room_for_the_others() -> None:
    # 4 user partitions at 250 (990 in all) and 4 device partitions just starting: share 125.
    pending = {**dict.fromkeys(USERS, 250), USERS[0]: 240, **dict.fromkeys(DEVICES, 0)}
    assert pause(pending) == set(USERS[1:])  # at twice the share
    # Paused, a user partition resumes only once under its share.
    users = frozenset(USERS)
    assert pause({**pending, **dict.fromkeys(USERS, 130)}, paused=users) == users
    assert pause({**pending, **dict.fromkeys(USERS, 120)}, paused=users) == set()


def test_an_even_backlog_at_the_fair_share_does_not_pause_or_flap() -> None:
    assert pause(dict.fromkeys(USERS + DEVICES, 124)) == set()
    assert pause({**dict.fromkeys(USERS + DEVICES, 110), USERS[0]: 220}) == set()  # 990


def test_partitions_read_to_their_end_do_not_take_a_share() -> None:
    # Only the user topic has events: its 4 partitions share the whole buffer.
    pending = {**dict.fromkeys(USERS, 251), USERS[0]: 200, **dict.fromkeys(DEVICES, 0)}
    assert pause(pending, at_end=frozenset(DEVICES)) == set()
    assert pause(pending) == set(USERS[1:])  # not known to be empty: they keep their share


def test_a_hold_pauses_everything() -> None:
    assert pause(dict.fromkeys(USERS, 0), held=True) == set(USERS)
