"""The Iterable client, over `httpx.MockTransport`; waits are recorded, never slept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from consumer.backoff import Backoff
from consumer.endpoints import Endpoint
from consumer.errors import CredentialsError, PermanentError, TransientError
from consumer.iterable import MIN_RATE, ClientSettings, IterableClient, base_url

pytestmark = pytest.mark.anyio

OK = {"msg": "User updated", "code": "Success", "params": None}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A fake transport script: answers in order, keeps what it was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _client(
    recorder: Callable[[httpx.Request], httpx.Response],
    sleeps: Sleeps,
    **settings: object,
) -> IterableClient:
    config = ClientSettings(
        base_url="https://api.example.test",
        api_key="secret-key",
        **settings,  # type: ignore[arg-type]
    )
    return IterableClient(
        config,
        transport=httpx.MockTransport(recorder),
        sleep=sleeps,
        clock=lambda: 0.0,
    )


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


async def test_a_call_carries_the_key_the_agent_and_the_json_body() -> None:
    recorder, sleeps = Recorder(_json(200, OK)), Sleeps()
    client = _client(recorder, sleeps)
    assert await client.post(Endpoint.UPDATE, {"email": "a@example.com"}) == OK
    request = recorder.requests[0]
    assert str(request.url) == "https://api.example.test/api/users/update"
    assert request.headers["Api-Key"] == "secret-key"
    assert request.headers["User-Agent"].startswith("iterable-consumer/")
    assert json.loads(request.content) == {"email": "a@example.com"}
    await client.aclose()


def test_regions_and_an_explicit_url() -> None:
    assert base_url("us") == "https://api.iterable.com"
    assert base_url("eu") == "https://api.eu.iterable.com"
    assert base_url("us", "http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


async def test_transient_failures_are_retried_until_success() -> None:
    recorder = Recorder(
        _json(503, {"msg": "down", "code": "GenericError"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(502, text="<title>Bad Gateway</title>"),
        _json(200, OK),
    )
    sleeps = Sleeps()
    client = _client(recorder, sleeps)
    assert await client.post(Endpoint.UPDATE, {"userId": "1"}) == OK
    assert len(recorder.requests) == 5
    assert len(sleeps.waits) == 4
    await client.aclose()


async def test_a_payload_made_late_is_made_once_and_every_attempt_sends_that() -> None:
    recorder = Recorder(_json(503, {"msg": "down", "code": "GenericError"}), _json(200, OK))
    made: list[dict[str, str]] = []

    def payload() -> dict[str, str]:
        made.append({"userId": str(len(made))})
        return made[-1]

    client = _client(recorder, Sleeps())
    assert await client.post(Endpoint.UPDATE, payload) == OK
    assert made == [{"userId": "0"}]  # once, however many attempts
    assert [json.loads(r.content) for r in recorder.requests] == [{"userId": "0"}] * 2
    await client.aclose()


async def test_retry_after_is_honoured() -> None:
    recorder = Recorder(
        _json(429, {"msg": "slow down", "code": "RateLimitExceeded"}, {"Retry-After": "7"}),
        _json(200, OK),
    )
    sleeps = Sleeps()
    client = _client(recorder, sleeps, backoff=Backoff(base=0.01, cap=0.01))
    await client.post(Endpoint.UPDATE, {"userId": "1"})
    assert 7.0 in sleeps.waits
    await client.aclose()


async def test_a_429_halves_the_endpoint_rate() -> None:
    recorder = Recorder(_json(429, {"msg": "x", "code": "RateLimitExceeded"}), _json(200, OK))
    client = _client(recorder, Sleeps())
    await client.post(Endpoint.UPDATE, {"userId": "1"})
    assert client.current_rate(Endpoint.UPDATE) == pytest.approx(490 / 2, rel=0.01)
    assert client.current_rate(Endpoint.REGISTER_DEVICE) == 490
    await client.aclose()


async def test_a_400_is_permanent_and_not_retried() -> None:
    recorder = Recorder(_json(400, {"msg": "Invalid email: x", "code": "InvalidEmailAddressError"}))
    client = _client(recorder, Sleeps())
    with pytest.raises(PermanentError) as caught:
        await client.post(Endpoint.UPDATE, {"email": "x"}, identifiers=["x"])
    assert (caught.value.status, caught.value.code) == (400, "InvalidEmailAddressError")
    assert len(recorder.requests) == 1
    await client.aclose()


async def test_a_401_is_a_credentials_error_and_not_retried() -> None:
    recorder = Recorder(_json(401, {"msg": "Invalid API key", "code": "BadApiKey"}))
    client = _client(recorder, Sleeps())
    with pytest.raises(CredentialsError):
        await client.post(Endpoint.UPDATE, {"userId": "1"})
    assert len(recorder.requests) == 1
    await client.aclose()


async def test_max_attempts_bounds_the_retries() -> None:
    recorder = Recorder(_json(500, {"msg": "boom", "code": "GenericError"}))
    client = _client(recorder, Sleeps(), max_attempts=3)
    with pytest.raises(TransientError):
        await client.post(Endpoint.UPDATE, {"userId": "1"})
    assert len(recorder.requests) == 3
    await client.aclose()


async def test_calls_beyond_the_burst_are_paced_at_the_rate() -> None:
    loop = asyncio.get_running_loop()
    sent: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(loop.time())
        return _json(200, OK)

    client = _client(answer, Sleeps(), rates={Endpoint.UPDATE: 100.0}, burst_seconds=0.01)
    await asyncio.gather(*(client.post(Endpoint.UPDATE, {"userId": str(i)}) for i in range(4)))
    assert sent[-1] - sent[0] >= 0.029  # a burst of one, then one call per 10 ms at 100/s
    await client.aclose()


async def test_the_api_key_never_appears_in_errors() -> None:
    recorder = Recorder(_json(400, {"msg": "Bad key secret-key?", "code": "BadParams"}))
    client = _client(recorder, Sleeps())
    with pytest.raises(PermanentError) as caught:
        await client.post(Endpoint.UPDATE, {"userId": "1"})
    assert "secret-key" not in str(caught.value)
    assert "secret-key" not in repr(client.settings)
    await client.aclose()


async def test_each_endpoint_is_paced_at_the_pods_share_of_the_project_limit() -> None:
    client = _client(Recorder(_json(200, OK)), Sleeps())
    client.set_shares({Endpoint.UPDATE: 1 / 3, Endpoint.REGISTER_DEVICE: 0.0})
    assert client.current_rate(Endpoint.UPDATE) == pytest.approx(490 / 3)
    assert client.current_rate(Endpoint.REGISTER_DEVICE) == MIN_RATE  # never zero
    assert client.current_rate(Endpoint.DISABLE_DEVICE) == 490  # not named: unchanged
    client.set_shares({Endpoint.UPDATE: 1.0})
    assert client.current_rate(Endpoint.UPDATE) == pytest.approx(490)
    await client.aclose()


async def test_pods_without_a_share_of_a_low_limit_leave_it_to_the_pod_that_has_one() -> None:
    # bulkUpdate's 4.8/s: two idle pods at 1/s each would take 40% of it on top of the third.
    client = _client(Recorder(_json(200, OK)), Sleeps())
    client.set_shares({Endpoint.BULK_UPDATE: 0.0})
    assert client.current_rate(Endpoint.BULK_UPDATE) == pytest.approx(4.8 / 100)
    await client.aclose()
