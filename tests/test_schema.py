"""The JSON Schemas agree with the models, and the files under schemas/ are current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from consumer.dev.examples import Example, load
from consumer.events import EVENT_TYPES
from consumer.schema import event_schema, render

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _validator(event_type: str) -> Draft202012Validator:
    return Draft202012Validator(
        event_schema(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_files_match_the_code(event_type: str) -> None:
    assert (SCHEMAS / f"{event_type}.json").read_text(encoding="utf-8") == render(event_type)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schemas_are_valid_draft_2020_12(event_type: str) -> None:
    Draft202012Validator.check_schema(event_schema(event_type))


@pytest.mark.parametrize("example", load("valid"), ids=lambda e: e.name)
def test_every_valid_example_passes_its_schema(example: Example) -> None:
    errors = list(_validator(example.event_type).iter_errors(example.structured()))
    assert errors == []


@pytest.mark.parametrize("example", load("invalid"), ids=lambda e: e.name)
def test_every_invalid_example_fails_its_schema(example: Example) -> None:
    try:
        instance = example.structured()
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # not JSON at all: no schema can accept it
    assert not _validator(example.event_type).is_valid(instance)
