"""The aiohttp-based httpx transport: answers as httpx responses, failures as httpx errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from consumer.endpoints import Endpoint
from consumer.errors import TransientError
from consumer.iterable import ClientSettings, IterableClient
from consumer.transport import AiohttpTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _server(answer: bytes | None) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:  # accept, read, never answer; done when the client hangs up
            await reader.read()
            writer.close()
            return
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    made = AiohttpTransport(max_connections=4)
    yield made
    await made.aclose()


def _request(port: int, read: float = 5.0) -> httpx.Request:
    timeout = {"connect": 2.0, "read": read, "write": read, "pool": None}
    return httpx.Request(
        "POST",
        f"http://127.0.0.1:{port}/api/users/update",
        headers={"Api-Key": "k"},
        content=b"{}",
        extensions={"timeout": timeout},
    )


async def test_an_answer_comes_back_as_an_httpx_response(transport: AiohttpTransport) -> None:
    body = b'{"msg":"","code":"Success"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 3\r\n"
    server = await _server(answer + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    async with server:
        port = server.sockets[0].getsockname()[1]
        response = await transport.handle_async_request(_request(port))
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["Retry-After"] == "3"


async def test_a_refused_connection_is_a_connect_error(transport: AiohttpTransport) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(_request(port))


async def test_no_answer_is_a_read_timeout(transport: AiohttpTransport) -> None:
    server = await _server(None)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(_request(port, read=0.2))
        server.close()


# -- every wait is bounded: handshake, pool ------------------------------------------------


async def _silent_server(accepted: list[asyncio.StreamWriter]) -> asyncio.Server:
    """Accepts TCP, then never says a word: no TLS handshake, no HTTP answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _close(accepted: list[asyncio.StreamWriter]) -> None:
    for writer in accepted:
        writer.close()
        await writer.wait_closed()


class _HangingDns(AbstractResolver):
    """A name server that never answers."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(3600)
        return []

    async def close(self) -> None:
        pass


def _client(
    url: str, max_connections: int = 4, transport: AiohttpTransport | None = None
) -> IterableClient:
    settings = ClientSettings(
        base_url=url,
        api_key="k",
        max_connections=max_connections,
        connect_timeout=0.3,
        read_timeout=5.0,
        max_attempts=1,  # show the first failure, which the service would retry
        rates={},
    )
    return IterableClient(settings, transport=transport)


async def test_a_tls_handshake_that_never_finishes_is_a_transient_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []
    server = await _silent_server(accepted)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = _client(f"https://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            await client.post(Endpoint.UPDATE, {"userId": "1"})
        assert time.monotonic() - started < 2.0
        await client.aclose()
        await _close(accepted)
        server.close()


async def test_a_pool_held_by_hanging_requests_fails_the_next_call_as_transient_in_time() -> None:
    accepted: list[asyncio.StreamWriter] = []
    server = await _silent_server(accepted)  # reads the request, never answers
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = _client(f"http://127.0.0.1:{port}", max_connections=1)
        hanging = asyncio.ensure_future(client.post(Endpoint.UPDATE, {"userId": "1"}))
        await asyncio.sleep(0.2)  # the only connection is now taken
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            await client.post(Endpoint.UPDATE, {"userId": "2"})
        assert time.monotonic() - started < 2.0  # not the 5 s the hanging call may take
        hanging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hanging
        await client.aclose()
        await _close(accepted)
        server.close()


async def test_a_name_that_never_resolves_is_a_transient_timeout() -> None:
    transport = AiohttpTransport(max_connections=4, resolver=_HangingDns())
    client = _client("https://api.iterable.test", transport=transport)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        await asyncio.wait_for(client.post(Endpoint.UPDATE, {"userId": "1"}), 5)
    assert time.monotonic() - started < 2.0
    await client.aclose()
