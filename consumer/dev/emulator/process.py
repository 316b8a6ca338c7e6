"""The emulator as a real subprocess, with a client for its admin endpoints (tests, benches)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


class EmulatorProcess:
    """`iterable-emulator` on a free port; its output goes to a log file, never a full pipe."""

    def __init__(
        self,
        *extra_args: str,
        api_key: str = "test-key",
        project_type: str = "hybrid",
        log_path: Path | None = None,
        ca_bundle: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.ca_bundle = ca_bundle
        self.project_type = project_type
        self._args = extra_args
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="emulator-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._admin: httpx.Client | None = None

    def start(self, timeout: float = 15.0) -> EmulatorProcess:
        command = [
            sys.executable,
            "-m",
            "consumer.dev.emulator",
            "--port",
            "0",
            "--api-key",
            self.api_key,
            "--project-type",
            self.project_type,
            *self._args,
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.url:
            first = self.log_path.read_text(errors="replace").partition("\n")
            if first[1] and first[0].startswith("listening on "):
                self.url = first[0].removeprefix("listening on ").strip()
            elif self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start:\n{self.log_path.read_text()}")
            else:
                time.sleep(0.05)
        verify = ssl.create_default_context(cafile=str(self.ca_bundle)) if self.ca_bundle else True
        self._admin = httpx.Client(base_url=self.url, timeout=30, verify=verify)
        return self

    @property
    def admin(self) -> httpx.Client:
        if self._admin is None:
            raise RuntimeError("the emulator is not started")
        return self._admin

    @property
    def pid(self) -> int:
        return self._process.pid if self._process else -1

    def faults(self, **patch: Any) -> dict[str, Any]:
        response = self.admin.post("/_admin/faults", json=patch)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.admin.get(
            "/_admin/calls", params={"since": since}
        ).json()["calls"]
        return calls

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.admin.get("/_admin/state").json()
        return state

    def reset(self) -> None:
        self.admin.post("/_admin/reset").raise_for_status()

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the emulated API with the right key (override `headers` to test auth)."""
        headers = kwargs.pop("headers", {"Api-Key": self.api_key})
        return self.admin.request(method, path, headers=headers, **kwargs)

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        user: dict[str, Any] | None = (
            self.api("GET", "/api/users/getByEmail", params={"email": email}).json().get("user")
        )
        return user

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        user: dict[str, Any] | None = (
            self.api("GET", "/api/users/byUserId", params={"userId": user_id}).json().get("user")
        )
        return user

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
