"""The chaos runner's short profile: every scenario ends with nothing lost and order kept."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_short_chaos_profile_loses_nothing_and_keeps_order() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer.dev.chaos", "--profile", "short"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert {row["scenario"] for row in rows} == {
        "broker kill -9 (1 of 3)",
        "consumer churn (3 members)",
        "consumer churn (3 members, exclusive token ownership)",
        "Iterable 5xx, hangs, 429s, outage",
        "Iterable down, events arriving",
        "30% poison, breaker above it",
        "30% poison, breaker below it",
    }
    for row in rows:
        assert row["lost"] == 0, row
        assert row["order_violations"] == 0, row
        assert row["applied"] > 0, row
    poison = next(row for row in rows if row["scenario"].startswith("30% poison"))
    assert poison["dead_lettered"] > 0
    assert result.returncode == 0, result.stdout[-2000:]
