"""Bulk batches: bounds, one entry per user, and failures mapped back by identifier."""

from __future__ import annotations

import json

from consumer.bulk import BulkBatch, BulkLimits, failed_entries


def test_a_batch_refuses_a_second_entry_for_the_same_user() -> None:
    batch = BulkBatch(BulkLimits())
    assert batch.add({"email": "a@example.com", "userId": "1"})
    assert not batch.add({"userId": "1", "dataFields": {"x": 1}})
    assert batch.holds({"userId": "1"})
    assert batch.add({"email": "b@example.com"})


def test_a_batch_is_bounded_by_users_and_bytes() -> None:
    by_count = BulkBatch(BulkLimits(max_users=2))
    assert by_count.add({"email": "a@example.com"})
    assert by_count.add({"email": "b@example.com"})
    assert not by_count.add({"email": "c@example.com"})
    assert by_count.full()

    by_bytes = BulkBatch(BulkLimits(max_bytes=200))
    assert by_bytes.add({"email": "a@example.com", "dataFields": {"blob": "x" * 100}})
    assert not by_bytes.add({"email": "b@example.com", "dataFields": {"blob": "x" * 100}})
    assert len(by_bytes.body()) <= 200
    assert by_bytes.size == len(by_bytes.body())


def test_the_body_is_the_bulk_update_request() -> None:
    batch = BulkBatch(BulkLimits())
    batch.add({"email": "a@example.com", "dataFields": {"n": "ü"}})
    batch.add({"userId": "2"})
    assert json.loads(batch.body()) == {
        "users": [{"email": "a@example.com", "dataFields": {"n": "ü"}}, {"userId": "2"}]
    }


def test_failed_updates_map_back_to_the_right_entries() -> None:
    users = [
        {"email": "ok@example.com"},
        {"email": "shrouti"},
        {"userId": "u" * 60},
        {"email": "typed@example.com", "userId": "7"},
        {"userId": "8"},
    ]
    response = {
        "successCount": 2,
        "failCount": 3,
        "failedUpdates": {
            "invalidEmails": ["shrouti"],
            "invalidUserIds": ["u" * 60],
            "invalidDataEmails": ["typed@example.com"],
            "conflictUserIds": [],
        },
    }
    assert failed_entries(response, users) == {
        1: "invalidEmails",
        2: "invalidUserIds",
        3: "invalidDataEmails",
    }


def test_a_response_without_failed_updates_fails_nothing() -> None:
    assert failed_entries({"successCount": 1, "failCount": 0}, [{"email": "a@b.co"}]) == {}
