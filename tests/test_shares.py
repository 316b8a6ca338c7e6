"""A pod's share of the project's limits follows the partitions it owns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.endpoints import Endpoint
from consumer.shares import FED_BY_EXCLUSIVE, endpoint_shares, partition_lags

TYPES = {
    "users": "user.changed",
    "registered": "device.registered",
    "revoked": "push.permission.revoked",
}
COUNTS = {"users": 12, "registered": 6, "revoked": 6}


def test_a_pod_owning_a_third_of_each_topic_paces_at_a_third() -> None:
    assigned = {("users", p) for p in range(4)} | {("registered", 0), ("registered", 1)}
    shares = endpoint_shares(assigned | {("revoked", 0), ("revoked", 1)}, COUNTS, TYPES)
    assert shares[Endpoint.UPDATE] == shares[Endpoint.BULK_UPDATE] == 4 / 12
    assert shares[Endpoint.REGISTER_DEVICE] == shares[Endpoint.DISABLE_DEVICE] == 2 / 6


def test_with_exclusive_ownership_disable_device_counts_both_device_topics() -> None:
    # Registrations call disableDevice too: the pod's share weighs both topics' partitions.
    assigned = {("registered", 0), ("registered", 1), ("revoked", 0)}
    lags = {("registered", 0): 9, ("revoked", 1): 9}
    shared = endpoint_shares(assigned, COUNTS, TYPES, lags)
    exclusive = endpoint_shares(assigned, COUNTS, TYPES, lags, fed_by=FED_BY_EXCLUSIVE)
    # Each topic weighs 6 + 9: one partition carries a lag of 9.
    assert shared[Endpoint.REGISTER_DEVICE] == exclusive[Endpoint.REGISTER_DEVICE] == 11 / 15
    assert shared[Endpoint.DISABLE_DEVICE] == 1 / 15
    assert exclusive[Endpoint.DISABLE_DEVICE] == (11 + 1) / 30
    unknown = endpoint_shares(assigned, {"registered": 6}, TYPES, fed_by=FED_BY_EXCLUSIVE)
    assert unknown[Endpoint.DISABLE_DEVICE] == 1.0  # a feeding topic's size unknown


def test_endpoints_of_a_topic_the_pod_does_not_own_get_no_share() -> None:
    shares = endpoint_shares({("users", 0)}, COUNTS, TYPES)
    assert shares[Endpoint.REGISTER_DEVICE] == 0.0
    assert shares[Endpoint.UPDATE] == 1 / 12


def test_an_unknown_partition_count_keeps_the_full_limit() -> None:
    assert endpoint_shares({("users", 0)}, {}, TYPES)[Endpoint.UPDATE] == 1.0


@given(st.integers(1, 12), st.lists(st.integers(0, 11), max_size=12), st.integers(1, 5))
def test_the_pods_of_a_group_never_share_more_than_the_whole_limit(
    partitions: int, owners: list[int], pods: int
) -> None:
    # Any split of a topic's partitions among pods: the pods' shares add up to at most 1.
    counts = {"users": partitions, "registered": partitions, "revoked": partitions}
    split: list[set[tuple[str, int]]] = [set() for _ in range(pods)]
    for partition, owner in enumerate(owners[:partitions]):
        for topic in counts:
            split[owner % pods].add((topic, partition))
    for endpoint in Endpoint:
        assert sum(endpoint_shares(s, counts, TYPES)[endpoint] for s in split) <= 1.0 + 1e-9
        exclusive = (endpoint_shares(s, counts, TYPES, fed_by=FED_BY_EXCLUSIVE) for s in split)
        assert sum(shares[endpoint] for shares in exclusive) <= 1.0 + 1e-9


def test_lags_count_from_the_committed_offset_or_else_the_start_of_the_log() -> None:
    ends = {("users", 0): 100, ("users", 1): 100, ("users", 2): 5}
    lags = partition_lags(ends, {("users", 0): 40, ("users", 1): -1001}, {("users", 1): 30})
    assert lags == {("users", 0): 60, ("users", 1): 70, ("users", 2): 5}


# -- weighted by work: each partition weighs 1 + its lag (records not yet committed) -------

LAGGED_COUNTS = {"users": 12, "registered": 12, "revoked": 12}


def _thirds() -> list[set[tuple[str, int]]]:
    return [{(t, p) for t in LAGGED_COUNTS for p in range(4 * k, 4 * k + 4)} for k in range(3)]


def test_with_no_backlog_anywhere_the_share_is_the_partition_share() -> None:
    lags = {(t, p): 0 for t in LAGGED_COUNTS for p in range(12)}
    for pod in _thirds():
        shares = endpoint_shares(pod, LAGGED_COUNTS, TYPES, lags)
        assert shares[Endpoint.UPDATE] == 4 / 12


def test_a_pod_whose_partitions_are_caught_up_gives_the_limit_to_those_with_backlog() -> None:
    lags = {("users", p): (0 if p < 4 else 1_000) for p in range(12)}
    caught_up, busy, _ = (endpoint_shares(pod, LAGGED_COUNTS, TYPES, lags) for pod in _thirds())
    assert caught_up[Endpoint.UPDATE] == 4 / 8_012
    assert busy[Endpoint.UPDATE] == 4_004 / 8_012
    # Topics without a reading keep their partition shares.
    assert busy[Endpoint.REGISTER_DEVICE] == 4 / 12


def test_more_work_on_a_pods_partitions_gives_it_more_of_the_limit() -> None:
    lags = {("users", p): (2_000 if p < 4 else 1_000) for p in range(12)}
    heavy, light, _ = (endpoint_shares(pod, LAGGED_COUNTS, TYPES, lags) for pod in _thirds())
    assert (heavy[Endpoint.UPDATE], light[Endpoint.UPDATE]) == (8_004 / 16_012, 4_004 / 16_012)


def test_a_partition_the_reading_has_not_seen_yet_weighs_one() -> None:
    # Partitions were added after the reading: they count, as caught up, until the next.
    lags = {("users", p): 0 for p in range(6)}
    assert endpoint_shares({("users", 11)}, LAGGED_COUNTS, TYPES, lags)[Endpoint.UPDATE] == 1 / 12


def test_partitions_between_owners_are_nobodys_work_until_their_next_owner_has_them() -> None:
    # The first third's owner left; the group reads the rest as owned, the first as not.
    lags = {("users", p): 500 for p in range(12)}
    _, second, third = _thirds()
    group = second | third
    for pod in (second, third):
        shares = endpoint_shares(pod, LAGGED_COUNTS, TYPES, lags, owned_by_group=group)
        assert shares[Endpoint.UPDATE] == 0.5


@given(
    st.lists(st.integers(0, 100_000), min_size=1, max_size=12),
    st.lists(st.integers(0, 4), max_size=12),
    st.integers(1, 5),
    st.booleans(),
)
def test_pods_reading_the_same_lags_share_at_most_the_limit_each_at_least_its_work(
    lags: list[int], owners: list[int], pods: int, ownership_read: bool
) -> None:
    # Any lags, any split of the partitions (some perhaps unowned, mid-rebalance), with
    # or without the group's ownership in the reading.
    partitions = len(lags)
    counts = {"users": partitions, "registered": partitions, "revoked": partitions}
    reading = {(t, p): lag for t in counts for p, lag in enumerate(lags)}
    split: list[set[tuple[str, int]]] = [set() for _ in range(pods)]
    for partition, owner in enumerate(owners[:partitions]):
        if owner < pods:
            split[owner] |= {(t, partition) for t in counts}
    group = set().union(*split) if ownership_read else None
    total = sum(lags) if group is None else sum(lags[p] for t, p in group if t == "users")
    for endpoint in Endpoint:
        shares = [endpoint_shares(s, counts, TYPES, reading, group)[endpoint] for s in split]
        assert sum(shares) <= 1.0 + 1e-9
        for pod, share in zip(split, shares, strict=True):
            work = sum(lags[p] for t, p in pod if t == "users")
            # Its lag's fraction of all lag, less only the weight of one per partition.
            assert share >= work / (total + partitions) - 1e-9
