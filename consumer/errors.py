"""The package's error tree.

    ConsumerError
    ├── ConfigError          bad or missing configuration; names the variable
    └── InvalidEvent         an event that breaks the contract; names the field

Third-party errors are translated into these where they enter the package.
Messages never carry secrets or personal data: they name fields, not values.
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
