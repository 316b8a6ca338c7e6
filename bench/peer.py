"""The `peer` scenario: the service and a peer built on Confluent Parallel Consumer
(bench/peers/parallel-consumer: KEY order, 64 records at a time, java.net.http) on the same
events, one after the other, each against a fresh emulator with 20 ms latency and no limits.

    .venv/bin/python -m bench --scenario peer [--repeat 3]   (needs Java 17 and Maven)
    .venv/bin/python -m bench.peer --sizes 20000 --repeat 1

Both are measured alike: events/s and CPU of the whole process (every thread, from /proc)
between its first and last Iterable call, and peak RSS (VmHWM). Both final states are
checked against the oracle. Profiles must match for both. The peer orders only within a
topic, so a registration and a revocation of one token (two topics) race; the device
tokens whose final state differs from the oracle are counted for the peer, and must be
none for the service, whose device guard orders them by event time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import CpuSampler, peak_rss_mb
from consumer.dev.emulator.process import EmulatorProcess
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

# The latency-bound scenario's stream and emulator (bench/run.py).
USERS, TOKENS_PER_USER, PARTITIONS, SEED = 5_000, 2, 12, 2026
SIZES = (20_000, 200_000)
EMULATOR = ("--quiet", "--no-rate-limits", "--latency-ms", "20")
PROJECT = Path(__file__).parent / "peers" / "parallel-consumer"
JAR = PROJECT / "target" / "peer.jar"
TARGETS = {"events_per_second": 1.5, "cpu_us_per_event": 0.5}  # service ÷ peer


def jar() -> Path:
    """The peer's jar, built with Maven when missing."""
    if not JAR.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SystemExit("the peer scenario needs Maven (mvn) and Java 17 to build the peer")
        print(f"[peer] building {JAR.relative_to(Path.cwd())}", flush=True)
        pom = str(PROJECT / "pom.xml")
        subprocess.run([mvn, "-q", "-B", "-f", pom, "package", "-DskipTests"], check=True)
    return JAR


def run_once(kafka: KafkaTools, size: int) -> dict[str, Any]:
    events = StreamBuilder(users=USERS, seed=SEED, tokens_per_user=TOKENS_PER_USER).events(size)
    topics = create_topics(kafka, partitions=PARTITIONS)
    produce(kafka, topics, events)
    results: dict[str, Any] = {"events": size}
    for name, start in (("service", _service), ("peer", _peer)):
        with EmulatorProcess(*EMULATOR) as emulator:
            group = kafka.unique_name(f"bench-{name}")
            process, stop = start(kafka, emulator, group, topics)
            try:
                measured = _measure(
                    process,
                    kafka=kafka,
                    group=group,
                    topics=topics,
                    emulator=emulator,
                    events=len(events),
                )
            finally:
                stopped = stop()
            profiles, devices = _differences(emulator, events)
        measured.update(exit=stopped, device_tokens_differing=devices)
        if profiles or (name == "service" and devices):
            raise SystemExit(
                f"[peer/{name}] the final Iterable state differs from the oracle:"
                f" {profiles} profiles, {devices} device tokens"
            )
        results[name] = measured
        print(json.dumps({"events": size, name: measured}), flush=True)
    return results


Stop = Callable[[], Any]


def _service(
    kafka: KafkaTools, emulator: EmulatorProcess, group: str, topics: Topics
) -> tuple[subprocess.Popen[bytes], Stop]:
    """The service at its defaults, unpaced (as latency-bound runs it)."""
    env = consumer_env(kafka, emulator, group, topics.env(), ITERABLE_RATE_LIMITS="off")
    env.update(LOG_LEVEL="warning", CONSUMER_COMMIT_INTERVAL_SECONDS="1")
    consumer = ConsumerProcess(env).start()
    assert consumer.process is not None
    return consumer.process, consumer.stop


def _peer(
    kafka: KafkaTools, emulator: EmulatorProcess, group: str, topics: Topics
) -> tuple[subprocess.Popen[bytes], Stop]:
    """The peer at the JVM's defaults; on SIGTERM it drains, commits and prints its counts."""
    java = shutil.which("java")
    if java is None:
        raise SystemExit("the peer scenario needs Java 17 (java on PATH)")
    command = [
        java,
        "-jar",
        str(jar()),
        f"--bootstrap={kafka.bootstrap_servers}",
        f"--group={group}",
        f"--topics={','.join(topics.names.values())}",
        f"--url={emulator.url}",
        f"--api-key={emulator.api_key}",
        "--concurrency=64",
    ]
    log = Path(tempfile.mkstemp(prefix="peer-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> Any:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"log": str(log)}

    return process, stop


def _measure(
    process: subprocess.Popen[bytes],
    *,
    kafka: KafkaTools,
    group: str,
    topics: Topics,
    emulator: EmulatorProcess,
    events: int,
) -> dict[str, Any]:
    """As bench.run measures the service: CPU between the first and last Iterable call."""

    def drained() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"[peer] {process.args!r} exited {process.returncode}")
        return all_committed(kafka, group, topics)

    with CpuSampler(process.pid) as sampler, CpuSampler(emulator.pid) as served:
        wait_for(drained, 900, "every offset", interval=0.5)
        rss = peak_rss_mb(process.pid)
    calls = emulator.calls()
    if not calls:
        raise SystemExit(f"[peer] {process.args!r} made no Iterable calls")
    first, last = min(c["received"] for c in calls), max(c["received"] for c in calls)
    for user, order in first_application_order(calls):
        if order != sorted(order):
            raise SystemExit(f"[peer] updates for {user} applied out of order")
    seconds, cpu = max(last - first, 1e-6), sampler.at(last) - sampler.at(first)
    # The emulator shares the two cores: how much of them it took says what was left.
    serving = served.at(last) - served.at(first)
    return {
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        "cpu_us_per_event": round(cpu / events * 1e6),
        "peak_rss_mb": round(rss, 1),
        "emulator_cpu_us_per_event": round(serving / events * 1e6),
        "requests": len(calls),
        "retried_calls": sum(1 for c in calls if c["status"] != 200),
    }


def _differences(emulator: EmulatorProcess, events: list[Produced]) -> tuple[int, int]:
    """(profiles whose fields other than devices differ from the oracle's, device tokens
    whose enabled state or registration differs), per (user, token)."""
    actual = _split(normalise(emulator.state()["users"]))
    expected = _split(expected_state(events, "hybrid"))
    profiles = sum(
        1
        for key in actual[0].keys() | expected[0].keys()
        if actual[0].get(key) != expected[0].get(key)
    )
    devices = sum(
        1
        for key in actual[1].keys() | expected[1].keys()
        if actual[1].get(key) != expected[1].get(key)
    )
    return profiles, devices


def _split(users: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """Profiles with fields besides devices, by user; enabled devices, by (user, token)."""
    profiles: dict[str, Any] = {}
    devices: dict[tuple[str, str], Any] = {}
    for user in users:
        key = str(user.get("userId") or user.get("email"))
        fields = {k: v for k, v in user["dataFields"].items() if k != "devices"}
        if fields:
            profiles[key] = {**user, "dataFields": fields}
        for device in user["dataFields"]["devices"]:
            devices[key, device["token"]] = device
    return profiles, devices


def run(kafka: KafkaTools, sizes: tuple[int, ...], repeat: int) -> list[dict[str, Any]]:
    summary = []
    for size in sizes:
        samples = [run_once(kafka, size) for _ in range(repeat)]
        row: dict[str, Any] = {"events": size, "runs": repeat}
        for name in ("service", "peer"):
            row[name] = {
                key: statistics.median(s[name][key] for s in samples)
                for key in samples[0][name]
                if isinstance(samples[0][name][key], int | float)
            }
        row["ratios"] = {
            key: round(row["service"][key] / max(row["peer"][key], 1e-9), 2) for key in TARGETS
        }
        row["met"] = (
            row["ratios"]["events_per_second"] >= TARGETS["events_per_second"]
            and row["ratios"]["cpu_us_per_event"] <= TARGETS["cpu_us_per_event"]
        )
        row["samples"] = samples
        summary.append(row)
    return summary


def machine() -> str:
    models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    java = subprocess.run(
        [shutil.which("java") or "java", "-version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    cpu = models[0] if models else "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores; {java[0] if java else 'no java'}"


def markdown(summary: list[dict[str, Any]], host: str) -> str:
    lines = [
        "# `peer`: the service and Confluent Parallel Consumer on the same events",
        "",
        f"`python -m bench --scenario peer` on {datetime.now(UTC):%Y-%m-%d}, {host}; the",
        "machine also runs the broker and the emulator (and other work). Emulator: 20 ms",
        "latency, no rate limits; a fresh one for each consumer. Medians of the runs.",
        "",
        "| events | runs | consumer | events/s | CPU us/event | peak RSS MB | emulator CPU"
        " us/event | requests | device tokens differing from the oracle |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        for name, label in (("service", "service"), ("peer", "parallel-consumer 0.5.3.3")):
            r = row[name]
            lines.append(
                f"| {row['events']:,} | {row['runs']} | {label} | {r['events_per_second']:,.0f}"
                f" | {r['cpu_us_per_event']:.0f} | {r['peak_rss_mb']:.1f}"
                f" | {r['emulator_cpu_us_per_event']:.0f} | {r['requests']:,.0f}"
                f" | {r['device_tokens_differing']:.0f} |"
            )
    lines += [
        "",
        "| events | events/s, service ÷ peer (target ≥ 1.5) | CPU per event, service ÷ peer"
        " (target ≤ 0.5) | met |",
        "| ---: | ---: | ---: | --- |",
    ]
    for row in summary:
        ratios = row["ratios"]
        lines.append(
            f"| {row['events']:,} | {ratios['events_per_second']:.2f}"
            f" | {ratios['cpu_us_per_event']:.2f} | {'yes' if row['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main(kafka: KafkaTools, out: Path, repeat: int = 1, sizes: tuple[int, ...] = SIZES) -> None:
    jar()  # before any measuring: a build would load the machine
    host = machine()
    summary = run(kafka, sizes, repeat)
    text = markdown(summary, host)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps({"machine": host, "sizes": summary}, indent=2) + "\n")
    (out / "peer.md").write_text(text)
    print(text)


if __name__ == "__main__":
    from bench.run import broker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (medians)")
    parser.add_argument("--sizes", type=lambda s: tuple(map(int, s.split(","))), default=SIZES)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    arguments = parser.parse_args()
    with broker() as servers:
        main(KafkaTools(servers), arguments.out, arguments.repeat, arguments.sizes)
