"""Each pod's share of the project's rate limits, from its partitions and their lag. Pure.

Iterable's limits are per project and every replica draws on them (SPEC §6). The facts
the replicas share are Kafka's: the assignment, and each partition's lag (end offset less
the group's committed offset). A pod paces each endpoint at the project's limit times its
share of the feeding partitions' work, each partition weighing 1 + its lag: with no
backlog that is its share of the partitions; a pod whose partitions are caught up leaves
the limit to those with a backlog, so all finish together. With incremental rebalances a
partition is released before its next owner gets it, so pods reading the same lags never
share more than the whole limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from consumer.endpoints import Endpoint

# Which event types' partitions feed each endpoint. Email changes read profiles and call
# updateEmail on behalf of user.changed; a global revocation re-sends registrations, but
# device topics are co-partitioned, so the same pod holds the registrations' partitions.
FED_BY: Mapping[Endpoint, tuple[str, ...]] = {
    Endpoint.UPDATE: ("user.changed",),
    Endpoint.BULK_UPDATE: ("user.changed",),
    Endpoint.UPDATE_EMAIL: ("user.changed",),
    Endpoint.GET_BY_EMAIL: ("user.changed",),
    Endpoint.REGISTER_DEVICE: ("device.registered",),
    Endpoint.DISABLE_DEVICE: ("push.permission.revoked",),
}
# With exclusive token ownership every registration calls disableDevice first.
FED_BY_EXCLUSIVE: Mapping[Endpoint, tuple[str, ...]] = {
    **FED_BY,
    Endpoint.DISABLE_DEVICE: ("push.permission.revoked", "device.registered"),
}


Where = tuple[str, int]


def endpoint_shares(
    assigned: Set[Where],
    partition_counts: Mapping[str, int],
    event_types: Mapping[str, str],
    lags: Mapping[Where, int] | None = None,
    owned_by_group: Set[Where] | None = None,
    *,
    fed_by: Mapping[Endpoint, tuple[str, ...]] = FED_BY,
) -> dict[Endpoint, float]:
    """Endpoint → the fraction (0…1) of its feeding partitions' work this pod owns.

    `partition_counts` and `event_types` are keyed by topic name; `lags` (records per
    partition, from one reading) may be missing or partial: a partition it lacks weighs 1.
    `owned_by_group` (same reading): partitions some member owns; one between owners (a
    member left, or is revoking it for its next owner) is nobody's work, so it does not
    count until its next owner has it. A topic whose partition count is unknown gives its
    endpoints a full share (pacing then errs towards the limit the pod had before; the 429
    back-off remains the safety net). An endpoint fed by several topics weighs the
    partitions of all of them."""
    by_type = {event_type: topic for topic, event_type in event_types.items()}
    shares: dict[Endpoint, float] = {}
    for endpoint, feeding in fed_by.items():
        weights = [
            _weights(by_type.get(t), assigned, partition_counts, lags, owned_by_group)
            for t in feeding
        ]
        known = [w for w in weights if w is not None]
        if len(known) < len(weights):
            shares[endpoint] = 1.0
            continue
        mine, total = sum(w[0] for w in known), sum(w[1] for w in known)
        shares[endpoint] = min(1.0, mine / total) if total else 0.0
    return shares


def _weights(
    fed: str | None,
    assigned: Set[Where],
    partition_counts: Mapping[str, int],
    lags: Mapping[Where, int] | None,
    owned_by_group: Set[Where] | None,
) -> tuple[int, int] | None:
    """The work on this pod's partitions of topic `fed`, and on all of them (None: unknown)."""
    count = partition_counts.get(fed) if fed is not None else None
    if fed is None or not count:
        return None
    known = lags or {}
    mine = {p for t, p in assigned if t == fed}
    partitions = set(range(count)) | {p for t, p in known if t == fed} | mine
    if owned_by_group is not None:
        partitions = {p for p in partitions if (fed, p) in owned_by_group} | mine
    weight = {p: 1 + max(0, known.get((fed, p), 0)) for p in partitions}
    return sum(weight[p] for p in mine), sum(weight.values())


def partition_lags(
    ends: Mapping[Where, int], committed: Mapping[Where, int], starts: Mapping[Where, int]
) -> dict[Where, int]:
    """Records each partition's group has still to finish: from its committed offset, or
    from the log's start where it committed nothing (the consumer reads from the earliest)."""
    lags: dict[Where, int] = {}
    for where, end in ends.items():
        position = committed.get(where)
        if position is None or position < 0:
            position = starts.get(where, 0)
        lags[where] = max(0, end - position)
    return lags
