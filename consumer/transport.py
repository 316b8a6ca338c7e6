"""An httpx transport over one aiohttp session, built for small JSON calls under load.

httpx's own transport is far too slow with many calls in flight (SPEC §6, bench/results/
http_client.md). This one does only what the Iterable client needs: a keep-alive pool,
per-request timeouts from httpx's `timeout` extension, the body read in one piece (the
general-purpose httpx-aiohttp adapter streams it through an async iterator), and aiohttp's
errors raised as httpx's with the original chained (the client looks for certificate
failures there). No cookies, redirects or decompression: Iterable's API needs none.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int,
        verify: ssl.SSLContext | bool = True,
        resolver: AbstractResolver | None = None,  # DNS; the system's by default
    ) -> None:
        self._max_connections = max_connections
        self._verify = verify
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ssl=self._verify, resolver=self._resolver
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = self._timeout(request.extensions.get("timeout", {}))
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                body = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:  # no connection: the request never left
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except TimeoutError as exc:  # asyncio's, from a connect that never finished
            raise httpx.ConnectTimeout("timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        return httpx.Response(
            response.status, headers=response.raw_headers, content=body, request=request
        )

    def _timeout(self, limits: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's timeouts as aiohttp's: `sock_connect` bounds TCP and the TLS handshake;
        `connect` bounds getting a connection at all: the pool wait, DNS and all of that."""
        connect, read, pool = limits.get("connect"), limits.get("read"), limits.get("pool")
        key = (connect, read, pool)
        found = self._timeouts.get(key)
        if found is None:
            whole = None if connect is None or pool is None else connect + pool
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=whole, sock_connect=connect, sock_read=read
            )
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
