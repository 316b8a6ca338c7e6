"""The test-only override of the chart's rules: `for:` read with minutes as seconds."""

from __future__ import annotations

import pytest
import yaml

from consumer.dev.observed_run import RULES
from tests.integration.prometheus import shortened_for, shortened_rules


@pytest.mark.parametrize(
    ("shipped", "short"),
    [("10m", "10s"), ("1m", "1s"), ("2m", "2s"), ("1h30m", "90s"), ("30s", "1s")],
)
def test_for_durations_read_minutes_as_seconds(shipped: str, short: str) -> None:
    assert shortened_for(shipped) == short


def test_unknown_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        shortened_for("10 minutes")


def test_only_for_changes_in_the_shipped_rules() -> None:
    shipped = yaml.safe_load(RULES.read_text())
    short = yaml.safe_load(shortened_rules(RULES.read_text()))
    for group, short_group in zip(shipped["groups"], short["groups"], strict=True):
        for rule, short_rule in zip(group["rules"], short_group["rules"], strict=True):
            assert {k: v for k, v in short_rule.items() if k != "for"} == {
                k: v for k, v in rule.items() if k != "for"
            }
            assert short_rule["for"] == shortened_for(rule["for"])
