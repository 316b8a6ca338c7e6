"""Coalesced `users/update` payloads against sending them in order, through the emulator's
store (its merge, field types and refusals) and, for mergeNestedObjects, a deep merge."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumer.coalesce import Coalesced, coalescible, field_type
from consumer.dev.emulator.store import ApiError, Project, _type_of
from consumer.endpoints import Endpoint
from consumer.translate import Call

KEYS = ("a", "b", "c")
_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["s", "t"])
# Any type anywhere: type changes must end a run.
VALUES = st.recursive(
    _SCALARS | st.lists(st.integers(0, 2), max_size=2),
    lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)
FIELDS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)


def _typed(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """One type per path, as a producer whose schema is stable sends: a key's last letter
    says object (a, b) or long (c); nulls anywhere."""
    if path[-1] == "c" or len(path) == 3:
        return st.none() | st.integers(-3, 3)
    return st.none() | st.fixed_dictionaries({}, optional={k: _typed((*path, k)) for k in KEYS})


TYPED_FIELDS = st.fixed_dictionaries({}, optional={k: _typed((k,)) for k in KEYS})


def _update(fields: dict[str, Any], nested: bool) -> dict[str, Any]:
    return {"userId": "u1", "dataFields": fields, "mergeNestedObjects": nested}


def _runs(payloads: list[dict[str, Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    """Split in order as the processor does: each run's events and its one payload."""
    runs: list[tuple[list[int], Coalesced]] = []
    for index, payload in enumerate(payloads):
        if not runs or not runs[-1][1].add(payload):
            runs.append(([], Coalesced(payload)))
        runs[-1][0].append(index)
    return [(events, run.payload) for events, run in runs]


def _project(stored: dict[str, Any]) -> Project:
    project = Project("userId")
    project.update(_update(copy.deepcopy(stored), False), 0.0)
    return project


def _sequential(project: Project, payloads: list[dict[str, Any]]) -> list[int]:
    """Apply in order; the events Iterable refused."""
    refused = []
    for index, payload in enumerate(payloads):
        try:
            project.update(copy.deepcopy(payload), 0.0)
        except ApiError:
            refused.append(index)
    return refused


def _coalesced(project: Project, payloads: list[dict[str, Any]]) -> list[int]:
    """Each run as one call; a refused run one event at a time (the processor's fallback)."""
    refused = []
    for events, payload in _runs(payloads):
        try:
            project.update(copy.deepcopy(payload), 0.0)
        except ApiError:
            refused += [events[0] + i for i in _sequential(project, [payloads[e] for e in events])]
    return refused


def _profile(project: Project) -> Any:
    # Not the field types: fields only an object replaced later in the run carried are
    # never sent, so Iterable learns no type for them (README, "Coalescing").
    return project.users[0].data_fields


@settings(max_examples=500, deadline=None)
@given(
    stored=TYPED_FIELDS,
    updates=st.lists(st.tuples(TYPED_FIELDS, st.booleans()), max_size=8),
)
@example(stored={"a": {"a": 1}}, updates=[({"a": None}, True), ({"a": {"c": 1}}, True)])
@example(stored={"a": {"a": 1}}, updates=[({"a": {"b": 1}}, True), ({"a": {"c": 2}}, True)])
def test_coalesced_runs_end_like_the_sequence_for_a_stable_schema(
    stored: dict[str, Any], updates: list[tuple[dict[str, Any], bool]]
) -> None:
    """Same profile, same refused events (Iterable's merge and typing)."""
    payloads = [_update(fields, nested) for fields, nested in updates]
    one, other = _project(stored), _project(stored)
    assert _coalesced(one, payloads) == _sequential(other, payloads)
    assert _profile(one) == _profile(other)


@settings(max_examples=500, deadline=None)
@given(stored=FIELDS, updates=st.lists(FIELDS, min_size=1, max_size=8), nested=st.booleans())
@example(stored={}, updates=[{"a": "s"}, {"a": 1}], nested=False)  # a type change
@example(stored={}, updates=[{"a": 1}, {"a": None}, {"a": "s"}], nested=False)
@example(stored={}, updates=[{"a": {"b": 1}}, {"a": {"b": "s"}, "c": 1}], nested=False)
def test_a_run_keeps_the_types_its_first_values_set(
    stored: dict[str, Any], updates: list[dict[str, Any]], nested: bool
) -> None:
    """Fields of any type, new to the project: a run is refused, applied and typed as its
    events in order would be (types set by earlier runs: the stable-schema test)."""
    payloads = [_update(fields, nested) for fields in updates]
    events = _runs(payloads)[0][0]
    one, other = Project("userId"), Project("userId")
    for project in (one, other):  # the profile exists with these values, their types unknown
        project.update(_update({}, False), 0.0)
        project.users[0].data_fields.update(copy.deepcopy(stored))
    first = [payloads[index] for index in events]
    assert _coalesced(one, first) == _sequential(other, first)
    assert _profile(one) == _profile(other)


def _one_level(stored: dict[str, Any], fields: dict[str, Any], nested: bool) -> None:
    """Iterable's merge as the emulator does it (store.Project._merge)."""
    for key, value in fields.items():
        current = stored.get(key)
        if nested and isinstance(value, dict) and isinstance(current, dict):
            stored[key] = {**current, **copy.deepcopy(value)}
        else:
            stored[key] = copy.deepcopy(value)


def _deep(stored: dict[str, Any], fields: dict[str, Any], nested: bool) -> None:
    """Were Iterable to merge objects at every depth."""
    for key, value in fields.items():
        current = stored.get(key)
        if nested and isinstance(value, dict) and isinstance(current, dict):
            merged = copy.deepcopy(current)
            _deep(merged, value, nested)
            stored[key] = merged
        else:
            stored[key] = copy.deepcopy(value)


@settings(max_examples=1000, deadline=None)
@given(stored=FIELDS, updates=st.lists(FIELDS, min_size=1, max_size=6), nested=st.booleans())
@example(stored={"a": {"b": {"c": 1}}}, updates=[{"a": {"b": {"a": 1}}}], nested=True)
@example(stored={"a": {"b": 1}}, updates=[{"a": 1}, {"a": {"c": 1}}], nested=True)
def test_a_run_merges_like_the_sequence_one_level_or_deep(
    stored: dict[str, Any], updates: list[dict[str, Any]], nested: bool
) -> None:
    """Whatever depth Iterable merges at (the emulator: one level), a run is the sequence."""
    for merge in (_one_level, _deep):
        for events, payload in _runs([_update(fields, nested) for fields in updates]):
            one, other = copy.deepcopy(stored), copy.deepcopy(stored)
            merge(one, payload["dataFields"], nested)
            for index in events:
                merge(other, updates[index], nested)
            assert one == other


def test_updates_coalesce_into_later_values_and_one_level_objects() -> None:
    run = Coalesced(_update({"a": 1, "o": {"x": 1}}, True))
    assert run.add(_update({"a": 2, "o": {"y": 2}}, True))
    assert run.payload["dataFields"] == {"a": 2, "o": {"x": 1, "y": 2}}
    assert run.events == 2


def test_a_run_ends_at_another_identity_or_merge_mode() -> None:
    run = Coalesced(_update({"a": 1}, False))
    assert not run.add({**_update({"a": 2}, False), "email": "a@x.io"})
    assert not run.add(_update({"a": 2}, True))
    assert not run.add({**_update({"a": 2}, False), "preferUserId": True})
    assert run.payload["dataFields"] == {"a": 1}


def test_an_object_written_twice_below_the_top_level_ends_a_nested_run() -> None:
    run = Coalesced(_update({"o": {"p": {"x": 1}}}, True))
    assert not run.add(_update({"o": {"p": {"y": 1}}}, True))
    assert run.add(_update({"o": {"q": {"y": 1}}}, True))


def test_email_changes_and_identifiers_in_data_fields_are_never_coalesced() -> None:
    assert coalescible(Call(Endpoint.UPDATE, _update({"a": 1}, False), ("u1",)))
    assert not coalescible(Call(Endpoint.UPDATE, _update({"email": "b@x.io"}, False), ("u1",)))
    assert not coalescible(Call(Endpoint.UPDATE, _update({"userId": "u2"}, False), ("u1",)))
    change = Call(Endpoint.UPDATE_EMAIL, {}, (), email_change=("a@x.io", "b@x.io"))
    assert not coalescible(change)


def test_field_types_are_the_emulators() -> None:
    for value in (None, True, 1, 1.5, "s", {}, [1]):
        assert field_type(value) == _type_of(value)
