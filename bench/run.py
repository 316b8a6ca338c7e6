"""End-to-end benchmarks: a real broker, the emulator, the consumer as a process, and the
naive baseline on the same events. A run that loses or misorders an event fails.

    .venv/bin/python -m bench                         # every scenario (about 15 minutes)
    .venv/bin/python -m bench --scenario cpu-single   # one (repeat the flag for more)
    .venv/bin/python -m bench --scenario smoke        # correctness only, seconds (CI)
    .venv/bin/python -m bench --scenario scale        # 1 → 3 → 2 members, both protocols
    .venv/bin/python -m bench --scenario peer         # vs Parallel Consumer (Java; not default)

Uses the broker `KAFKA_BOOTSTRAP_SERVERS` names, else starts a local one. Writes
`results.json` and `results.md` to `--out` (default `bench/results/`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench import peer, profile, scale
from bench.measure import (
    CpuSampler,
    delays,
    peak_rss_mb,
    percentile,
    sustained_rate,
    throttled_share,
)
from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.kafka import LocalKafka
from consumer.dev.scenario import (
    Produced,
    StreamBuilder,
    Topics,
    all_committed,
    consumer_env,
    create_topics,
    expected_state,
    first_application_order,
    normalise,
    produce,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools

USERS, TOKENS_PER_USER, PARTITIONS, SEED = 5_000, 2, 12, 2026
NO_LIMITS = ("--no-rate-limits",)
UNPACED = {"ITERABLE_RATE_LIMITS": "off"}
BULK = {"ITERABLE_USER_UPDATE_MODE": "bulk"}
# A request carries each user once, so it fills only from distinct users waiting: 5,000
# users make a dense stream, and the default 5,000 buffered events hold too few of them.
BULK_DENSE = {
    **BULK,
    "CONSUMER_MAX_BUFFERED": "40000",
    "CONSUMER_MAX_BUFFERED_PER_PARTITION": "5000",
}
UPDATE_LIMIT, BULK_LIMIT = 500.0, 5.0  # Iterable's documented limits, requests/s


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    events: int
    emulator: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user_changed_only: bool = False
    offered_rate: float | None = None  # open loop: events/s produced while the consumer runs
    baseline_events: int = 500
    users: int = USERS
    zipf: float = 0.0  # users drawn from a Zipf distribution with this exponent; 0 is uniform
    merge_nested: bool | None = None  # every update's mergeNestedObjects; None: a coin toss
    target: str = ""
    met: Callable[[dict[str, Any]], bool] = lambda result: True


# Open loop at 80% of the binding limit: users/update carries 70% of the events.
OPEN_LOOP_RATE = 0.8 * UPDATE_LIMIT / 0.7

SCENARIOS = [
    Scenario(
        "smoke", "correctness only, single mode", 2_000, NO_LIMITS, UNPACED, baseline_events=50
    ),
    Scenario(
        "smoke-bulk",
        "correctness only, bulk mode, user.changed only",
        2_000,
        NO_LIMITS,
        {**UNPACED, **BULK},
        user_changed_only=True,
        baseline_events=50,
    ),
    Scenario(
        "latency-bound",
        "20 ms emulator latency, no rate limits",
        20_000,
        (*NO_LIMITS, "--latency-ms", "20"),
        UNPACED,
        target="throughput >= 40x baseline",
        met=lambda r: r["ratio"] >= 40,
    ),
    Scenario(
        "rate-limited",
        "Iterable's documented limits enforced, client pace at its defaults",
        20_000,
        baseline_events=3_000,  # past the emulator's one-second burst
        target="users/update >= 95% of 500/s; 429s < 0.1% after 5 s",
        met=lambda r: r["binding_share_of_limit"] >= 0.95 and r["throttled_after_5s"] < 0.001,
    ),
    Scenario(
        "open-loop",
        f"{OPEN_LOOP_RATE:.0f} events/s for 60 s (80% of the users/update limit), limits on",
        int(OPEN_LOOP_RATE * 60),
        offered_rate=OPEN_LOOP_RATE,
        baseline_events=3_000,
        target="p99 delay < 250 ms",
        met=lambda r: r["delay_p99_ms"] < 250,
    ),
    Scenario(
        "bulk",
        "user.changed only, bulk mode, bulkUpdate limited to 5 requests/s,"
        " CONSUMER_MAX_BUFFERED=40000",
        60_000,
        env=BULK_DENSE,
        baseline_events=3_000,
        user_changed_only=True,
        target=">= 4,000 user updates/s",
        met=lambda r: r["user_updates_per_second"] >= 4000,
    ),
    Scenario(
        "catch-up",
        "a 200,000-update backlog over 50,000 Zipf-distributed users (s = 1.1), limits on,"
        " mergeNestedObjects false",
        200_000,
        baseline_events=3_000,
        user_changed_only=True,
        users=50_000,
        zipf=1.1,
        merge_nested=False,
        target=">= 3x faster than the floor for uncoalesced requests (events / 500/s)",
        met=lambda r: r["x_floor"] >= 3,
    ),
    Scenario(
        "catch-up-bulk",
        "the catch-up backlog in bulk mode at its defaults, bulkUpdate limited to 5 requests/s",
        200_000,
        env=BULK,
        baseline_events=3_000,
        user_changed_only=True,
        users=50_000,
        zipf=1.1,
        merge_nested=False,
        target=">= 2x faster than catch-up in single mode",
        met=lambda r: r.get("x_single", 0) >= 2,
    ),
    Scenario(
        "cpu-single",
        "zero latency, no limits, single mode",
        20_000,
        NO_LIMITS,
        UNPACED,
        target="<= 300 us CPU per event",
        met=lambda r: r["cpu_us_per_event"] <= 300,
    ),
    Scenario(
        "cpu-bulk",
        "zero latency, no limits, bulk mode, user.changed only, CONSUMER_MAX_BUFFERED=40000",
        40_000,
        NO_LIMITS,
        {**UNPACED, **BULK_DENSE},
        user_changed_only=True,
        target="<= 50 us CPU per event",
        met=lambda r: r["cpu_us_per_event"] <= 50,
    ),
    *(
        Scenario(
            f"volume-{label}",
            f"{events:,} events, zero latency, no limits, single mode",
            events,
            NO_LIMITS,
            UNPACED,
            target="CPU per event flat across volumes (<= 200 us); peak RSS <= 150 MB",
            met=lambda r: r["cpu_us_per_event"] <= 200 and r["peak_rss_mb"] <= 150,
        )
        for label, events in (("20k", 20_000), ("200k", 200_000), ("1m", 1_000_000))
    ),
    Scenario(
        "memory",
        "a 200,000-event backlog, zero latency, no limits",
        200_000,
        NO_LIMITS,
        UNPACED,
        target="peak RSS <= 200 MB",
        met=lambda r: r["peak_rss_mb"] <= 200,
    ),
]


@contextmanager
def broker() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    with LocalKafka() as local:
        yield local.bootstrap_servers


def run(scenario: Scenario, kafka: KafkaTools, profile_dir: Path | None = None) -> dict[str, Any]:
    print(f"[{scenario.name}] {scenario.what}", flush=True)
    builder = StreamBuilder(
        users=scenario.users,
        seed=SEED,
        tokens_per_user=TOKENS_PER_USER,
        realtime=scenario.offered_rate is not None,
        zipf=scenario.zipf,
        merge_nested=scenario.merge_nested,
    )
    topics = create_topics(kafka, partitions=PARTITIONS)
    with EmulatorProcess("--quiet", *scenario.emulator) as emulator:
        group = kafka.unique_name("bench")
        env = consumer_env(kafka, emulator, group, topics.env(), **scenario.env)
        env.update(LOG_LEVEL="warning", CONSUMER_COMMIT_INTERVAL_SECONDS="1")
        consumer = ConsumerProcess(env)
        if scenario.offered_rate is None:
            events = builder.events(scenario.events, scenario.user_changed_only)
            produce(kafka, topics, events)
            result = _measure(
                consumer,
                feed=None,
                kafka=kafka,
                group=group,
                topics=topics,
                emulator=emulator,
                profile_to=profile_dir / f"profile-{scenario.name}.txt" if profile_dir else None,
            )
        else:
            events = []
            result = _measure(
                consumer,
                feed=lambda: _open_loop(kafka, topics, builder, scenario, events),
                kafka=kafka,
                group=group,
                topics=topics,
                emulator=emulator,
            )
        calls = emulator.calls()
        _check(scenario, events, emulator, calls)
        result.update(_iterable_side(scenario, events, calls, result))
    # A fresh emulator with the same settings (a reset would also clear its latency).
    with EmulatorProcess("--quiet", *scenario.emulator) as emulator:
        baseline = _baseline(scenario, kafka, topics, emulator)
    result.update(
        scenario=scenario.name,
        what=scenario.what,
        events=len(events),
        baseline=baseline,
        ratio=round(result["events_per_second"] / baseline["events_per_second"], 1),
        cpu_ratio=round(baseline["cpu_us_per_event"] / max(result["cpu_us_per_event"], 1), 1),
        target=scenario.target,
    )
    if scenario.name.startswith("catch-up"):
        # Iterable's limits bound a drain of one request per event to events / 500/s.
        floor = len(events) / UPDATE_LIMIT
        result.update(floor_seconds=round(floor, 1), x_floor=round(floor / result["seconds"], 1))
        result["baseline_drain_seconds"] = round(len(events) / baseline["events_per_second"])
    result["met"] = scenario.met(result) if scenario.target else None
    print(json.dumps(result), flush=True)
    return result


def _measure(
    consumer: ConsumerProcess,
    *,
    feed: Callable[[], None] | None,
    kafka: KafkaTools,
    group: str,
    topics: Topics,
    emulator: EmulatorProcess,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    consumer.start()
    assert consumer.process is not None
    pid = consumer.process.pid
    spy = profile.start(pid, profile_to) if profile_to else None
    try:
        with CpuSampler(pid) as sampler:
            if feed is not None:  # open loop: events are born once the consumer is assigned
                wait_for(lambda: _assigned(consumer), 60, "the consumer's partitions")
                feed()
            wait_for(lambda: all_committed(kafka, group, topics), 900, "every offset", interval=0.5)
            rss = peak_rss_mb(pid)
    finally:
        consumer.stop()
        if spy is not None:
            spy.wait(60)
    calls = emulator.calls()
    if not calls:
        raise SystemExit("the consumer made no Iterable calls")
    first, last = min(c["received"] for c in calls), max(c["received"] for c in calls)
    return {
        "_window": (first, last),
        "_cpu": sampler.at(last) - sampler.at(first),
        "peak_rss_mb": round(rss, 1),
    }


def _assigned(consumer: ConsumerProcess) -> bool:
    lines = consumer.metrics().splitlines() if consumer.probe("/livez") == 200 else []
    prefix = 'iterable_consumer_rebalances_total{kind="assign"}'
    return any(line.startswith(prefix) and float(line.split()[-1]) > 0 for line in lines)


def _open_loop(
    kafka: KafkaTools,
    topics: Topics,
    builder: StreamBuilder,
    scenario: Scenario,
    produced: list[Produced],
) -> None:
    """Produce at the offered rate in 20 ms slices, each event stamped as it is made.

    One long-lived producer: a new idempotent producer per slice would spend its first
    round trips on a producer id and show up as consumer delay."""
    assert scenario.offered_rate is not None
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 2})
    began, sent = time.monotonic(), 0
    while sent < scenario.events:
        due = min(scenario.events, int((time.monotonic() - began) * scenario.offered_rate) + 1)
        for event in builder.events(due - sent):
            record = event.record
            producer.produce(topics.names[event.event_type], record.value, record.key)
            produced.append(event)
        producer.poll(0)
        sent = due
        time.sleep(max(0.0, min(0.02, began + sent / scenario.offered_rate - time.monotonic())))
    if producer.flush(30):
        raise SystemExit("the open-loop producer could not deliver every event")


def _check(
    scenario: Scenario, events: list[Produced], emulator: EmulatorProcess, calls: list[Any]
) -> None:
    """Lost or misordered events fail the run, whatever its speed."""
    actual, expected = normalise(emulator.state()["users"]), expected_state(events, "hybrid")
    if actual != expected:
        wrong = [(a, e) for a, e in zip(actual, expected, strict=False) if a != e]
        raise SystemExit(
            f"[{scenario.name}] the final Iterable state differs from the oracle:"
            f" {len(actual)} profiles, {len(expected)} expected, {len(wrong)} differ;"
            f" first: {wrong[:1]}"
        )
    for user, order in first_application_order(calls):
        if order != sorted(order):
            raise SystemExit(f"[{scenario.name}] updates for {user} applied out of order")


def _iterable_side(
    scenario: Scenario, events: list[Produced], calls: list[dict[str, Any]], run: dict[str, Any]
) -> dict[str, Any]:
    first, last = run.pop("_window")
    seconds = max(last - first, 1e-6)
    cpu = run.pop("_cpu")
    bulk = [c for c in calls if c["path"] == "/api/users/bulkUpdate" and c["status"] == 200]
    users_in_bulk = sum(len(c["body"]["users"]) for c in bulk)
    lag = [d * 1000 for d in delays(events, calls)] if scenario.offered_rate else []
    side: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "events_per_second": round(len(events) / seconds),
        "cpu_us_per_event": round(cpu / len(events) * 1e6),
        "cpu_seconds_per_1000_events": round(cpu / len(events) * 1000, 3),
        "requests": len(calls),
        "events_per_request": round(len(events) / max(1, len(calls)), 2),
        "throttled_429": sum(1 for c in calls if c["status"] == 429),
        "throttled_after_5s": round(throttled_share(calls), 5),
    }
    if scenario.offered_rate is not None:  # closed-loop events are all old when consumed
        side.update(
            delay_p50_ms=round(percentile(lag, 50)), delay_p99_ms=round(percentile(lag, 99))
        )
    if bulk:
        side["user_updates_per_second"] = round(users_in_bulk / seconds)
        side["users_per_bulk_request"] = round(users_in_bulk / len(bulk))
    if "--no-rate-limits" not in scenario.emulator and scenario.offered_rate is None:
        path, limit = (
            ("/api/users/bulkUpdate", BULK_LIMIT) if bulk else ("/api/users/update", UPDATE_LIMIT)
        )
        rate = sustained_rate(calls, path)
        side["binding_endpoint"] = path.removeprefix("/api/")
        side["binding_requests_per_second"] = round(rate, 1)
        side["binding_share_of_limit"] = round(rate / limit, 3)
    return side


def _baseline(
    scenario: Scenario, kafka: KafkaTools, topics: Topics, emulator: EmulatorProcess
) -> dict[str, Any]:
    """The naive consumer on the first events of the same topics, same emulator settings."""
    command = [
        sys.executable,
        "-m",
        "bench.baseline",
        f"--bootstrap={kafka.bootstrap_servers}",
        f"--group={kafka.unique_name('baseline')}",
        f"--topics={','.join(topics.names.values())}",
        f"--url={emulator.url}",
        f"--api-key={emulator.api_key}",
        f"--events={scenario.baseline_events}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    events, seconds, cpu = measured["events"], measured["seconds"], measured["cpu_seconds"]
    return {
        "events": events,
        "events_per_second": round(events / seconds, 1),
        "cpu_us_per_event": round(cpu / events * 1e6),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
    }


def _compare_catch_up(results: list[dict[str, Any]]) -> None:
    """Bulk mode's catch-up is judged against single mode's, measured in the same run."""
    by_name = {r["scenario"]: r for r in results}
    single, bulk = by_name.get("catch-up"), by_name.get("catch-up-bulk")
    if single is None or bulk is None:
        return
    bulk["x_single"] = round(single["seconds"] / bulk["seconds"], 1)
    bulk["met"] = bulk["x_single"] >= 2


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# End-to-end benchmark results",
        "",
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d}, one 2-core machine running the broker,",
        "the emulator, the consumer and the baseline. Ratios are against the naive baseline",
        "(bench/baseline.py) measured in the same run on the first events of the same topics.",
        "",
        "| scenario | events | events/s | baseline events/s | x baseline | CPU us/event"
        " (baseline) | peak RSS MB | requests | 429s (after 5 s) | delay p50 / p99 ms"
        " | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        rate = f"{r['events_per_second']:,}"
        if "user_updates_per_second" in r:
            rate += f" ({r['user_updates_per_second']:,} user updates/s)"
        if "binding_share_of_limit" in r:
            rate += f"; {r['binding_endpoint']} {r['binding_share_of_limit']:.1%} of limit"
        if "x_floor" in r:
            rate += (
                f"; drained in {r['seconds']} s, {r['x_floor']}x faster than the"
                f" {r['floor_seconds']} s floor (baseline: {r['baseline_drain_seconds']} s)"
            )
        if "x_single" in r:
            rate += f"; {r['x_single']}x faster than single mode"
        if "events_per_request" in r:
            rate += f"; {r['events_per_request']} events per request"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        delay = f"{r['delay_p50_ms']} / {r['delay_p99_ms']}" if "delay_p99_ms" in r else "-"
        lines.append(
            f"| {r['scenario']} | {r['events']:,} | {rate} | {r['baseline']['events_per_second']}"
            f" | {r['ratio']} | {r['cpu_us_per_event']} ({r['baseline']['cpu_us_per_event']})"
            f" | {r['peak_rss_mb']} | {r['requests']:,} | {r['throttled_429']}"
            f" ({r['throttled_after_5s']:.3%}) | {delay}"
            f" | {r['target'] or '-'} | {met} |"
        )
    lines += ["", "Scenarios:", ""]
    lines += [f"- **{r['scenario']}**: {r['what']}." for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    names = [s.name for s in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*names, "scale", "peer"],
        help="default: all but smoke and peer",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--profile", action="store_true", help="sample the consumer (py-spy)")
    parser.add_argument("--repeat", type=int, default=1, help="peer: runs per size (medians)")
    args = parser.parse_args()
    default = [*(name for name in names if not name.startswith("smoke")), "scale"]
    chosen = [s for s in SCENARIOS if s.name in (args.scenario or default)]
    with broker() as servers:
        kafka = KafkaTools(servers)
        args.out.mkdir(parents=True, exist_ok=True)
        results = [run(s, kafka, args.out if args.profile else None) for s in chosen]
        _compare_catch_up(results)
        if "scale" in (args.scenario or default):  # several consumers: a runner of its own
            scale.main(kafka, args.out)
        if "peer" in (args.scenario or []):  # needs Java and Maven, so only when asked
            peer.main(kafka, args.out, args.repeat)
    if not chosen:
        return
    if args.profile:
        for s in chosen:
            sampled = args.out / f"profile-{s.name}.txt"
            if sampled.exists():
                print(f"[{s.name}] {sampled}\n{profile.summarise(sampled)}")
    command = "python -m bench " + " ".join(f"--scenario {s.name}" for s in chosen)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
