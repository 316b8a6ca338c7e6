"""Each pod's share of the project's rate limits, from its partition assignment. Pure.

Iterable's limits are per project and every replica draws on them (SPEC §6). The only fact
the replicas share is Kafka's assignment, so a pod paces each endpoint at the project's
limit times its share of the partitions feeding that endpoint; with incremental
rebalances a partition is released before its next owner gets it, so the shares of all
pods never add up to more than one.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from consumer.endpoints import Endpoint

# Which event type's partitions feed each endpoint. Email changes read profiles and call
# updateEmail on behalf of user.changed; a global revocation re-sends registrations, but
# device topics are co-partitioned, so the same pod holds the registrations' partitions.
FED_BY: Mapping[Endpoint, str] = {
    Endpoint.UPDATE: "user.changed",
    Endpoint.BULK_UPDATE: "user.changed",
    Endpoint.UPDATE_EMAIL: "user.changed",
    Endpoint.GET_BY_EMAIL: "user.changed",
    Endpoint.REGISTER_DEVICE: "device.registered",
    Endpoint.DISABLE_DEVICE: "push.permission.revoked",
}


def endpoint_shares(
    assigned: Set[tuple[str, int]],
    partition_counts: Mapping[str, int],
    event_types: Mapping[str, str],
) -> dict[Endpoint, float]:
    """Endpoint → the fraction (0…1) of its feeding partitions this pod owns.

    `partition_counts` and `event_types` are keyed by topic name; a topic whose partition
    count is unknown gives its endpoints a full share (pacing then errs towards the limit
    the pod had before, and the 429 back-off remains the safety net)."""
    owned: dict[str, int] = {}
    for topic, _ in assigned:
        owned[topic] = owned.get(topic, 0) + 1
    by_type = {event_type: topic for topic, event_type in event_types.items()}
    shares: dict[Endpoint, float] = {}
    for endpoint, event_type in FED_BY.items():
        fed = by_type.get(event_type)
        total = partition_counts.get(fed) if fed is not None else None
        if fed is None or not total:
            shares[endpoint] = 1.0
        else:
            shares[endpoint] = min(1.0, owned.get(fed, 0) / total)
    return shares
