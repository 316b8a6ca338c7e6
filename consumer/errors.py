"""The package's error tree.

    ConsumerError
    ├── ConfigError            bad or missing configuration; names the variable
    ├── InvalidEvent           an event that breaks the contract; names the field
    └── IterableError          a call to Iterable did not succeed
        ├── TransientError     network error, timeout, 408, 429, 5xx: retry later
        ├── PermanentError     400, 404, 409 and other 4xx, or a failed bulk record: dead-letter
        └── CredentialsError   401, 403: wrong for every call; stop sending
            └── UntrustedCertificate  Iterable's TLS certificate does not verify

Third-party errors (httpx, aiohttp, confluent-kafka) are translated into these where they
enter the package. Messages never carry secrets, and personal identifiers only redacted.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ConsumerError):
    """The configuration is missing a value or holds a bad one."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class InvalidEvent(ConsumerError):
    """An event that cannot be processed: bad bytes, bad JSON or a contract violation."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class IterableError(ConsumerError):
    """Iterable did not accept a call; `status` is None when no HTTP response came back."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = f"{endpoint} HTTP {status}" if status is not None else endpoint
        super().__init__(f"{where}{f' {code}' if code else ''}: {message}")
        self.endpoint = endpoint
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.attempts = 1  # the client sets how many requests it made in all


class TransientError(IterableError):
    """Worth retrying: the same call may succeed later."""


class PermanentError(IterableError):
    """Iterable rejected this call for good; retrying cannot help."""


class CredentialsError(IterableError):
    """The API key is wrong or lacks rights: every call will fail the same way."""


class UntrustedCertificate(CredentialsError):
    """Iterable's TLS certificate did not verify: every call would fail the same way."""
