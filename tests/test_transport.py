"""The aiohttp-based httpx transport: answers as httpx responses, failures as httpx errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from consumer.transport import AiohttpTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _server(answer: bytes | None) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is None:  # accept, read, never answer
            await asyncio.sleep(3600)
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
