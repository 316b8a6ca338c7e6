"""A pod's share of the project's limits follows the partitions it owns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.endpoints import Endpoint
from consumer.shares import endpoint_shares

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
