"""Command line: argv → configuration → objects → run; maps errors to exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from consumer import __version__
from consumer.events import EVENT_TYPES
from consumer.schema import event_schema, render


def _schema(args: argparse.Namespace) -> int:
    if args.type:
        sys.stdout.write(render(args.type))
    else:
        schemas = {event_type: event_schema(event_type) for event_type in EVENT_TYPES}
        sys.stdout.write(json.dumps(schemas, indent=2, ensure_ascii=False) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iterable-consumer",
        description="Keeps Iterable user profiles and push devices in step with Kafka events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema = commands.add_parser("schema", help="print the JSON Schema of an event type")
    schema.add_argument(
        "type",
        nargs="?",
        choices=EVENT_TYPES,
        help="default: all three, as one JSON object keyed by type",
    )
    schema.set_defaults(handler=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result
