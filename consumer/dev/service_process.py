"""`iterable-consumer run` as a real subprocess, for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from consumer.dev.kafka import free_port


class ConsumerProcess:
    """One consumer process; stdout and stderr go to a log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path | None = None) -> None:
        self.metrics_port = int(env.get("METRICS_PORT") or free_port())
        self.env = {**os.environ, **env, "METRICS_PORT": str(self.metrics_port)}
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="consumer-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> ConsumerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def probe(self, path: str) -> int | None:
        try:
            return httpx.get(f"{self.url}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def metrics(self) -> str:
        """The /metrics text, or "" while the endpoint is not up yet."""
        try:
            return httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.probe("/readyz") != 200:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"consumer exited {self.process.returncode}:\n{self.logs()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer not ready after {timeout} s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None  # noqa: S101 - started before
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """`kill -9`."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.kill()
