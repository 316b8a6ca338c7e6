"""What became of each demo event: read back from the topics, the consumer's log and the
dead-letter topics, as a short table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from consumer.dev.examples import Example
from consumer.dev.topics import Record

_OUTCOMES = {
    "ok": "applied",
    "dead_lettered": "dead-lettered",
    "invalid": "dead-lettered",
    "duplicate": "skipped: duplicate",
    "stale": "skipped: stale",
}


@dataclass(frozen=True, slots=True)
class Row:
    where: str  # topic[partition]@offset
    example: str
    outcome: str
    reason: str


def finished(log_path: Path) -> dict[tuple[str, int, int], str]:
    """(topic, partition, offset) → outcome, from the consumer's JSON debug log."""
    outcomes: dict[tuple[str, int, int], str] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"message finished"' not in line:
            continue
        entry = json.loads(line)
        outcomes[(entry["topic"], entry["partition"], entry["offset"])] = entry["outcome"]
    return outcomes


def reasons(letters: Iterable[Record]) -> dict[tuple[str, int, int], str]:
    """(source topic, partition, offset) → the dead letter's error message."""
    found: dict[tuple[str, int, int], str] = {}
    for letter in letters:
        headers = {k: v.decode(errors="replace") for k, v in letter.headers}
        where = (
            headers["dlq.source.topic"],
            int(headers["dlq.source.partition"]),
            int(headers["dlq.source.offset"]),
        )
        found[where] = headers.get("dlq.error.message", "")
    return found


def rows(
    published: dict[str, list[Record]],
    examples: list[Example],
    outcomes: dict[tuple[str, int, int], str],
    letters: dict[tuple[str, int, int], str],
) -> list[Row]:
    """One row per record read back from each topic, named by the example it carries."""
    names = {(e.value, e.headers): e.name for e in examples}
    table: list[Row] = []
    for topic, records in published.items():
        for record in sorted(records, key=lambda r: (r.partition or 0, r.offset or 0)):
            where = (topic, record.partition or 0, record.offset or 0)
            outcome = outcomes.get(where)
            table.append(
                Row(
                    where=f"{topic}[{where[1]}]@{where[2]}",
                    example=names.get((record.value or b"", record.headers), "?"),
                    outcome=_OUTCOMES.get(outcome, "not finished") if outcome else "not finished",
                    reason=letters.get(where, ""),
                )
            )
    return table


def render(table: list[Row]) -> str:
    widths = [max(len(getattr(r, f)) for r in table) for f in ("where", "example", "outcome")]
    lines = []
    for row in table:
        cells = (row.where, row.example, row.outcome)
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        lines.append(f"{line}  {row.reason[:70]}".rstrip())
    return "\n".join(lines)
