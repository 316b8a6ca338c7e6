"""The end-to-end tests' order check: what counts as an event first applied out of order."""

from __future__ import annotations

from typing import Any

from consumer.dev.scenario import first_application_order


def _update(fields: dict[str, Any], status: int = 200) -> dict[str, Any]:
    body = {"userId": "u1", "dataFields": fields}
    return {"path": "/api/users/update", "status": status, "body": body}


def test_an_event_hidden_in_a_coalesced_call_and_sent_again_alone_is_in_order() -> None:
    calls = [
        _update({"n": 1, "m0": 1}),
        _update({"n": 3, "m1": 2, "m2": 3}),  # 2 and 3 coalesced: the body's n is 3
        _update({"n": 2, "m1": 2}),  # a redelivery after a rebalance
    ]
    assert dict(first_application_order(calls)) == {"u1": [1, 2, 3]}


def test_an_event_first_applied_after_a_later_one_is_out_of_order() -> None:
    calls = [_update({"n": 1, "m0": 1}), _update({"n": 3, "m2": 3}), _update({"n": 2, "m1": 2})]
    assert dict(first_application_order(calls)) == {"u1": [1, 3, 2]}


def test_without_markers_the_body_n_is_the_event_and_refused_calls_do_not_count() -> None:
    calls = [_update({"n": 2}, status=429), _update({"n": 1}), _update({"n": 2})]
    assert dict(first_application_order(calls)) == {"u1": [1, 2]}
