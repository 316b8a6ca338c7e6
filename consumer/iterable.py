"""The Iterable client: auth, regions, pacing, classification and retries.

httpx requests over an aiohttp-based httpx transport (httpx's own transport is far too
slow under concurrency, SPEC §6), one adaptive FIFO pace per endpoint shared by every
caller, and retries with full jitter that honour `Retry-After`. Transient failures are
retried without limit unless `max_attempts` is set; permanent and credential failures are
raised at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import aiohttp
import httpx

from consumer import __version__
from consumer.backoff import Backoff, parse_retry_after
from consumer.endpoints import DEFAULT_RATES, Endpoint
from consumer.errors import IterableError, TransientError, UntrustedCertificate
from consumer.ratelimit import AdaptiveRate, Pacer
from consumer.responses import classify
from consumer.transport import AiohttpTransport

REGIONS: Final = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}
USER_AGENT: Final = f"iterable-consumer/{__version__}"
# The least pace of an endpoint whatever the pod's share: its calls never wait forever.
# At most a hundredth of the limit, so the floors of pods with (almost) no share do not add
# up to more than the headroom (bulkUpdate's 5/s: three pods at 1/s would take 60% of it).
MIN_RATE: Final = 1.0
MIN_SHARE: Final = 0.01


class CallObserver(Protocol):
    """Where the client reports what it did (metrics live behind this)."""

    def response(self, endpoint: str, status: int | None, seconds: float) -> None: ...
    def retry(self, endpoint: str, reason: str) -> None: ...
    def paced(self, endpoint: str, seconds: float) -> None: ...


class NoObserver:
    def response(self, endpoint: str, status: int | None, seconds: float) -> None:
        pass

    def retry(self, endpoint: str, reason: str) -> None:
        pass

    def paced(self, endpoint: str, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ClientSettings:
    base_url: str
    api_key: str = field(repr=False)
    max_connections: int = 128
    max_in_flight: int = 64  # requests on the wire at once (waiting for the pace is not)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    rates: Mapping[Endpoint, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    burst_seconds: float = 0.05
    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = None
    verify: str | bool = True  # a CA bundle path, or True for the system store (never False)


def base_url(region: str, explicit: str | None = None) -> str:
    """The API root: an explicit URL wins over the region (`us` or `eu`)."""
    return (explicit or REGIONS[region]).rstrip("/")


Sleep = Callable[[float], Awaitable[None]]


# A payload made when the call goes (`IterableClient.post`).
Payload = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    endpoint: Endpoint
    body: bytes | None
    params: dict[str, str] | None
    identifiers: tuple[str | None, ...]
    make: Callable[[], bytes] | None = None  # the body, made as the first attempt goes


class IterableClient:
    """Async calls to Iterable that pace themselves and retry what is worth retrying."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: CallObserver | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        # Requests go straight to the transport: httpx.AsyncClient's per-request URL
        # merging, header re-encoding and cookie handling cost ~100 µs a call, half of
        # the client's CPU (bench/results/http_client.md), for features this client
        # does not use (cookies, redirects, auth flows, hooks).
        self._transport = transport or AiohttpTransport(
            max_connections=settings.max_connections, verify=_tls(settings.verify)
        )
        self._headers = httpx.Headers(
            {
                "Api-Key": settings.api_key,
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
            }
        )
        self._urls = {e: httpx.URL(f"{settings.base_url}/api/{e.value}") for e in Endpoint}
        # The wait for a pooled connection is bounded like a connect: a pool held by hanging
        # calls fails the next one as transient (retried) instead of stalling it.
        timeouts = {"connect": settings.connect_timeout, "read": settings.read_timeout}
        self._extensions = {
            "timeout": {
                **timeouts,
                "write": settings.read_timeout,
                "pool": settings.connect_timeout,
            }
        }
        self._observer = observer or NoObserver()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        burst = settings.burst_seconds
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._gates = {
            endpoint: _Gate(Pacer(AdaptiveRate(ceiling=rate), burst=max(1.0, rate * burst)))
            for endpoint, rate in settings.rates.items()
        }

    async def post(
        self,
        endpoint: Endpoint,
        payload: Payload,
        identifiers: Iterable[str | None] = (),
        body: bytes | None = None,
    ) -> Any:
        """POST `payload` (or `body`, already encoded) until Iterable accepts it.

        A callable `payload` is made once, when the first attempt has its pace turn and a
        slot on the wire: what the caller sends may still grow while it waits. Retries send
        the body made then, since the first attempt may have been applied.
        """
        ids = tuple(identifiers)
        if body is not None:
            return await self._call(_Request("POST", endpoint, body, None, ids))
        if callable(payload):
            made = payload
            return await self._call(
                _Request("POST", endpoint, None, None, ids, lambda: _encode(made()))
            )
        return await self._call(_Request("POST", endpoint, _encode(payload), None, ids))

    async def get(
        self, endpoint: Endpoint, params: Mapping[str, str], identifiers: Iterable[str | None] = ()
    ) -> Any:
        return await self._call(_Request("GET", endpoint, None, dict(params), tuple(identifiers)))

    def set_shares(self, shares: Mapping[Endpoint, float]) -> None:
        """Pace each endpoint at its configured (project) limit times this pod's share.

        Called on the loop whenever the partition assignment changes; calls already waiting
        are re-timed at the new rate. A share of 0 keeps a trickle (MIN_RATE, or a hundredth of
        the limit if less), for the rare call an endpoint gets from another topic's events."""
        for endpoint, share in shares.items():
            gate = self._gates.get(endpoint)
            if gate is not None:
                limit = self.settings.rates[endpoint]
                gate.set_ceiling(max(min(MIN_RATE, limit * MIN_SHARE), limit * share))

    def ceilings(self) -> dict[Endpoint, float]:
        """Each paced endpoint's ceiling now (the project's limit times the share)."""
        return {endpoint: gate.pacer.pace.ceiling for endpoint, gate in self._gates.items()}

    def current_rate(self, endpoint: Endpoint) -> float:
        return self._gates[endpoint].pacer.rate

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _call(self, request: _Request) -> Any:
        endpoint = request.endpoint
        gate = self._gates.get(endpoint)
        attempt = 0
        while True:
            if gate is not None:  # a retry queues again, behind everyone waiting
                sent = await gate.wait()
                if sent.waited > 0:
                    self._observer.paced(endpoint, sent.waited)
            try:
                async with self._slots:
                    if request.make is not None:  # the first attempt: made just before it goes
                        request = replace(request, body=request.make(), make=None)
                    return await self._once(request)
            except IterableError as exc:
                exc.attempts = attempt + 1
                if not isinstance(exc, TransientError):
                    raise
                if exc.status == 429 and gate is not None:
                    gate.throttled(sent.at)
                attempt += 1
                if self.settings.max_attempts is not None and attempt >= self.settings.max_attempts:
                    raise
                self._observer.retry(endpoint, _reason(exc))
                await self._sleep(
                    self.settings.backoff.delay(attempt - 1, self._rng, exc.retry_after)
                )

    async def _once(self, request: _Request) -> Any:
        endpoint = request.endpoint
        started = self._clock()
        try:
            url = self._urls[endpoint]
            response = await self._transport.handle_async_request(
                httpx.Request(
                    request.method,
                    url.copy_merge_params(request.params) if request.params else url,
                    headers=self._headers,
                    content=request.body,
                    extensions=self._extensions,
                )
            )
            await response.aread()
        except httpx.TransportError as exc:
            self._observer.response(endpoint, None, self._clock() - started)
            # Checked first: a bad certificate can surface as a connect error or a timeout.
            if _certificate_failure(exc):
                raise UntrustedCertificate(
                    endpoint,
                    "TLS certificate verification failed; set ITERABLE_CA_BUNDLE to the CA"
                    " that signs it",
                ) from None
            if isinstance(exc, httpx.TimeoutException):
                raise TransientError(endpoint, "timed out") from None
            raise TransientError(endpoint, f"network error ({type(exc).__name__})") from None
        self._observer.response(endpoint, response.status_code, self._clock() - started)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
        return classify(
            endpoint,
            response.status_code,
            response.content,
            retry_after=retry_after,
            identifiers=request.identifiers,
            secrets=(self.settings.api_key,),
        )


@dataclass(frozen=True, slots=True)
class _Turn:
    at: float  # loop time the call went
    waited: float


class _Gate:
    """A `Pacer` on the event loop: one timer releases each waiter when its turn comes.

    Loop time, not the client's clock: the timer runs on the loop's own.
    """

    __slots__ = ("_timer", "pacer")

    def __init__(self, pacer: Pacer[asyncio.Future[None]]) -> None:
        self.pacer = pacer
        self._timer: asyncio.TimerHandle | None = None

    async def wait(self) -> _Turn:
        """Wait for this call's turn."""
        loop = asyncio.get_running_loop()
        joined = loop.time()
        turn: asyncio.Future[None] = loop.create_future()
        if self.pacer.join(turn, joined):
            return _Turn(joined, 0.0)
        if self._timer is None:
            self._arm(loop, joined)
        await turn
        now = loop.time()
        return _Turn(now, now - joined)

    def set_ceiling(self, ceiling: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.pacer.set_ceiling(ceiling, now)
        if self.pacer.waiting:
            self._arm(loop, now)  # re-timed at the new rate

    def throttled(self, sent: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.pacer.throttled(now, sent):
            self._arm(loop, now)  # re-timed at the new rate

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        due = self.pacer.next_due(now)
        self._timer = None if due is None else loop.call_at(due, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for turn in self.pacer.due(now, _still_waiting):
            turn.set_result(None)
        self._arm(loop, now)


def _still_waiting(turn: asyncio.Future[None]) -> bool:
    return not turn.done()  # a cancelled call gives its place up


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _tls(verify: str | bool) -> ssl.SSLContext | bool:
    """A CA bundle path becomes an SSL context trusting only that CA."""
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


def _certificate_failure(exc: BaseException) -> bool:
    """Whether a transport error comes from certificate verification (any wrapping)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: TransientError) -> str:
    """A bounded label for why a call is retried."""
    if exc.status is None:
        return "timeout" if exc.message == "timed out" else "network"
    return str(exc.status) if exc.status in (408, 429) else "5xx"
