"""Command line: argv → configuration → objects → run; maps errors to exit codes.

Exit codes: 0 success, 1 a check or the service failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence

from consumer import __version__
from consumer.config import environment, kafka_passthrough, load
from consumer.errors import ConfigError
from consumer.events import EVENT_TYPES
from consumer.schema import event_schema, render


def _schema(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.type:
        sys.stdout.write(render(args.type))
    else:
        schemas = {event_type: event_schema(event_type) for event_type in EVENT_TYPES}
        sys.stdout.write(json.dumps(schemas, indent=2, ensure_ascii=False) + "\n")
    return 0


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from consumer import logs, service  # noqa: PLC0415 - keep `schema` free of the runtime

    settings = load(environ)
    kafka = kafka_passthrough(environ, settings.kafka_group_protocol)
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(service.run(service.Wiring(settings, kafka)))


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from consumer.check import check  # noqa: PLC0415 - keep `schema` free of the runtime

    try:
        settings = load(environ)
        kafka = kafka_passthrough(environ, settings.kafka_group_protocol)
    except ConfigError as exc:
        print(f"FAIL configuration: {exc}")
        return 1
    print("ok   configuration")

    def report(ok: bool, line: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {line}", flush=True)

    return 0 if check(settings, kafka, report) else 1


def _replay(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from consumer.replay import replay  # noqa: PLC0415 - keep `schema` free of the runtime

    settings = load(environ)
    count = replay(
        settings.kafka_bootstrap_servers,
        kafka_passthrough(environ, settings.kafka_group_protocol),
        dlq_topic=args.topic,
        group=f"{settings.kafka_group_id}.dlq-replay",
        limit=args.limit,
        report=lambda line: print(line, file=sys.stderr),
    )
    print(f"re-published {count} message(s) from {args.topic}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iterable-consumer",
        description="Keeps Iterable user profiles and push devices in step with Kafka events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the service (configured by environment)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="check configuration, Kafka, topics and Iterable")
    check.set_defaults(handler=_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of an event type")
    schema.add_argument(
        "type",
        nargs="?",
        choices=EVENT_TYPES,
        help="default: all three, as one JSON object keyed by type",
    )
    schema.set_defaults(handler=_schema)

    dlq = commands.add_parser("dlq", help="dead-letter topics")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    replay = dlq_commands.add_parser("replay", help="re-publish dead letters to their source topic")
    replay.add_argument(
        "--topic", required=True, help="the dead-letter topic, e.g. user.changed.dlq"
    )
    replay.add_argument("--limit", type=int, default=None, help="at most this many messages")
    replay.set_defaults(handler=_replay)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.handler(args, environment() if environ is None else environ)
    except ConfigError as exc:
        print(f"iterable-consumer: configuration error: {exc}", file=sys.stderr)
        return 2
    return result
