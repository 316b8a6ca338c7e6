"""What a benchmark run measures: the consumer's own CPU and memory accounting (from
/proc), and the Iterable side as the emulator saw it (requests, 429s, delays)."""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.dev.scenario import Produced

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process, as the kernel accounts them."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class CpuSampler:
    """Samples a process's CPU seconds against the wall clock, for reading at any instant."""

    pid: int
    interval: float = 0.05
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CpuSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cpu.append(cpu_seconds(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self.times.append(time.time())
            self._stop.wait(self.interval)

    def at(self, when: float) -> float:
        """CPU seconds used by `when` (wall clock), interpolated between samples."""
        i = bisect.bisect_left(self.times, when)
        if i <= 0:
            return self.cpu[0]
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1, c0, c1 = self.times[i - 1], self.times[i], self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def delays(events: Iterable[Produced], calls: list[dict[str, Any]]) -> list[float]:
    """Seconds from each event's `time` to the emulator receiving the first call carrying it
    (user updates by `dataFields.n`, registrations by `device.dataFields.seq`)."""
    born: dict[int, float] = {}
    for produced in events:
        event = json.loads(produced.record.value)
        if event["type"] != "push.permission.revoked":
            born[produced.seq] = datetime.fromisoformat(event["time"]).timestamp()
    arrived: dict[int, float] = {}
    for call in calls:
        body = call.get("body")
        if call["status"] != 200 or not isinstance(body, dict):
            continue
        records = body.get("users", [body])
        for record in records:
            seq = (record.get("dataFields") or {}).get("n")
            if seq is None:
                seq = ((record.get("device") or {}).get("dataFields") or {}).get("seq")
            if isinstance(seq, int) and seq not in arrived:
                arrived[seq] = call["received"]
    return [arrived[seq] - born[seq] for seq in born if seq in arrived]


def sustained_rate(calls: list[dict[str, Any]], path: str, skip: float = 5.0) -> float:
    """Accepted requests/s to `path` from `skip` seconds after its first call to the call
    by which 95% of them had been answered (the tail, when work runs out, is left out)."""
    times = sorted(c["received"] for c in calls if c["path"] == path and c["status"] == 200)
    if len(times) < 20:
        return 0.0
    begin, end = times[0] + skip, times[int(len(times) * 0.95)]
    inside = [t for t in times if begin <= t <= end]
    return len(inside) / (end - begin) if end > begin else 0.0


def throttled_share(calls: list[dict[str, Any]], skip: float = 5.0) -> float:
    """Share of requests answered 429 after the first `skip` seconds."""
    if not calls:
        return 0.0
    begin = min(c["received"] for c in calls) + skip
    later = [c for c in calls if c["received"] >= begin]
    return sum(1 for c in later if c["status"] == 429) / len(later) if later else 0.0
