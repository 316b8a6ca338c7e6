"""The `scale` scenario: a group scaled 1 → 3 → 2 members on one Iterable project with its
documented limits enforced, for both group protocols side by side.

    .venv/bin/python -m bench --scenario scale      (or: python -m bench.scale --runs 3)

Reports, per protocol (median of the runs): the share of requests answered 429 after the
first 5 s, users/update sustained as a share of its 500/s limit, and the rebalance pause:
the longest time with no Iterable call within 20 s after a member joined or left. A run
whose final Iterable state differs from the oracle fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.measure import sustained_rate, throttled_share
from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.scenario import (
    StreamBuilder,
    all_committed,
    consumer_env,
    create_topics,
    events_committed,
    expected_state,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools

EVENTS, USERS, PARTITIONS, SEED = 24_000, 5_000, 12, 2026
# (events committed, members wanted): events, as a coalesced call carries one or several.
PLAN = [(0, 1), (4_000, 3), (12_000, 2)]
UPDATE_LIMIT = 500.0
PROTOCOLS: dict[str, dict[str, str]] = {
    "consumer": {},  # the default: KIP-848 with the broker's range assignor
    # Classic keeps the session timeout in the client; short, as the local broker's.
    "classic": {
        "KAFKA_GROUP_PROTOCOL": "classic",
        "KAFKA_CONFIG_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS": "500",
    },
}


def run_once(kafka: KafkaTools, protocol: str) -> dict[str, Any]:
    topics = create_topics(kafka, partitions=PARTITIONS)
    events = StreamBuilder(users=USERS, seed=SEED).events(EVENTS)
    produce(kafka, topics, events)  # the default partitioner, as producers would
    group = kafka.unique_name("scale")
    with EmulatorProcess("--quiet") as emulator:  # Iterable's documented limits
        env = consumer_env(
            kafka, emulator, group, topics.env(), LOG_LEVEL="warning", **PROTOCOLS[protocol]
        )
        running: list[ConsumerProcess] = []
        changes: list[float] = []
        plan = list(PLAN)

        def follow() -> bool:
            done = events_committed(kafka, group, topics) if plan else 0
            while plan and done >= plan[0][0]:
                _, wanted = plan.pop(0)
                changes.append(time.time())
                while len(running) < wanted:
                    running.append(ConsumerProcess(env).start())
                while len(running) > wanted:
                    running.pop(0).terminate()
            return not plan and all_committed(kafka, group, topics)

        try:
            wait_for(follow, 900, "the backlog drained", interval=0.5)
        finally:
            for process in running:
                process.stop()
        calls = emulator.calls()
        if normalise(emulator.state()["users"]) != expected_state(events, "hybrid"):
            raise SystemExit(f"[scale/{protocol}] the final Iterable state differs from the oracle")
    return {
        "throttled_after_5s": throttled_share(calls),
        "update_share_of_limit": sustained_rate(calls, "/api/users/update") / UPDATE_LIMIT,
        "rebalance_pause_s": _longest_pause(calls, changes[1:]),
        "seconds": max(c["received"] for c in calls) - min(c["received"] for c in calls),
    }


def _longest_pause(calls: list[dict[str, Any]], changes: list[float], within: float = 20) -> float:
    """The longest gap between Iterable calls within `within` s after a membership change."""
    times = sorted(c["received"] for c in calls)
    longest = 0.0
    for change in changes:
        inside = [t for t in times if change <= t <= change + within]
        edges = [change, *inside]
        longest = max(longest, *(b - a for a, b in itertools.pairwise(edges)), 0.0)
    return longest


def run(kafka: KafkaTools, runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for protocol in PROTOCOLS:
        samples = [run_once(kafka, protocol) for _ in range(runs)]
        for sample in samples:
            print(json.dumps({"protocol": protocol, **sample}), flush=True)
        results[protocol] = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    return results


def markdown(results: dict[str, dict[str, float]], runs: int) -> str:
    lines = [
        f"# `scale`: 1 → 3 → 2 members, {EVENTS:,} events, limits enforced (median of {runs} runs)",
        "",
        "Command: `.venv/bin/python -m bench --scenario scale`",
        "",
        "| protocol | 429s after 5 s | users/update, share of 500/s | longest rebalance pause |"
        " drain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for protocol, r in results.items():
        lines.append(
            f"| {protocol} | {r['throttled_after_5s']:.3%} | {r['update_share_of_limit']:.1%}"
            f" | {r['rebalance_pause_s']:.2f} s | {r['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main(kafka: KafkaTools, out: Path, runs: int = 3) -> None:
    results = run(kafka, runs)
    text = markdown(results, runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    from bench.run import broker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    arguments = parser.parse_args()
    with broker() as servers:
        main(KafkaTools(servers), arguments.out, arguments.runs)
