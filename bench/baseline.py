"""The consumer most teams write first, measured against ours on the same events.

    .venv/bin/python -m bench.baseline --bootstrap HOST:PORT --group G --topics a,b,c \
        --url http://127.0.0.1:PORT --api-key KEY --events 500

Poll one message, parse and translate it with the service's own code, POST it with a
synchronous `httpx.Client`, commit that one offset synchronously, repeat. It retries 429
and 5xx after a second so that it is correct, just slow. Prints one JSON line: events,
seconds and CPU seconds from its first message to its last, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import httpx
from confluent_kafka import Consumer

from consumer.errors import InvalidEvent
from consumer.events import parse
from consumer.translate import Translator

_RETRY = frozenset({429, 500, 502, 503, 504})


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--bootstrap", "--group", "--topics", "--url", "--api-key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--project-type", default="hybrid")
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(args.topics.split(","))
    translator = Translator(args.project_type)
    http = httpx.Client(base_url=f"{args.url}/api/", headers={"Api-Key": args.api_key})
    done, began, cpu_began = 0, 0.0, 0.0
    while done < args.events:
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        if done == 0:
            began, cpu_began = time.monotonic(), _cpu()
        try:
            event = parse(message.value() or b"", message.headers() or [])
        except InvalidEvent:
            event = None
        for call in translator.calls(event) if event else []:
            while http.post(call.endpoint.value, json=call.payload).status_code in _RETRY:
                time.sleep(1.0)
        consumer.commit(message, asynchronous=False)
        done += 1
    seconds, cpu = time.monotonic() - began, _cpu() - cpu_began
    consumer.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"events": done, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_kib / 1024}
        )
    )


if __name__ == "__main__":
    main()
