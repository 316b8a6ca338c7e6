"""Request body shapes, checked the way Iterable's JSON layer does: 400 `BadJsonBody`.

Shapes follow Iterable's OpenAPI definitions; errors name the path as Iterable does
(`obj.users[1].preferUserId`) with the message it uses (`Boolean value expected`).
"""

from __future__ import annotations

from typing import Any, Final

from consumer.dev.emulator.store import ApiError

# field -> (type name, required); a nested dict is an object shape.
Shape = dict[str, tuple[Any, bool]]

_EXPECTED: Final = {str: "String", bool: "Boolean", dict: "Object", list: "Array"}

_USER: Final[Shape] = {
    "email": (str, False),
    "userId": (str, False),
    "dataFields": (dict, False),
    "preferUserId": (bool, False),
    "mergeNestedObjects": (bool, False),
}
_DEVICE: Final[Shape] = {
    "token": (str, True),
    "platform": (str, True),
    "applicationName": (str, True),
    "dataFields": (dict, False),
}
SHAPES: Final[dict[str, Shape]] = {
    "/api/users/update": {**_USER, "createNewFields": (bool, False)},
    "/api/users/bulkUpdate": {"users": ([_USER], True), "createNewFields": (bool, False)},
    "/api/users/registerDeviceToken": {
        "email": (str, False),
        "userId": (str, False),
        "preferUserId": (bool, False),
        "device": (_DEVICE, True),
    },
    "/api/users/disableDevice": {
        "token": (str, True),
        "email": (str, False),
        "userId": (str, False),
    },
    "/api/users/updateEmail": {
        "currentEmail": (str, False),
        "currentUserId": (str, False),
        "newEmail": (str, True),
    },
}


def check(path: str, body: Any) -> dict[str, Any]:
    """Return `body` if it has the endpoint's shape; else raise the 400 Iterable sends."""
    problems: dict[str, str] = {}
    if not isinstance(body, dict):
        problems["obj"] = "Object value expected"
    else:
        _check_object(SHAPES[path], body, "obj", problems)
    if problems:
        raise ApiError(400, "BadJsonBody", f"[{path}] Invalid JSON body", problems)
    checked: dict[str, Any] = body
    return checked


def _check_object(shape: Shape, body: dict[str, Any], where: str, problems: dict[str, str]) -> None:
    for name, (kind, required) in shape.items():
        path = f"{where}.{name}"
        if name not in body or body[name] is None:
            if required:
                problems[path] = "Missing required field"
            continue
        _check_value(kind, body[name], path, problems)


def _check_value(kind: Any, value: Any, path: str, problems: dict[str, str]) -> None:
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            problems[path] = "Object value expected"
        else:
            _check_object(kind, value, path, problems)
    elif isinstance(kind, list):
        if not isinstance(value, list):
            problems[path] = "Array value expected"
            return
        for index, item in enumerate(value):
            _check_value(kind[0], item, f"{path}[{index}]", problems)
    elif not isinstance(value, kind):
        problems[path] = f"{_EXPECTED[kind]} value expected"
