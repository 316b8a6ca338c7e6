"""README command one, `python -m consumer.dev.demo`, as a newcomer runs it: it starts its
own broker and emulator, says what became of every example event, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from consumer.dev.demo import INVALID
from consumer.dev.examples import load


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if text in output:
            return output
        assert process.poll() is None, output[-3000:]
        time.sleep(0.2)
    raise TimeoutError(f"no {text!r} after {timeout} s:\n{log.read_text()[-3000:]}")


def test_the_demo_reports_every_event_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer.dev.demo"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"},
            start_new_session=True,
        )
    try:
        output = _wait_for_line(log, "running; Ctrl-C stops everything", process, 120)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0

    table = output.split("What became of each event:\n")[1].split("\n\n")[0].splitlines()
    by_example: dict[str, list[str]] = {}
    for line in table:
        _, example, *rest = line.split()
        by_example.setdefault(example, []).append(" ".join(rest))
    valid = load("valid")
    assert set(by_example) == {e.name for e in valid} | set(INVALID)
    for name in INVALID:
        (outcome,) = by_example[name]
        assert outcome.startswith("dead-lettered "), outcome  # with its reason after it
    twice = valid[0].name
    assert sorted(by_example[twice]) == ["applied", "skipped: duplicate"]
    for example in valid[1:]:
        assert by_example[example.name] == ["applied"], example.name
    assert "Iterable profiles now" in output
    assert "metrics:   http://" in output
