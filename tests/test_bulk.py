"""Bulk batches: bounds, one entry per user, and failures mapped back by identifier."""

from __future__ import annotations

import json

from consumer.bulk import BulkBatch, BulkLimits, Failures, read_failures


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
    assert read_failures(response, users) == Failures(
        {1: "invalidEmails", 2: "invalidUserIds", 3: "invalidDataEmails"}
    )


def test_a_response_without_failed_updates_fails_nothing() -> None:
    assert read_failures({"successCount": 1, "failCount": 0}, [{"email": "a@b.co"}]) == Failures({})


def test_a_refused_email_change_is_found_by_its_data_fields_email() -> None:
    users = [
        {"userId": "u1", "dataFields": {"email": "taken@example.com"}},
        {"userId": "u2", "dataFields": {"email": "not-an-email"}},
        {"userId": "u3", "dataFields": {"n": 1}},
    ]
    response = {
        "successCount": 1,
        "failCount": 2,
        # Iterable stores emails lowercased and may name them so.
        "failedUpdates": {
            "conflictEmails": ["Taken@Example.com"],
            "invalidEmails": ["not-an-email"],
        },
    }
    assert read_failures(response, users) == Failures({0: "conflictEmails", 1: "invalidEmails"})


def test_failures_counted_beyond_those_named_are_unaccounted() -> None:
    users = [{"email": "a@example.com"}, {"email": "b@example.com"}, {"userId": "c"}]
    named_one = {"failCount": 2, "failedUpdates": {"invalidDataEmails": ["a@example.com"]}}
    assert read_failures(named_one, users) == Failures({0: "invalidDataEmails"}, unaccounted=1)
    none_named = {"successCount": 0, "failCount": 3}
    assert read_failures(none_named, users) == Failures({}, unaccounted=3)
    # A name that is no entry's: some entry failed under an identifier it does not carry.
    stranger = {"failCount": 1, "failedUpdates": {"conflictUserIds": ["someone-else"]}}
    assert read_failures(stranger, users) == Failures({}, unaccounted=1)
    # An email list never names a userId, nor the other way round.
    crossed = {"failedUpdates": {"invalidUserIds": ["a@example.com"]}}
    assert read_failures(crossed, users) == Failures({}, unaccounted=1)


def test_a_batch_holds_one_entry_per_identifier_wherever_it_appears() -> None:
    batch = BulkBatch(BulkLimits())
    assert batch.add({"userId": "u1", "dataFields": {"email": "new@example.com"}})
    assert not batch.add({"email": "NEW@example.com"})
    assert not batch.add({"email": "x@example.com", "dataFields": {"userId": "u1"}})
    assert batch.add({"email": "other@example.com"})
