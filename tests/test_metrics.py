"""Series exported at zero from the start, so the first increment reaches rate()."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from consumer.metrics import Metrics


def test_known_label_sets_are_exported_at_zero_before_anything_happens() -> None:
    registry = CollectorRegistry()
    Metrics(registry).start_at_zero(["user.changed"])
    value = registry.get_sample_value
    assert value("iterable_consumer_dead_letters_total", {"topic": "user.changed"}) == 0
    assert (
        value(
            "iterable_consumer_events_processed_total",
            {"topic": "user.changed", "outcome": "invalid"},
        )
        == 0
    )
    labels = {"endpoint": "users/update", "status_class": "4xx"}
    assert value("iterable_consumer_iterable_requests_total", labels) == 0
    labels = {"endpoint": "users/update", "reason": "429"}
    assert value("iterable_consumer_iterable_retries_total", labels) == 0
    labels = {"previous_owner": "known"}
    assert value("iterable_consumer_device_handoffs_total", labels) == 0
