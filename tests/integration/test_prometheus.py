"""The dashboard and the alert rules, proven against a real Prometheus scraping a real run."""

from __future__ import annotations

import time

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.observed_run import NAMESPACE, POD, RULES, ObservedRun, concrete, dashboard_panels
from consumer.dev.topics import KafkaTools
from tests.integration.prometheus import running

EXPECTED_FIRING = {
    "IterableConsumerLagHigh",  # the outage, with events 400 s old waiting
    "IterableApiErrorBudgetBurnFast",  # the outage's 503s, early in the run
    "IterableApiErrorBudgetBurnSlow",
    "IterableConsumerStalled",  # the outage: lag, and no commit in the window
    "IterableCredentialsRejected",  # the rotated key
    "IterableConsumerDeadLetters",  # the poison events
    "IterableConsumerDeadLetterCircuitOpen",  # the poison flood
    "IterableConsumerDeviceTopicsNotCoPartitioned",  # 3 against 2 partitions
}
NOT_EXERCISED = {"IterableConsumerNotPolling"}


def test_every_panel_shows_data_and_the_expected_alerts_fire(kafka: KafkaTools) -> None:
    """One scripted run (consumer/dev/observed_run.py) under a Prometheus with the chart's
    rules, `for:` read as seconds (tests/integration/prometheus.py).

    Prometheus starts after a warm-up (see `ObservedRun.warm_up`), so the outage's held
    commits look like IterableConsumerStalled's 15 min without a commit.

    The one alert this run cannot raise, asserted not firing: IterableConsumerNotPolling
    needs a poll loop stuck for 120 s (an expression threshold, not a `for:`) while still
    scraped; the consumer polls through every fault here (paused partitions, held
    consumption, an open circuit), and the run is kept to about a minute and a half.
    """
    with EmulatorProcess("--quiet") as emulator:
        observed = ObservedRun(kafka, emulator)
        try:
            observed.warm_up()
            with running(observed.consumer.metrics_port, RULES, NAMESPACE, POD) as prometheus:
                start = time.time()
                observed.run(prometheus.answers)
                end = time.time()
                empty = [
                    f"{panel.row} / {panel.title}: {expr}"
                    for panel in dashboard_panels()
                    for expr, _ in panel.targets
                    if not prometheus.query_range(concrete(expr), start, end)
                ]
                fired = prometheus.ever_firing(start, end)
        finally:
            observed.stop()
    assert empty == [], "panel queries that never returned a series:\n" + "\n".join(empty)
    assert fired == EXPECTED_FIRING, (
        f"missing {EXPECTED_FIRING - fired}, unexpected {fired - EXPECTED_FIRING}"
    )
    assert not fired & NOT_EXERCISED
