"""Events per second end to end: a real broker, the emulator with latency, the consumer.

    .venv/bin/python bench/end_to_end.py [--events 20000] [--latency-ms 20] [--partitions 12]

Pre-produces a fixed-seed mix (70% user.changed, 20% device.registered, 10%
push.permission.revoked), starts one consumer process, and times it from start until the
committed offsets reach the end of every topic. Also reports the consumer's CPU seconds
per 1,000 events (from /proc) and checks that every user update reached the emulator.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from consumer.dev.emulator.process import EmulatorProcess
from consumer.dev.kafka import LocalKafka
from consumer.dev.service_process import ConsumerProcess
from consumer.dev.topics import KafkaTools, Record

TOPICS = ("user.changed", "device.registered", "push.permission.revoked")


def _events(count: int, seed: int) -> dict[str, list[Record]]:
    rng = random.Random(seed)
    out: dict[str, list[Record]] = {t: [] for t in TOPICS}
    for n in range(count):
        user = rng.randrange(5000)
        token = f"tok-{rng.randrange(10000)}"
        draw = rng.random()
        base = {
            "specversion": "1.0",
            "id": f"e{n}",
            "source": "/bench",
            "time": f"2026-11-28T10:00:{n % 60:02d}Z",
        }
        if draw < 0.7:
            data = {
                "userId": f"u{user}",
                "email": f"u{user}@example.com",
                "dataFields": {"n": n, "plan": rng.choice("abc")},
            }
            topic, key = "user.changed", f"u{user}"
        elif draw < 0.9:
            data = {
                "userId": f"u{user}",
                "device": {"token": token, "platform": "GCM", "applicationName": "App"},
            }
            topic, key = "device.registered", token
        else:
            data = {"token": token, "userId": f"u{user}"}
            topic, key = "push.permission.revoked", token
        value = json.dumps({**base, "type": topic, "data": data}).encode()
        out[topic].append(Record(key.encode(), value))
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--paced",
        dest="unlimited",
        action="store_false",
        help="keep the client's default pace (just under Iterable's limits)",
    )
    args = parser.parse_args()

    with (
        LocalKafka() as broker,
        EmulatorProcess(
            "--no-rate-limits", "--quiet", "--latency-ms", str(args.latency_ms)
        ) as emulator,
    ):
        kafka = KafkaTools(broker.bootstrap_servers)
        batches = _events(args.events, args.seed)
        for topic, records in batches.items():
            kafka.create_topic(topic, args.partitions)
            kafka.create_topic(f"{topic}.dlq")
            kafka.produce(topic, records)
        ends = {t: kafka.end_offsets(t) for t in TOPICS}
        consumer = ConsumerProcess(
            {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                "KAFKA_GROUP_ID": "bench",
                "ITERABLE_API_KEY": emulator.api_key,
                "ITERABLE_BASE_URL": emulator.url,
                "LOG_LEVEL": "warning",
                # The emulator has no limits in this scenario; neither does the client.
                "ITERABLE_RATE_LIMITS": "off" if args.unlimited else "",
            }
        )
        began = time.monotonic()
        consumer.start()
        assert consumer.process is not None
        while any(
            kafka.committed("bench", t).get(p, -1) < end
            for t in TOPICS
            for p, end in ends[t].items()
            if end
        ):
            time.sleep(0.1)
        elapsed = time.monotonic() - began
        cpu = _cpu_seconds(consumer.process.pid)
        consumer.stop()
        updates = sum(
            1 for c in emulator.calls() if c["path"] == "/api/users/update" and c["status"] == 200
        )
        result = {
            "events": args.events,
            "latency_ms": args.latency_ms,
            "seconds": round(elapsed, 2),
            "events_per_second": round(args.events / elapsed),
            "consumer_cpu_seconds_per_1000_events": round(cpu / args.events * 1000, 3),
            "user_updates_applied": updates,
            "user_changed_events": len(batches["user.changed"]),
        }
        print(json.dumps(result))
        if updates < len(batches["user.changed"]):
            raise SystemExit("fewer user updates reached Iterable than were produced")


if __name__ == "__main__":
    main()
