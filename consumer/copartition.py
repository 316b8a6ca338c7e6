"""Whether the two device topics are co-partitioned: the same number of partitions. Pure.

Cross-topic device order across members rests on partition i of both topics holding the
same tokens and landing on one member (SPEC §5); with different partition counts the
producers' key hashing puts a token in unrelated partitions, and no assignment can help.
"""

from __future__ import annotations

from collections.abc import Mapping


def copartition_problem(partitions: Mapping[str, int | None]) -> str | None:
    """One plain line when the topics differ in partition count; None when they agree.

    `partitions` maps each device topic to its partition count (None: not found yet)."""
    known = {topic: count for topic, count in partitions.items() if count is not None}
    if len(known) < len(partitions) or len(set(known.values())) <= 1:
        return None
    counts = ", ".join(f"{topic} has {count}" for topic, count in known.items())
    return (
        f"device topics are not co-partitioned ({counts} partitions): a registration and a"
        " revocation of one token can run on two members and end in the wrong state; give"
        " both topics the same partition count"
    )
