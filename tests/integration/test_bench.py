"""The benchmark runner's smoke scenarios: correctness only, no timing (CI).

`python -m bench` fails when the consumer loses or misorders an event, whatever its
speed; this runs its small single and bulk scenarios on the session broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from consumer.dev.topics import KafkaTools


def test_the_smoke_scenarios_run_to_the_oracle_state_and_report(
    kafka: KafkaTools, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "bench", "--scenario", "smoke", "--scenario", "smoke-bulk"]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    done = subprocess.run(
        [*command, "--out", str(tmp_path)],
        check=False,
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = {r["scenario"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert set(results) == {"smoke", "smoke-bulk"}
    assert results["smoke"]["events"] == 2000
    assert results["smoke"]["baseline"]["events"] == 50
    assert results["smoke-bulk"]["users_per_bulk_request"] > 1
    assert "| smoke-bulk | 2,000 |" in (tmp_path / "results.md").read_text()
