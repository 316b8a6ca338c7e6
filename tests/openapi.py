"""Iterable's own OpenAPI definitions, as JSON Schema validators for bodies."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

_DOCUMENT = Path(__file__).parent / "data" / "iterable-openapi-users.json"


@cache
def _definitions() -> dict[str, Any]:
    definitions: dict[str, Any] = json.loads(_DOCUMENT.read_text())["definitions"]
    return definitions


def errors(definition: str, body: Any) -> list[str]:
    """Why `body` does not match the named definition (empty when it does)."""
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _definitions()}
    return [error.message for error in Draft4Validator(schema).iter_errors(body)]
