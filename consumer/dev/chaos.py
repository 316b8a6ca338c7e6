"""The chaos runner: a continuous stream of events while faults are injected, then a ledger.

    python -m consumer.dev.chaos                  # the short profile (CI runs it)
    python -m consumer.dev.chaos --profile full   # minutes per scenario, on demand

Each scenario checks the emulator's final state against the oracle and the call log for
per-user order, and prints: events produced, applied, calls sent more than once,
dead-lettered, lost (must be 0) and order violations (must be 0). The churn scenario runs
again with exclusive device token ownership, on a stream whose tokens change hands.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from confluent_kafka import Producer

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.kafka import LocalKafka
from consumer.dev.scenario import (
    TYPES,
    Produced,
    StreamBuilder,
    Topics,
    all_committed,
    consumer_env,
    expected_state,
    first_application_order,
    markers,
    normalise,
    wait_for,
)
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record
from consumer.translate import DeviceOwnership


@dataclass(frozen=True)
class Profile:
    seconds: float  # how long events keep arriving
    rate: int  # events per second
    churn_every: float
    outage: float
    long_outage: float


PROFILES = {
    "short": Profile(seconds=24, rate=80, churn_every=6, outage=5, long_outage=15),
    "full": Profile(seconds=200, rate=150, churn_every=10, outage=60, long_outage=600),
}
BUFFER_BOUND = 500  # CONSUMER_MAX_BUFFERED in the long-outage scenario


@dataclass
class Row:
    scenario: str
    produced: int = 0
    applied: int = 0
    sent_more_than_once: int = 0
    dead_lettered: int = 0
    lost: int = 0
    order_violations: int = 0
    notes: list[str] = field(default_factory=list)


class Stream(threading.Thread):
    """Produces a fixed-seed stream at `rate` events/s until stopped; keeps what it sent."""

    def __init__(
        self,
        kafka: KafkaTools,
        topics: Topics,
        rate: int,
        poison: float = 0.0,
        handoffs: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self._producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
            }
        )
        self._topics, self._rate, self._poison = topics, rate, poison
        self._halt = threading.Event()
        self._rng = random.Random(11)
        self.builder = StreamBuilder(users=40, handoffs=handoffs, markers=True)
        self.sent: list[Produced] = []

    def run(self) -> None:
        while not self._halt.is_set():
            for made in self.builder.events(max(1, self._rate // 5)):
                event = made
                if self._rng.random() < self._poison:
                    event = Produced(made.event_type, Record(made.record.key, b"{poison"), made.seq)
                self._producer.produce(
                    self._topics.names[event.event_type], event.record.value, event.record.key
                )
                self.sent.append(event)
            self._producer.poll(0)
            self._halt.wait(0.2)

    def finish(self) -> list[Produced]:
        self._halt.set()
        self.join()
        if self._producer.flush(60) != 0:
            raise RuntimeError("the stream's producer could not deliver everything")
        return self.sent


@contextmanager
def _consumers() -> Iterator[list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()


def _topics(kafka: KafkaTools, replication: int) -> Topics:
    prefix = kafka.unique_name("chaos")
    config = {"min.insync.replicas": "2"} if replication >= 3 else {}
    names = {t: kafka.create_topic(f"{prefix}.{t}", 6, replication, config) for t in TYPES}
    for name in names.values():
        kafka.create_topic(f"{name}.dlq", 1, replication, config)
    return Topics(names)


def _ledger(
    name: str,
    sent: list[Produced],
    emulator: EmulatorProcess,
    kafka: KafkaTools,
    topics: Topics,
    *,
    ownership: DeviceOwnership = "shared",
) -> Row:
    row = Row(name, produced=len(sent))
    valid = [e for e in sent if not (e.record.value or b"").startswith(b"{poison")]
    calls = emulator.calls()
    sent_n: Counter[int] = Counter()  # every request that reached Iterable, any answer
    applied_n: set[int] = set()
    for call in calls:
        body = call.get("body") or {}
        if call["path"] == "/api/users/update" and isinstance(body, dict):
            # Every event's own marker field: a coalesced call carries several events.
            for n in markers(body.get("dataFields") or {}):
                sent_n[n] += 1
                if call["status"] == 200:
                    applied_n.add(n)
    wanted = {
        json.loads(e.record.value or b"{}")["data"]["dataFields"]["n"]
        for e in valid
        if e.event_type == "user.changed"
    }
    row.applied = len(wanted & applied_n)
    row.sent_more_than_once = sum(1 for n in wanted if sent_n[n] > 1)
    row.dead_lettered = sum(len(kafka.read_all(topics.names[t] + ".dlq")) for t in TYPES)
    row.lost = len(wanted - applied_n)
    if normalise(emulator.state()["users"]) != expected_state(
        valid, emulator.project_type, ownership
    ):
        row.lost = max(row.lost, 1)
        row.notes.append("final state differs from the oracle")
    row.order_violations = sum(
        1 for _, order in first_application_order(calls) if order != sorted(order)
    )
    return row


def _run(
    name: str,
    kafka: KafkaTools,
    emulator: EmulatorProcess,
    profile: Profile,
    *,
    replication: int = 1,
    consumers: int = 1,
    poison: float = 0.0,
    extra_env: dict[str, str] | None = None,
    during: Callable[[float, list[ConsumerProcess], Callable[[], ConsumerProcess]], None]
    | None = None,
    ownership: DeviceOwnership = "shared",
) -> Row:
    emulator.reset()
    topics = _topics(kafka, replication)
    group = kafka.unique_name("chaos-group")
    extra = dict(extra_env or {})
    if ownership != "shared":  # the default stays unset, as in a plain deployment
        extra["ITERABLE_DEVICE_TOKEN_OWNERSHIP"] = ownership
    env = consumer_env(kafka, emulator, group, topics.env(), LOG_LEVEL="info", **extra)
    with _consumers() as running:

        def start() -> ConsumerProcess:
            process = ConsumerProcess(env).start()
            running.append(process)
            return process

        for _ in range(consumers):
            start()
        # With exclusive ownership a fifth of the registrations take another user's token.
        handoffs = 0.2 if ownership == "exclusive" else 0.0
        stream = Stream(kafka, topics, profile.rate, poison, handoffs)
        began = time.monotonic()
        stream.start()
        while (elapsed := time.monotonic() - began) < profile.seconds:
            if during is not None:
                during(elapsed, running, start)
            time.sleep(0.25)
        sent = stream.finish()
        if not any(p.process is not None and p.process.poll() is None for p in running):
            start()
        wait_for(lambda: all_committed(kafka, group, topics), 240, f"{name}: offsets at the end")
        row = _ledger(name, sent, emulator, kafka, topics, ownership=ownership)
        if ownership == "exclusive":
            row.notes.append(f"{_moves(sent)} registrations took a token from another user")
        return row


def _moves(sent: list[Produced]) -> int:
    """Registrations in the stream of a token last registered by another user."""
    owners: dict[str, str] = {}
    moves = 0
    for event in sent:
        if event.event_type == "device.registered":
            data = json.loads(event.record.value or b"{}")["data"]
            token, user = data["device"]["token"], data["userId"]
            moves += owners.get(token, user) != user
            owners[token] = user
    return moves


def broker_failure(profile: Profile, emulator: EmulatorProcess, _: KafkaTools) -> Row:
    with LocalKafka(nodes=3) as cluster:
        kafka = KafkaTools(cluster.bootstrap_servers)
        state = {"killed": False, "back": False}

        def faults(elapsed: float, *_: object) -> None:
            if elapsed > profile.seconds * 0.25 and not state["killed"]:
                cluster.kill(2)
                state["killed"] = True
            if elapsed > profile.seconds * 0.6 and not state["back"]:
                cluster.start_node(2)
                state["back"] = True

        return _run(
            "broker kill -9 (1 of 3)", kafka, emulator, profile, replication=3, during=faults
        )


def consumer_churn(
    profile: Profile,
    emulator: EmulatorProcess,
    kafka: KafkaTools,
    ownership: DeviceOwnership = "shared",
) -> Row:
    rng = random.Random(5)
    state = {"next": profile.churn_every}

    def churn(
        elapsed: float, running: list[ConsumerProcess], start: Callable[[], ConsumerProcess]
    ) -> None:
        if elapsed < state["next"]:
            return
        state["next"] += profile.churn_every
        alive = [p for p in running if p.process is not None and p.process.poll() is None]
        victim = rng.choice(alive)
        if rng.random() < 0.5:
            victim.kill()
        else:
            victim.process.terminate()  # type: ignore[union-attr]
        start()

    exclusive = ", exclusive token ownership" if ownership == "exclusive" else ""
    return _run(
        f"consumer churn (3 members{exclusive})",
        kafka,
        emulator,
        profile,
        consumers=3,
        during=churn,
        ownership=ownership,
    )


def consumer_churn_exclusive(profile: Profile, emulator: EmulatorProcess, kafka: KafkaTools) -> Row:
    """Churn again with exclusive token ownership and tokens changing hands: half as long,
    churning twice as often, so it costs CI little and still replaces three members."""
    half = Profile(
        profile.seconds / 2,
        profile.rate,
        profile.churn_every / 2,
        profile.outage,
        profile.long_outage,
    )
    return consumer_churn(half, emulator, kafka, ownership="exclusive")


def iterable_faults(profile: Profile, emulator: EmulatorProcess, kafka: KafkaTools) -> Row:
    state = {"storm": False, "outage": False}

    def faults(elapsed: float, *_: object) -> None:
        if elapsed > profile.seconds * 0.2 and not state["storm"]:
            emulator.faults(throttle_seconds=3)
            state["storm"] = True
        if elapsed > profile.seconds * 0.45 and not state["outage"]:
            emulator.faults(outage_seconds=profile.outage)
            state["outage"] = True

    def run() -> Row:
        emulator.faults(
            error_rates={"500": 0.05}, hang_rate=0.01, hang_seconds=5, apply_then_fail_rate=0.01
        )
        return _run(
            "Iterable 5xx, hangs, 429s, outage",
            kafka,
            emulator,
            profile,
            extra_env={"ITERABLE_READ_TIMEOUT_SECONDS": "1"},
            during=faults,
        )

    row = run()
    emulator.faults(error_rates={}, hang_rate=0.0, apply_then_fail_rate=0.0)
    return row


def long_outage(profile: Profile, emulator: EmulatorProcess, kafka: KafkaTools) -> Row:
    """Iterable down for `long_outage` while events keep arriving; memory stays bounded."""
    longer = Profile(
        profile.long_outage + 10,
        profile.rate,
        profile.churn_every,
        profile.outage,
        profile.long_outage,
    )
    seen = {"buffered": 0.0, "lag": 0.0, "started": False}

    def outage(elapsed: float, running: list[ConsumerProcess], *_: object) -> None:
        if not seen["started"] and elapsed > 3:
            emulator.faults(outage_seconds=profile.long_outage)
            seen["started"] = True
        text = running[0].metrics() if running else ""
        for line in text.splitlines():
            if line.startswith("iterable_consumer_buffered_events "):
                seen["buffered"] = max(seen["buffered"], float(line.split()[-1]))
            if line.startswith("iterable_consumer_lag_seconds{"):
                seen["lag"] = max(seen["lag"], float(line.split()[-1]))

    row = _run(
        "Iterable down, events arriving",
        kafka,
        emulator,
        longer,
        extra_env={"CONSUMER_MAX_BUFFERED": str(BUFFER_BOUND)},
        during=outage,
    )
    row.notes.append(f"peak buffered {seen['buffered']:.0f} (bound {BUFFER_BOUND})")
    row.notes.append(f"peak lag {seen['lag']:.0f} s")
    if seen["buffered"] > BUFFER_BOUND or seen["lag"] < profile.long_outage / 2:
        row.lost = max(row.lost, 1)
        row.notes.append("memory over its bound, or the outage did not show as lag")
    return row


def poison_flood(profile: Profile, emulator: EmulatorProcess, kafka: KafkaTools) -> Row:
    return _run(
        "30% poison, breaker above it",
        kafka,
        emulator,
        profile,
        poison=0.3,
        extra_env={"DLQ_BREAKER_RATIO": "0.6"},
    )


Scenario = Callable[[Profile, EmulatorProcess, KafkaTools], Row]


def poison_flood_breaker(profile: Profile, emulator: EmulatorProcess, kafka: KafkaTools) -> Row:
    """30% poison with the breaker below it: the circuit opens, consumption stops, and every
    committed message was applied or dead-lettered (nothing skipped to get there)."""
    emulator.reset()
    topics = _topics(kafka, 1)
    group = kafka.unique_name("chaos-group")
    extra = {
        "DLQ_BREAKER_RATIO": "0.2",
        "DLQ_BREAKER_MIN_EVENTS": "20",
        "DLQ_BREAKER_COOLDOWN_SECONDS": "3600",
        "CONSUMER_MAX_BUFFERED": "50",
    }
    with _consumers() as running:
        env = consumer_env(kafka, emulator, group, topics.env(), LOG_LEVEL="info", **extra)
        process = ConsumerProcess(env).start()
        running.append(process)
        stream = Stream(kafka, topics, profile.rate, poison=0.3)
        stream.start()
        opened = "iterable_consumer_dead_letter_circuit_open 1.0"
        wait_for(lambda: opened in process.metrics(), 120, "the dead-letter circuit to open")
        sent = stream.finish()
        time.sleep(2)  # let in-flight work finish and its offsets commit
        row = _breaker_ledger(sent, emulator, kafka, topics, group)
        if process.probe("/readyz") != 503:
            row.lost = max(row.lost, 1)
            row.notes.append("ready while the circuit is open")
    return row


def _breaker_ledger(
    sent: list[Produced], emulator: EmulatorProcess, kafka: KafkaTools, topics: Topics, group: str
) -> Row:
    row = Row("30% poison, breaker below it", produced=len(sent))
    applied = {
        n
        for call in emulator.calls()
        if call["path"] == "/api/users/update" and call["status"] == 200
        for n in markers((call.get("body") or {}).get("dataFields") or {})
    }
    name = topics.names["user.changed"]
    committed = kafka.committed(group, name)
    letters = kafka.read_all(name + ".dlq")
    dead = {
        (int(dict(r.headers)["dlq.source.partition"]), int(dict(r.headers)["dlq.source.offset"]))
        for r in letters
    }
    row.dead_lettered = len(letters)
    for record in kafka.read_all(name):
        if record.partition is None or record.offset is None:
            continue
        if record.offset >= committed.get(record.partition, -1):
            continue  # not committed: it waits for the circuit to close
        if (record.value or b"").startswith(b"{poison"):
            handled = (record.partition, record.offset) in dead
        else:
            handled = json.loads(record.value or b"{}")["data"]["dataFields"]["n"] in applied
            row.applied += handled
        row.lost += not handled
    total = sum(kafka.end_offsets(name).values())
    row.notes.append(
        f"{sum(max(0, c) for c in committed.values())} of {total} committed, then held"
    )
    return row


SCENARIOS: dict[str, Scenario] = {
    "broker": broker_failure,
    "churn": consumer_churn,
    "churn-exclusive": consumer_churn_exclusive,
    "iterable": iterable_faults,
    "outage": long_outage,
    "poison": poison_flood,
    "breaker": poison_flood_breaker,
}


def run(profile_name: str, names: list[str]) -> list[Row]:
    profile = PROFILES[profile_name]
    rows = []
    with LocalKafka() as single, EmulatorProcess("--quiet", "--latency-ms", "5") as emulator:
        kafka = KafkaTools(single.bootstrap_servers)
        for name in names:
            rows.append(SCENARIOS[name](profile, emulator, kafka))
    return rows


def table(rows: list[Row]) -> str:
    columns = ["scenario", "produced", "applied", "sent more than once", "dead-lettered"]
    columns += ["lost", "order violations"]
    columns += ["notes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cells = [r.scenario, r.produced, r.applied, r.sent_more_than_once, r.dead_lettered]
        cells += [r.lost, r.order_violations, "; ".join(r.notes)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.dev.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args(argv)
    rows = run(args.profile, args.scenario or list(SCENARIOS))
    print(table(rows))
    print(json.dumps([asdict(r) for r in rows]))
    return 0 if all(r.lost == 0 and r.order_violations == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
