"""JSON Schemas (draft 2020-12) of the three events, built from the rules `events` enforces.

The files under `schemas/` are this module's output; a test keeps them identical.
A schema describes the structured form of an event; a binary-mode event is checked by
lifting its `ce_*` headers into the envelope first.
"""

from __future__ import annotations

import json
from typing import Any, Final

from consumer.events import (
    DEVICE_REGISTERED,
    EMAIL_MAX_LENGTH,
    EMAIL_PATTERN,
    NOT_BLANK_PATTERN,
    PLATFORMS,
    PUSH_PERMISSION_REVOKED,
    TIME_PATTERN,
    USER_CHANGED,
    USER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
)

_BASE_URI: Final = "https://schemas.iterable-consumer.dev/events/"

_EMAIL: Final = {
    "type": "string",
    "description": "Trimmed and lower-cased before use; Iterable stores emails lower-cased.",
    # Surrounding whitespace and capitals are allowed here because they are normalised away.
    "pattern": r"^\s*" + EMAIL_PATTERN.removeprefix("^").removesuffix("$") + r"\s*$",
    "maxLength": EMAIL_MAX_LENGTH,
}
_USER_ID: Final = {
    "type": "string",
    "description": "1-52 printable ASCII characters, no trailing space.",
    "pattern": USER_ID_PATTERN,
    "maxLength": USER_ID_MAX_LENGTH,
}
_NOT_BLANK: Final = {"type": "string", "minLength": 1, "pattern": NOT_BLANK_PATTERN}
_DATA_FIELDS: Final = {
    "type": "object",
    "description": "Free-form JSON passed to Iterable unchanged.",
}
_ONE_IDENTIFIER: Final = [{"required": ["email"]}, {"required": ["userId"]}]

_DATA: Final[dict[str, dict[str, Any]]] = {
    USER_CHANGED: {
        "type": "object",
        "additionalProperties": False,
        "anyOf": _ONE_IDENTIFIER,
        "dependentRequired": {"previousEmail": ["email"]},
        "properties": {
            "email": {"$ref": "#/$defs/email"},
            "userId": {"$ref": "#/$defs/userId"},
            "dataFields": {"$ref": "#/$defs/dataFields"},
            "mergeNestedObjects": {"type": "boolean", "default": False},
            "preferUserId": {"type": "boolean"},
            "previousEmail": {
                "$ref": "#/$defs/email",
                "description": "The email changed from this value to `email`.",
            },
        },
    },
    DEVICE_REGISTERED: {
        "type": "object",
        "additionalProperties": False,
        "anyOf": _ONE_IDENTIFIER,
        "required": ["device"],
        "properties": {
            "email": {"$ref": "#/$defs/email"},
            "userId": {"$ref": "#/$defs/userId"},
            "device": {
                "type": "object",
                "additionalProperties": False,
                "required": ["token", "platform", "applicationName"],
                "properties": {
                    "token": {"$ref": "#/$defs/notBlank"},
                    "platform": {"enum": list(PLATFORMS)},
                    "applicationName": {"$ref": "#/$defs/notBlank"},
                    "dataFields": {"$ref": "#/$defs/dataFields"},
                },
            },
        },
    },
    PUSH_PERMISSION_REVOKED: {
        "type": "object",
        "additionalProperties": False,
        "required": ["token"],
        "description": "With email or userId: that profile only; with neither: every profile.",
        "properties": {
            "token": {"$ref": "#/$defs/notBlank"},
            "email": {"$ref": "#/$defs/email"},
            "userId": {"$ref": "#/$defs/userId"},
        },
    },
}


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type, envelope and data."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE_URI}{event_type}.json",
        "title": event_type,
        "description": f"A `{event_type}` CloudEvent 1.0 (structured form).",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"$ref": "#/$defs/notBlank"},
            "source": {"$ref": "#/$defs/notBlank"},
            "type": {"const": event_type},
            "time": {"type": "string", "format": "date-time", "pattern": TIME_PATTERN},
            "subject": {"type": "string"},
            "data": {"$ref": "#/$defs/data"},
        },
        "$defs": {
            "data": _DATA[event_type],
            "email": _EMAIL,
            "userId": _USER_ID,
            "notBlank": _NOT_BLANK,
            "dataFields": _DATA_FIELDS,
        },
    }


def render(event_type: str) -> str:
    """The schema as the text stored in `schemas/<type>.json`."""
    return json.dumps(event_schema(event_type), indent=2, ensure_ascii=False) + "\n"
