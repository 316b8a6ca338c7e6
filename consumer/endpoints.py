"""The Iterable endpoints the service calls, and the default pace for each."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Endpoint(StrEnum):
    UPDATE = "users/update"
    BULK_UPDATE = "users/bulkUpdate"
    REGISTER_DEVICE = "users/registerDeviceToken"
    DISABLE_DEVICE = "users/disableDevice"
    UPDATE_EMAIL = "users/updateEmail"
    GET_BY_EMAIL = "users/getByEmail"


# A lookup that cannot match a real profile: harmless, and allowed by server-side keys.
PROBE_EMAIL: Final = "iterable-consumer-check@example.invalid"

# Just under Iterable's documented per-project limits; disableDevice and updateEmail have
# none documented, so they get the same budget as the other single-user writes.
DEFAULT_RATES: Final[Mapping[Endpoint, float]] = {
    Endpoint.UPDATE: 490.0,
    Endpoint.REGISTER_DEVICE: 490.0,
    Endpoint.DISABLE_DEVICE: 490.0,
    Endpoint.UPDATE_EMAIL: 490.0,
    Endpoint.BULK_UPDATE: 4.8,
    Endpoint.GET_BY_EMAIL: 95.0,
}
