"""A real Prometheus (Debian's 2.42, installed by `scripts/setup --dev`) scraping one target.

Scrapes and evaluates every second, adds the `namespace` and `pod` labels a PodMonitor
would, and loads the chart's rules file through one test-only override: every `for:`
duration is read with minutes as seconds (`for: 10m` → `for: 10s`, `1h` → `1m`), so a
run of two minutes can see alerts reach `firing`. Expressions and their range windows
stay as shipped, and the shipped file is never changed.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from consumer.dev.kafka import free_port

BINARY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "prometheus"
_DURATION = re.compile(r"(\d+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def shortened_for(duration: str) -> str:
    """A `for:` duration sixty times shorter (minutes read as seconds), at least 1 s."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"unsupported duration {duration!r}")
    seconds = sum(int(n) * _SECONDS[u] for n, u in parts)
    return f"{max(1, round(seconds / 60))}s"


def shortened_rules(text: str) -> str:
    """The rules file with every `for:` shortened and nothing else changed."""
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = shortened_for(rule["for"])
    return yaml.safe_dump(doc, sort_keys=False)


class Prometheus:
    """`prometheus` on a free loopback port with a temporary TSDB, scraping `target_port`."""

    def __init__(self, target_port: int, rules: Path, namespace: str, pod: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.log_path = self.home / "prometheus.log"
        (self.home / "rules.yaml").write_text(shortened_rules(rules.read_text()))
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(self.home / "rules.yaml")],
            "scrape_configs": [
                {
                    "job_name": "iterable-consumer",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{target_port}"],
                            "labels": {"namespace": namespace, "pod": pod},
                        }
                    ],
                }
            ],
        }
        (self.home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=30)

    def start(self, timeout: float = 30.0) -> Prometheus:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run scripts/setup --dev")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    str(BINARY),
                    f"--config.file={self.home / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            return self._client.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def _api(self, path: str, **params: Any) -> Any:
        answer = self._client.get(f"/api/v1/{path}", params=params).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus refused {params}: {answer}")
        return answer["data"]["result"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        result: list[dict[str, Any]] = self._api("query", **params)
        return result

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._api(
            "query_range", query=expr, start=start, end=end, step=step
        )
        return result

    def answers(self, expr: str) -> bool:
        """Whether an instant query of `expr` returns at least one series now."""
        return bool(self.query(expr))

    def ever_firing(self, start: float, end: float) -> set[str]:
        """Every alert that was firing at some evaluation between `start` and `end` (a range
        selector sees every evaluation; query_range's steps could miss the last second)."""
        window = math.ceil(end - start) + 1
        series = self.query(f'ALERTS{{alertstate="firing"}}[{window}s]', at=end)
        return {s["metric"]["alertname"] for s in series}

    def stop(self) -> None:
        self._client.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def running(target_port: int, rules: Path, namespace: str, pod: str) -> Iterator[Prometheus]:
    """A started Prometheus, stopped (and its TSDB removed) on the way out."""
    prometheus = Prometheus(target_port, rules, namespace, pod)
    try:
        yield prometheus.start()
    finally:
        prometheus.stop()
