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


def test_at_the_total_bound_everything_pauses_and_resumes_only_below_80_percent() -> None:
    full = dict.fromkeys(USERS + DEVICES, 125)
    assert pause(full) == set(full)
    everything = frozenset(full)
    assert pause(dict.fromkeys(full, 110), paused=everything) == everything  # 880: still held
    assert pause(dict.fromkeys(full, 95), paused=everything) == set()  # 760: under 80%


def test_one_partition_over_its_own_bound_pauses_alone() -> None:
    pending = {USERS[0]: 400, USERS[1]: 10}
    assert pause(pending) == {USERS[0]}


def test_once_half_full_a_backlog_on_one_topic_leaves_room_for_the_others() -> None:
    # 4 user partitions at 130 (520, over half) and 4 device partitions just starting.
    pending = {**dict.fromkeys(USERS, 130), **dict.fromkeys(DEVICES, 5)}
    assert pause(pending) == set(USERS)  # share: 1000 / 8 = 125


def test_partitions_read_to_their_end_do_not_take_a_share() -> None:
    # Only the user topic has events: its 4 partitions share the whole buffer.
    pending = {**dict.fromkeys(USERS, 200), **dict.fromkeys(DEVICES, 0)}
    assert pause(pending, at_end=frozenset(DEVICES)) == set()
    assert pause(pending) == set(USERS)  # not known to be empty: they keep their share


def test_a_hold_pauses_everything() -> None:
    assert pause(dict.fromkeys(USERS, 0), held=True) == set(USERS)
