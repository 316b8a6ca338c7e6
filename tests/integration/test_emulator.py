"""The emulator over real HTTP behaves as Iterable documents (reference §2-§5).

Responses are also checked against Iterable's own OpenAPI definitions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from consumer.dev.emulator.process import EmulatorProcess
from tests.openapi import errors as openapi_errors


@pytest.fixture(scope="module")
def running() -> Iterator[dict[str, EmulatorProcess]]:
    processes = {
        kind: EmulatorProcess(project_type=kind).start() for kind in ("email", "userId", "hybrid")
    }
    yield processes
    for process in processes.values():
        process.stop()


def _fresh(running: dict[str, EmulatorProcess], kind: str) -> EmulatorProcess:
    process = running[kind]
    process.reset()
    return process


@pytest.fixture
def hybrid(running: dict[str, EmulatorProcess]) -> EmulatorProcess:
    return _fresh(running, "hybrid")


@pytest.fixture
def email_project(running: dict[str, EmulatorProcess]) -> EmulatorProcess:
    return _fresh(running, "email")


@pytest.fixture
def user_id_project(running: dict[str, EmulatorProcess]) -> EmulatorProcess:
    return _fresh(running, "userId")


def _post(emulator: EmulatorProcess, endpoint: str, body: Any, **kwargs: Any) -> httpx.Response:
    response = emulator.api("POST", f"/api/users/{endpoint}", json=body, **kwargs)
    if endpoint != "bulkUpdate" and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        # Swagger 2.0 cannot say "nullable"; Iterable sends `params: null` (reference §3).
        envelope = {k: v for k, v in response.json().items() if v is not None}
        assert openapi_errors("IterableApiResponse", envelope) == []
    return response


def _ok(emulator: EmulatorProcess, endpoint: str, body: Any) -> dict[str, Any]:
    response = _post(emulator, endpoint, body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# -- users/update --------------------------------------------------------------------------


def test_update_by_email_creates_then_updates(hybrid: EmulatorProcess) -> None:
    assert _ok(hybrid, "update", {"email": "Ada@Example.com", "dataFields": {"a": 1}})["msg"] == (
        "User created"
    )
    assert _ok(hybrid, "update", {"email": "ada@example.com", "dataFields": {"b": 2}})["msg"] == (
        "User updated"
    )
    user = hybrid.user_by_email("ada@example.com")
    assert user is not None
    assert user["email"] == "ada@example.com"  # stored lower-cased
    assert user["dataFields"] == {"a": 1, "b": 2}  # absent fields kept
    assert openapi_errors("UserResponse", {"user": user}) == []


def test_get_of_an_unknown_email_is_an_empty_object(hybrid: EmulatorProcess) -> None:
    response = hybrid.api("GET", "/api/users/getByEmail", params={"email": "nobody@example.com"})
    assert (response.status_code, response.json()) == (200, {})


@pytest.mark.parametrize(
    ("merge", "expected"),
    [(True, {"mobile": True, "email": True}), (False, {"email": True})],
)
def test_merge_nested_objects_as_documented(
    hybrid: EmulatorProcess, merge: bool, expected: dict[str, bool]
) -> None:
    _ok(
        hybrid, "update", {"email": "s@example.com", "dataFields": {"mySettings": {"mobile": True}}}
    )
    _ok(
        hybrid,
        "update",
        {
            "email": "s@example.com",
            "dataFields": {"mySettings": {"email": True}},
            "mergeNestedObjects": merge,
        },
    )
    user = hybrid.user_by_email("s@example.com")
    assert user is not None
    assert user["dataFields"]["mySettings"] == expected


def test_user_id_only_in_an_email_project_needs_prefer_user_id(
    email_project: EmulatorProcess,
) -> None:
    refused = _post(email_project, "update", {"userId": "u-1", "dataFields": {"x": 1}})
    assert refused.status_code == 400
    assert refused.json()["code"] == "UnknownUserIdError"
    _ok(email_project, "update", {"userId": "u-1", "preferUserId": True, "dataFields": {"x": 1}})
    user = email_project.user_by_id("u-1")
    assert user is not None
    assert user["email"].endswith("@placeholder.email")


def test_user_id_alone_creates_a_user_in_hybrid_and_user_id_projects(
    hybrid: EmulatorProcess, user_id_project: EmulatorProcess
) -> None:
    for emulator in (hybrid, user_id_project):
        _ok(emulator, "update", {"userId": "u-2", "dataFields": {"x": 1}})
        user = emulator.user_by_id("u-2")
        assert user is not None
        assert user["dataFields"] == {"x": 1}


def test_email_wins_in_email_projects_and_user_id_wins_elsewhere(
    email_project: EmulatorProcess, hybrid: EmulatorProcess
) -> None:
    _ok(email_project, "update", {"email": "e@example.com", "userId": "old"})
    _ok(email_project, "update", {"email": "e@example.com", "userId": "new"})
    assert email_project.user_by_email("e@example.com")["userId"] == "new"  # type: ignore[index]

    _ok(hybrid, "update", {"userId": "h-1", "email": "first@example.com"})
    _ok(hybrid, "update", {"userId": "h-1", "email": "second@example.com"})
    user = hybrid.user_by_id("h-1")
    assert user is not None
    assert user["email"] == "second@example.com"
    assert hybrid.user_by_email("first@example.com") is None


def test_email_only_is_refused_in_a_user_id_project(user_id_project: EmulatorProcess) -> None:
    response = _post(user_id_project, "update", {"email": "x@example.com"})
    assert response.status_code == 400


def test_invalid_email_and_user_id_are_refused(hybrid: EmulatorProcess) -> None:
    bad_email = _post(hybrid, "update", {"email": "sayan"})
    assert (bad_email.status_code, bad_email.json()["code"]) == (400, "InvalidEmailAddressError")
    for user_id in ("x" * 53, "trailing ", "zoë"):
        bad_id = _post(hybrid, "update", {"userId": user_id})
        assert (bad_id.status_code, bad_id.json()["code"]) == (400, "InvalidUserIdError")


def test_the_first_type_of_a_field_holds_project_wide(hybrid: EmulatorProcess) -> None:
    _ok(hybrid, "update", {"email": "a@example.com", "dataFields": {"age": 30}})
    response = _post(hybrid, "update", {"email": "b@example.com", "dataFields": {"age": "thirty"}})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "RequestFieldsTypesMismatched"
    assert body["params"]["validationErrors"]["age"]["expectedType"] == "long"
    assert hybrid.user_by_email("b@example.com") is None  # nothing applied


def test_bad_json_shapes_name_the_path(hybrid: EmulatorProcess) -> None:
    response = _post(hybrid, "update", {"email": "a@example.com", "mergeNestedObjects": "yes"})
    assert response.status_code == 400
    assert response.json()["code"] == "BadJsonBody"
    assert response.json()["params"] == {"obj.mergeNestedObjects": "Boolean value expected"}
    not_json = hybrid.api("POST", "/api/users/update", content=b"{nope")
    assert (not_json.status_code, not_json.json()["code"]) == (400, "BadJsonBody")


def test_a_missing_or_wrong_api_key_is_401_bad_api_key(hybrid: EmulatorProcess) -> None:
    for headers in ({}, {"Api-Key": "wrong"}):
        response = _post(hybrid, "update", {"email": "a@example.com"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "BadApiKey"
        assert response.json()["params"]["endpoint"] == "/api/users/update"


def test_the_api_key_may_also_come_as_api_underscore_key(hybrid: EmulatorProcess) -> None:
    response = _post(hybrid, "update", {"email": "a@example.com"}, headers={"Api_Key": "test-key"})
    assert response.status_code == 200


# -- devices -------------------------------------------------------------------------------


def _device(token: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "platform": "APNS", "applicationName": "Pizza Tracker", **extra}


def _devices(emulator: EmulatorProcess, email: str) -> dict[str, dict[str, Any]]:
    user = emulator.user_by_email(email)
    assert user is not None
    return {d["token"]: d for d in user["dataFields"].get("devices", [])}


def test_register_a_device_and_read_it_back(hybrid: EmulatorProcess) -> None:
    _ok(
        hybrid,
        "registerDeviceToken",
        {"email": "d@example.com", "device": _device("t1", dataFields={"phoneModel": "6 Plus"})},
    )
    assert _devices(hybrid, "d@example.com")["t1"] == {
        "token": "t1",
        "platform": "APNS",
        "applicationName": "Pizza Tracker",
        "endpointEnabled": True,
        "phoneModel": "6 Plus",
    }


def test_re_registering_re_enables_and_merges_fields(hybrid: EmulatorProcess) -> None:
    body = {"email": "d@example.com", "device": _device("t1", dataFields={"a": 1})}
    _ok(hybrid, "registerDeviceToken", body)
    _ok(hybrid, "disableDevice", {"token": "t1", "email": "d@example.com"})
    assert _devices(hybrid, "d@example.com")["t1"]["endpointEnabled"] is False
    _ok(hybrid, "registerDeviceToken", {**body, "device": _device("t1", dataFields={"b": 2})})
    device = _devices(hybrid, "d@example.com")["t1"]
    assert (device["endpointEnabled"], device["a"], device["b"]) == (True, 1, 2)


def test_disable_on_one_profile_or_on_every_profile(hybrid: EmulatorProcess) -> None:
    for email in ("one@example.com", "two@example.com"):
        _ok(hybrid, "registerDeviceToken", {"email": email, "device": _device("shared")})
    _ok(hybrid, "disableDevice", {"token": "shared", "email": "one@example.com"})
    assert _devices(hybrid, "one@example.com")["shared"]["endpointEnabled"] is False
    assert _devices(hybrid, "two@example.com")["shared"]["endpointEnabled"] is True
    _ok(hybrid, "disableDevice", {"token": "shared"})
    assert _devices(hybrid, "two@example.com")["shared"]["endpointEnabled"] is False


def test_register_in_an_email_project_by_user_id_needs_prefer_user_id(
    email_project: EmulatorProcess,
) -> None:
    body = {"userId": "u-9", "device": _device("t9")}
    assert _post(email_project, "registerDeviceToken", body).status_code == 400
    _ok(email_project, "registerDeviceToken", {**body, "preferUserId": True})
    user = email_project.user_by_id("u-9")
    assert user is not None
    assert user["dataFields"]["devices"][0]["token"] == "t9"


def test_a_profile_holds_at_most_500_devices(hybrid: EmulatorProcess) -> None:
    with httpx.Client(base_url=hybrid.url, headers={"Api-Key": hybrid.api_key}) as client:
        for i in range(500):
            body = {"email": "many@example.com", "device": _device(f"t{i}")}
            assert client.post("/api/users/registerDeviceToken", json=body).status_code == 200
            if i % 400 == 399:
                time.sleep(1)  # stay under the documented 500 requests/s
    over = _post(
        hybrid, "registerDeviceToken", {"email": "many@example.com", "device": _device("x")}
    )
    assert over.status_code == 400


def test_unknown_push_integrations_are_refused_when_configured() -> None:
    with EmulatorProcess("--push-integration", "Pizza Tracker:APNS") as emulator:
        _ok(emulator, "registerDeviceToken", {"email": "a@example.com", "device": _device("t")})
        wrong = {"email": "a@example.com", "device": {**_device("t"), "platform": "GCM"}}
        response = _post(emulator, "registerDeviceToken", wrong)
        assert response.status_code == 400
        assert "Unable to find a push integration" in response.json()["msg"]


# -- updateEmail, bulkUpdate, delete ---------------------------------------------------------


def test_update_email_moves_the_profile(email_project: EmulatorProcess) -> None:
    _ok(email_project, "update", {"email": "old@example.com", "dataFields": {"k": 1}})
    _ok(
        email_project,
        "updateEmail",
        {"currentEmail": "old@example.com", "newEmail": "new@example.com"},
    )
    assert email_project.user_by_email("old@example.com") is None
    assert email_project.user_by_email("new@example.com")["dataFields"] == {"k": 1}  # type: ignore[index]


def test_update_email_to_an_existing_email_is_409(email_project: EmulatorProcess) -> None:
    _ok(email_project, "update", {"email": "a@example.com"})
    _ok(email_project, "update", {"email": "b@example.com"})
    response = _post(
        email_project, "updateEmail", {"currentEmail": "a@example.com", "newEmail": "b@example.com"}
    )
    assert response.status_code == 409


def test_update_email_from_an_unknown_email_is_refused(email_project: EmulatorProcess) -> None:
    response = _post(
        email_project,
        "updateEmail",
        {"currentEmail": "gone@example.com", "newEmail": "n@example.com"},
    )
    assert response.status_code == 400


def test_bulk_update_reports_failures_by_identifier(hybrid: EmulatorProcess) -> None:
    _ok(hybrid, "update", {"email": "typed@example.com", "dataFields": {"n": 1}})
    result = _ok(
        hybrid,
        "bulkUpdate",
        {
            "users": [
                {"email": "ok@example.com", "dataFields": {"n": 2}},
                {"email": "shrouti"},
                {"userId": "u" * 60},
                {"email": "wrongtype@example.com", "dataFields": {"n": "two"}},
            ]
        },
    )
    assert openapi_errors("UserBulkUpdateListResponse", result) == []
    assert (result["successCount"], result["failCount"]) == (1, 3)
    failed = result["failedUpdates"]
    assert failed["invalidEmails"] == ["shrouti"]
    assert failed["invalidUserIds"] == ["u" * 60]
    assert failed["invalidDataEmails"] == ["wrongtype@example.com"]
    assert hybrid.user_by_email("ok@example.com")["dataFields"] == {"n": 2}  # type: ignore[index]


def test_bulk_update_names_a_refused_data_fields_email(hybrid: EmulatorProcess) -> None:
    """An email change through `dataFields.email` is refused under that email (OpenAPI
    `FailedUserUpdates`: "found either at the top level … or in dataFields"), and the
    refused record changes nothing."""
    _ok(hybrid, "update", {"userId": "owner", "email": "taken@example.com"})
    _ok(hybrid, "update", {"userId": "mover", "email": "old@example.com"})
    result = _ok(
        hybrid,
        "bulkUpdate",
        {
            "users": [
                {"userId": "mover", "dataFields": {"email": "taken@example.com", "n": 1}},
                {"userId": "newcomer", "dataFields": {"email": "Taken@example.com"}},
                {"userId": "typo", "dataFields": {"email": "not-an-email"}},
                {"userId": "fine", "dataFields": {"email": "fine@example.com"}},
            ]
        },
    )
    assert openapi_errors("UserBulkUpdateListResponse", result) == []
    assert (result["successCount"], result["failCount"]) == (1, 3)
    failed = result["failedUpdates"]
    assert failed["conflictEmails"] == ["taken@example.com", "taken@example.com"]
    assert failed["invalidEmails"] == ["not-an-email"]
    assert failed["conflictUserIds"] == failed["invalidUserIds"] == []
    mover = hybrid.user_by_id("mover")
    assert mover is not None
    assert (mover["email"], mover["dataFields"]) == ("old@example.com", {})
    assert hybrid.user_by_id("newcomer") is None
    assert hybrid.user_by_id("typo") is None
    assert hybrid.user_by_email("fine@example.com") is not None


def test_bulk_update_over_4_mb_is_refused(hybrid: EmulatorProcess) -> None:
    users = [
        {"email": f"u{i}@example.com", "dataFields": {"blob": "x" * 1000}} for i in range(4200)
    ]
    response = _post(hybrid, "bulkUpdate", {"users": users})
    assert response.status_code == 413
    assert hybrid.state()["users"] == []


def test_delete_by_email_and_by_user_id(hybrid: EmulatorProcess) -> None:
    _ok(hybrid, "update", {"email": "del@example.com", "userId": "del-1"})
    assert hybrid.api("DELETE", "/api/users/del@example.com").status_code == 200
    assert hybrid.user_by_email("del@example.com") is None
    missing = hybrid.api("DELETE", "/api/users/byUserId/del-1")
    assert (missing.status_code, missing.json()["code"]) == (400, "BadParams")


def test_get_by_path_forms(hybrid: EmulatorProcess) -> None:
    _ok(hybrid, "update", {"email": "p@example.com", "userId": "p-1"})
    by_path = hybrid.api("GET", "/api/users/p@example.com").json()
    by_id_path = hybrid.api("GET", "/api/users/byUserId/p-1").json()
    assert by_path["user"]["userId"] == by_id_path["user"]["userId"] == "p-1"


# -- rate limits and faults ------------------------------------------------------------------


def test_the_documented_rate_limit_answers_429_rate_limit_exceeded() -> None:
    with EmulatorProcess("--rate-limit", "users/update=20", "--retry-after", "1") as emulator:
        started = time.monotonic()
        with httpx.Client(base_url=emulator.url, headers={"Api-Key": emulator.api_key}) as client:
            statuses = [
                client.post("/api/users/update", json={"email": f"r{i}@example.com"})
                for i in range(40)
            ]
        elapsed = time.monotonic() - started
        throttled = [r for r in statuses if r.status_code == 429]
        assert throttled
        assert throttled[0].json()["code"] == "RateLimitExceeded"
        assert throttled[0].headers["Retry-After"] == "1"
        # A 1 s burst of 20 plus 20/s refill: the bound grows with the time the 40 took
        # (a busy machine, the other test worker beside it, makes them slower).
        assert sum(r.status_code == 200 for r in statuses) <= 20 + 20 * elapsed + 1


def test_the_rate_limit_is_the_project_s_shared_by_every_client_and_key() -> None:
    """Iterable limits per project: two pods (own connections, own keys) share one budget."""
    with EmulatorProcess(
        "--rate-limit", "users/update=20", "--api-key", "second-key", "--quiet"
    ) as emulator:
        clients = [
            httpx.Client(base_url=emulator.url, headers={"Api-Key": key})
            for key in (emulator.api_key, "second-key")
        ]
        statuses: list[list[int]] = [[], []]
        started = time.monotonic()
        for i in range(30):  # interleaved
            for n, client in enumerate(clients):
                reply = client.post("/api/users/update", json={"email": f"p{n}-{i}@example.com"})
                statuses[n].append(reply.status_code)
        elapsed = time.monotonic() - started
        for client in clients:
            client.close()
    # One budget: a 1 s burst of 20 plus 20/s refill, for both clients together.
    assert sum(s.count(200) for s in statuses) <= 20 + 20 * elapsed + 1
    assert all(s.count(429) > 0 for s in statuses)


def test_faults_change_at_run_time(hybrid: EmulatorProcess) -> None:
    hybrid.faults(outage_seconds=30, non_json_errors=True)
    down = _post(hybrid, "update", {"email": "a@example.com"})
    assert down.status_code == 503
    assert down.headers["content-type"].startswith("text/html")
    hybrid.faults(outage_seconds=0, error_rates={"500": 1.0})
    assert _post(hybrid, "update", {"email": "a@example.com"}).status_code == 500
    hybrid.faults(error_rates={}, throttle_seconds=30)
    assert _post(hybrid, "update", {"email": "a@example.com"}).status_code == 429
    hybrid.faults(throttle_seconds=0, success_code_on_401=True)
    quirk = _post(hybrid, "update", {"email": "a@example.com"}, headers={"Api-Key": "wrong"})
    assert (quirk.status_code, quirk.json()["code"]) == (401, "Success")
    assert hybrid.user_by_email("a@example.com") is None


def test_the_call_log_records_every_request_in_order(hybrid: EmulatorProcess) -> None:
    _ok(hybrid, "update", {"email": "log@example.com", "dataFields": {"n": 1}})
    _post(hybrid, "update", {"email": "bad"})
    calls = hybrid.calls()
    assert [(c["path"], c["status"]) for c in calls] == [
        ("/api/users/update", 200),
        ("/api/users/update", 400),
    ]
    assert calls[0]["body"] == {"email": "log@example.com", "dataFields": {"n": 1}}
