"""The co-partitioning check of the two device topics."""

from __future__ import annotations

from consumer.copartition import copartition_problem


def test_equal_partition_counts_are_co_partitioned() -> None:
    assert copartition_problem({"device.registered": 12, "push.permission.revoked": 12}) is None


def test_different_partition_counts_are_named_in_one_line() -> None:
    problem = copartition_problem({"device.registered": 12, "push.permission.revoked": 6})
    assert problem is not None
    assert "\n" not in problem
    assert "device.registered has 12" in problem
    assert "push.permission.revoked has 6" in problem


def test_a_topic_not_found_yet_is_not_judged() -> None:
    assert copartition_problem({"device.registered": 12, "push.permission.revoked": None}) is None
