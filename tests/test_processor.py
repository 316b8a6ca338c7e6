"""The processor with fakes: a MockTransport Iterable, a list for dead letters, no Kafka."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumer.backoff import Backoff
from consumer.bulk import BulkLimits
from consumer.dev.emulator.store import ApiError, Project
from consumer.dlq import DeadLetter, DeadLetterBreaker
from consumer.endpoints import Endpoint
from consumer.iterable import ClientSettings, IterableClient
from consumer.messages import Delivery, Outcome
from consumer.metrics import Metrics
from consumer.ordering import DeviceGuard, DuplicateWindow
from consumer.processor import Processor, ProcessorSettings
from consumer.redact import pii
from consumer.status import CREDENTIALS, DEAD_LETTER_CIRCUIT, Status
from consumer.translate import DeviceOwnership, ProjectType, Translator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Sink:
    def __init__(self, status: Status | None = None) -> None:
        self.letters: list[DeadLetter] = []
        self.while_open = 0  # letters sent while the dead-letter circuit held consumption
        self._status = status

    async def send(self, record: DeadLetter) -> None:
        self.letters.append(record)
        if self._status is not None and DEAD_LETTER_CIRCUIT in self._status.holds():
            self.while_open += 1


def _delivery(
    offset: int,
    data: dict[str, Any],
    event_id: str | None = None,
    *,
    partition: int = 0,
    epoch: int = 1,
    event_type: str = "user.changed",
    when: datetime | None = None,
) -> Delivery:
    value = {
        "specversion": "1.0",
        "id": event_id or f"e{offset}" + (f"-p{partition}" if partition else ""),
        "source": "/t",
        "type": event_type,
        "data": data,
    }
    if when is not None:
        value["time"] = when.isoformat()
    raw = json.dumps(value).encode()
    return Delivery(event_type, partition, offset, epoch, None, raw, (), 0.0)


def _poison(offset: int, partition: int = 0) -> Delivery:
    return Delivery("user.changed", partition, offset, 1, None, b"{not json", (), 0.0)


Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
TOPICS = {t: t for t in ("user.changed", "device.registered", "push.permission.revoked")}


class Built:
    """A processor on fakes, with what a test looks at."""

    def __init__(
        self,
        handler: Handler,
        *,
        breaker: DeadLetterBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        project: ProjectType = "hybrid",
        credentials_probe: float = 30.0,
        guard: DeviceGuard | None = None,
        ownership: DeviceOwnership = "shared",
        rates: dict[Endpoint, float] | None = None,
        bulk: BulkLimits | None = None,
    ) -> None:
        self.finished: list[tuple[int, Outcome]] = []
        self.metrics = Metrics(CollectorRegistry())
        self.status = Status()
        self.sink = Sink(self.status)
        self.client = IterableClient(
            # No client-side pace unless asked: most of these tests are about the processor,
            # not Iterable's limits (a burst of one: the second call waits its turn).
            ClientSettings(
                base_url="https://api.test",
                api_key="k",
                backoff=Backoff(0, 0),
                rates=rates or {},
                burst_seconds=0.0,
            ),
            transport=httpx.MockTransport(handler),
        )
        self.processor = Processor(
            ProcessorSettings(topics=TOPICS, credentials_probe=credentials_probe, bulk=bulk),
            translator=Translator(project, device_ownership=ownership),
            client=self.client,
            dead_letters=self.sink,
            guard=guard or DeviceGuard(100_000, exclusive=ownership == "exclusive"),
            duplicates=DuplicateWindow(100_000),
            breaker=breaker or DeadLetterBreaker(0.5, 60, 20, 60),  # the defaults
            metrics=self.metrics,
            status=self.status,
            complete=lambda delivery, outcome: self.finished.append((delivery.offset, outcome)),
            clock=clock,
        )


async def _condition(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _processor(
    answer: httpx.Response, **settings: Any
) -> tuple[Processor, Sink, list[tuple[int, Outcome]]]:
    finished: list[tuple[int, Outcome]] = []
    client = IterableClient(
        ClientSettings(base_url="https://api.test", api_key="k", backoff=Backoff(0, 0), **settings),
        transport=httpx.MockTransport(lambda request: answer),
    )
    sink = Sink()
    processor = Processor(
        ProcessorSettings(topics={"user.changed": "user.changed"}),
        translator=Translator("hybrid"),
        client=client,
        dead_letters=sink,
        guard=DeviceGuard(100),
        duplicates=DuplicateWindow(100),
        breaker=DeadLetterBreaker(0.9, 60, 1000, 60),
        metrics=Metrics(CollectorRegistry()),
        status=Status(),
        complete=lambda delivery, outcome: finished.append((delivery.offset, outcome)),
    )
    return processor, sink, finished


async def _until(finished: list[tuple[int, Outcome]], count: int) -> None:
    for _ in range(500):
        if len(finished) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(finished)} of {count} finished")


OK = httpx.Response(200, json={"msg": "ok", "code": "Success", "params": None})


async def test_accepted_invalid_and_duplicate_messages_all_finish() -> None:
    processor, sink, finished = _processor(OK)
    processor.submit([_delivery(0, {"userId": "1"}), _delivery(1, {"email": "nope"})])
    await _until(finished, 2)
    processor.submit([_delivery(2, {"userId": "1"}, event_id="e0")])
    await _until(finished, 3)
    assert sorted(finished) == [(0, Outcome.OK), (1, Outcome.INVALID), (2, Outcome.DUPLICATE)]
    assert [dict(letter.headers)["dlq.error.class"] for letter in sink.letters] == [b"InvalidEvent"]


async def test_a_permanent_rejection_is_dead_lettered_with_its_status() -> None:
    rejected = httpx.Response(400, json={"msg": "bad", "code": "BadParams", "params": None})
    processor, sink, finished = _processor(rejected)
    processor.submit([_delivery(0, {"userId": "1"})])
    await _until(finished, 1)
    assert finished == [(0, Outcome.DEAD_LETTERED)]
    headers = dict(sink.letters[0].headers)
    assert (headers["dlq.http.status"], headers["dlq.iterable.code"]) == (b"400", b"BadParams")
    # The source message's Kafka timestamp travels along, so a replay keeps it.
    assert headers["dlq.source.timestamp"] == b"0.000"


async def test_with_a_retry_limit_an_exhausted_transient_failure_is_dead_lettered() -> None:
    processor, sink, finished = _processor(httpx.Response(503, text="down"), max_attempts=2)
    processor.submit([_delivery(0, {"userId": "1"})])
    await _until(finished, 1)
    assert finished == [(0, Outcome.DEAD_LETTERED)]
    assert dict(sink.letters[0].headers)["dlq.attempts"] == b"2"


async def test_drained_partitions_drop_their_queued_work() -> None:
    processor, _, finished = _processor(OK)
    processor.submit([_delivery(n, {"userId": "same"}) for n in range(5)])
    await processor.drain({(("user.changed", 0), 1)}, timeout=5)
    await asyncio.sleep(0.05)
    assert len(finished) <= 1  # at most the call already in flight finished


def _after(seconds: float, answer: httpx.Response) -> Handler:
    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return answer

    return handle


REJECTED = httpx.Response(400, json={"msg": "bad", "code": "BadParams", "params": None})
REFUSED = httpx.Response(401, json={"msg": "Invalid API key", "code": "BadApiKey", "params": None})


async def test_a_backlog_with_poison_spread_through_it_never_opens_the_circuit() -> None:
    built = Built(_after(0.02, OK))  # valid events wait for Iterable, invalid ones do not
    backlog = [
        _poison(n // 3, n % 3)
        if n % 150 == 0
        else _delivery(n // 3, {"userId": str(n % 300)}, partition=n % 3)
        for n in range(3000)
    ]  # 20 invalid events, 0.67%
    built.processor.submit(backlog)
    await _condition(lambda: len(built.finished) == 3000, "every event finished", timeout=30)
    assert DEAD_LETTER_CIRCUIT not in built.status.holds()
    assert len(built.sink.letters) == 20
    assert sum(outcome is Outcome.OK for _, outcome in built.finished) == 2980


async def test_a_bad_deploy_failing_half_the_events_opens_the_circuit() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return REJECTED if json.loads(request.content)["userId"].endswith("1") else OK

    built = Built(handle)
    built.processor.submit([_delivery(n, {"userId": f"{n}{n % 2}"}) for n in range(400)])
    await _condition(lambda: DEAD_LETTER_CIRCUIT in built.status.holds(), "the circuit to open")


async def test_once_the_circuit_opens_nothing_more_is_dead_lettered() -> None:
    now = [0.0]
    release = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return REJECTED

    built = Built(handle, breaker=DeadLetterBreaker(0.5, 60, 10, 600), clock=lambda: now[0])
    # In flight when the circuit opens, and then refused.
    built.processor.submit([_delivery(0, {"userId": "in-flight"}, partition=1)])
    built.processor.submit([_poison(n) for n in range(200)])
    await _condition(lambda: DEAD_LETTER_CIRCUIT in built.status.holds(), "the circuit to open")
    release.set()
    await asyncio.sleep(0.1)
    assert built.sink.while_open == 0
    held = len(built.sink.letters)
    assert held < 10  # fewer than made it open: none buffered after
    # Cooldowns pass: the rest goes on. Outcomes counted together may reopen the circuit
    # before their letters go; they go after the next cooldown, without being counted again.
    for cooldown in (1, 2):
        now[0] = 601.0 * cooldown
        built.processor.check_breaker()
        await asyncio.sleep(0.05)
    await _condition(lambda: len(built.sink.letters) > held, "dead-lettering to resume")


async def test_a_bad_deploy_is_stopped_before_dead_lettering_what_is_buffered() -> None:
    release = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        await release.wait()  # the valid event first in the partition waits for Iterable
        return OK

    built = Built(handle)
    built.processor.submit(
        [_delivery(0, {"userId": "valid"}), *(_poison(n) for n in range(1, 500))]
    )
    await asyncio.sleep(0.1)
    assert built.sink.letters == []  # judged in offset order: not before the first is in
    release.set()
    await _condition(lambda: DEAD_LETTER_CIRCUIT in built.status.holds(), "the circuit to open")
    await asyncio.sleep(0.1)
    assert len(built.sink.letters) < 20  # the breaker's minimum, not the 499 buffered
    assert built.sink.while_open == 0


async def test_the_credentials_hold_lifts_after_every_waiting_partition_was_revoked() -> None:
    key_works = False

    async def handle(request: httpx.Request) -> httpx.Response:
        return OK if key_works else REFUSED

    built = Built(handle, credentials_probe=0.05)
    built.processor.submit([_delivery(n, {"userId": str(n)}) for n in range(5)])
    await _condition(lambda: CREDENTIALS in built.status.holds(), "the credentials hold")
    await built.processor.drain({(("user.changed", 0), 1)}, timeout=0.1)
    key_works = True
    await _condition(lambda: CREDENTIALS not in built.status.holds(), "the hold to lift")
    built.processor.submit([_delivery(n, {"userId": str(n)}, epoch=2) for n in range(5)])
    await _condition(lambda: len(built.finished) == 5, "the new owner's events to finish")
    assert {outcome for _, outcome in built.finished} == {Outcome.OK}


async def test_email_change_lookups_wait_for_the_credentials_hold() -> None:
    key_works = False

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("updateEmail"):
            return httpx.Response(409, json={"msg": "exists", "code": "EmailAlreadyExists"})
        if not key_works:
            return REFUSED
        if request.url.path.endswith("getByEmail"):
            found = request.url.params["email"] == "new@example.com"
            return httpx.Response(200, json={"user": {"email": "new@example.com"}} if found else {})
        return OK

    built = Built(handle, project="email", credentials_probe=0.05)
    change = {"email": "new@example.com", "previousEmail": "old@example.com"}
    built.processor.submit([_delivery(0, change)])
    await _condition(lambda: CREDENTIALS in built.status.holds(), "the credentials hold")
    key_works = True
    await _condition(lambda: built.finished == [(0, Outcome.OK)], "the change to finish")
    assert built.sink.letters == []


def _emulated(project: Project) -> Handler:
    """The emulator's project semantics behind a transport (the calls these tests make)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/")
        try:
            if path == "users/getByEmail":
                return httpx.Response(200, json=project.get_by_email(request.url.params["email"]))
            body = json.loads(request.content)
            if path == "users/updateEmail":
                project.update_email(body, 0.0)
            elif path == "users/registerDeviceToken":
                project.register_device(body, 0.0)
            elif path == "users/disableDevice":
                project.disable_device(body, 0.0)
            else:
                project.update(body, 0.0)
        except ApiError as exc:
            return httpx.Response(
                exc.status, json={"msg": exc.msg, "code": exc.code, "params": None}
            )
        return OK

    return handle


async def _replay_email_change(project: Project) -> list[tuple[int, Outcome]]:
    """u-a's change from old@ to new@, replayed: Iterable refuses it (no old@ any more)."""
    built = Built(_emulated(project), project="email")
    change = {
        "userId": "u-a",
        "email": "new@example.com",
        "previousEmail": "old@example.com",
        "dataFields": {"plan": "a"},
    }
    built.processor.submit([_delivery(0, change)])
    await _condition(lambda: len(built.finished) == 1, "the change to finish")
    return built.finished


async def test_an_email_change_is_not_taken_as_applied_when_the_new_email_is_another_users() -> (
    None
):
    project = Project("email")
    project.update({"email": "moved-on@example.com", "userId": "u-a"}, 0.0)
    project.update({"email": "new@example.com", "userId": "u-b", "dataFields": {"plan": "b"}}, 0.0)
    assert await _replay_email_change(project) == [(0, Outcome.DEAD_LETTERED)]
    other = project.get_by_email("new@example.com")["user"]
    assert (other["userId"], other["dataFields"]) == ("u-b", {"plan": "b"})


async def test_an_email_change_already_applied_to_the_same_user_is_not_dead_lettered() -> None:
    project = Project("email")
    project.update({"email": "new@example.com", "userId": "u-a"}, 0.0)
    assert await _replay_email_change(project) == [(0, Outcome.OK)]
    assert project.get_by_email("new@example.com")["user"]["dataFields"] == {"plan": "a"}


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _history(records: int) -> list[Delivery]:
    """Registrations of many tokens, and last a scoped revocation of token `t-0`."""
    device = {"platform": "APNS", "applicationName": "App"}
    history = [
        _delivery(
            n,
            {"userId": f"u{n}", "device": {**device, "token": f"t-{n}"}},
            event_type="device.registered",
            when=T0 + timedelta(seconds=n),
        )
        for n in range(records)
    ]
    revoked = {"token": "t-0", "userId": "u0"}
    late = T0 + timedelta(seconds=records)
    return [*history, _delivery(0, revoked, event_type="push.permission.revoked", when=late)]


async def test_restoring_a_large_history_yields_to_the_loop_and_comes_before_device_events() -> (
    None
):
    ticks, stall, last = 0, 0.0, time.perf_counter()
    seen: list[int] = []  # the watchdog's count at every restored record

    class Watched(DeviceGuard):
        def applied(self, *args: Any) -> None:
            seen.append(ticks)
            super().applied(*args)

    built = Built(_after(0, OK), guard=Watched(100_000))
    history = _history(30_000)

    async def watchdog() -> None:
        nonlocal ticks, stall, last
        while True:
            await asyncio.sleep(0)
            ticks, now = ticks + 1, time.perf_counter()
            stall, last = max(stall, now - last), now

    watching = asyncio.create_task(watchdog())
    await asyncio.sleep(0)
    last = time.perf_counter()
    # Full collections pause every thread whatever it runs; this measures the restore.
    gc.disable()
    try:
        built.processor.restore(history)
        # Submitted right after the restore: older than the restored revocation, so stale.
        device = {"token": "t-0", "platform": "APNS", "applicationName": "App"}
        older = T0 + timedelta(seconds=10)
        registration = {"userId": "u0", "device": device}
        built.processor.submit(
            [_delivery(1, registration, event_type="device.registered", when=older, epoch=2)]
        )
        await _condition(lambda: len(built.finished) == 1, "the registration to finish", timeout=30)
    finally:
        gc.enable()
    watching.cancel()
    assert built.finished == [(1, Outcome.STALE)]
    assert seen[-1] - seen[0] >= 30_000 // 1000  # the loop ran between slices of the restore
    assert stall < 0.2, f"the loop stalled {stall:.3f} s"


# -- exclusive device token ownership ----------------------------------------------------------


def _registration(offset: int, user_id: str, seconds: int, app: str = "App") -> Delivery:
    device = {"token": "t", "platform": "GCM", "applicationName": app}
    when = T0 + timedelta(seconds=seconds)
    data = {"userId": user_id, "device": device}
    return _delivery(offset, data, event_type="device.registered", when=when)


def _enabled(project: Project) -> dict[str | None, bool]:
    return {u.user_id: u.devices[0]["endpointEnabled"] for u in project.users if u.devices}


def _handoffs(built: Built, previous_owner: str) -> float | None:
    name = "iterable_consumer_device_handoffs_total"
    return built.metrics.registry.get_sample_value(name, {"previous_owner": previous_owner})


async def test_exclusive_ownership_hands_the_token_over_and_counts_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = Project("hybrid")
    built = Built(_emulated(project), ownership="exclusive")
    caplog.set_level("INFO", logger="consumer.processor")
    built.processor.submit([_registration(0, "a", 1), _registration(1, "b", 2)])
    await _condition(lambda: len(built.finished) == 2, "both registrations")
    assert _enabled(project) == {"a": False, "b": True}
    assert (_handoffs(built, "unknown"), _handoffs(built, "known")) == (1, 1)
    [handed] = [r for r in caplog.records if r.getMessage().startswith("device token handed")]
    assert (vars(handed)["from"], vars(handed)["to"]) == (
        [f"userId:{pii('a')}"],
        f"userId:{pii('b')}",
    )


async def test_shared_ownership_leaves_the_token_on_both_profiles_and_counts_no_handoff() -> None:
    project = Project("hybrid")
    built = Built(_emulated(project))
    built.metrics.start_at_zero(TOPICS)
    built.processor.submit([_registration(0, "a", 1), _registration(1, "b", 2)])
    await _condition(lambda: len(built.finished) == 2, "both registrations")
    assert _enabled(project) == {"a": True, "b": True}
    assert (_handoffs(built, "unknown"), _handoffs(built, "known")) == (0, 0)


async def test_a_handoff_refused_after_its_disable_leaves_the_token_disabled_everywhere() -> None:
    # b's app has no push integration: Iterable refuses the registration, after the
    # disableDevice went out; an older registration of c arriving later stays stale.
    project = Project("hybrid", push_integrations={("App", "GCM")})
    built = Built(_emulated(project), ownership="exclusive")
    built.processor.submit([_registration(0, "a", 1), _registration(1, "b", 3, app="Other")])
    await _condition(lambda: len(built.finished) == 2, "both registrations")
    built.processor.submit([_registration(2, "c", 2)])
    await _condition(lambda: len(built.finished) == 3, "the late registration")
    assert built.finished == [(0, Outcome.OK), (1, Outcome.DEAD_LETTERED), (2, Outcome.STALE)]
    assert _enabled(project) == {"a": False}
