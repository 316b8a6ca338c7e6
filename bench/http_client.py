"""The HTTP client must not be the bottleneck (SPEC §6): the table, for the client we ship.

    .venv/bin/python bench/http_client.py [--seconds 3]

One `users/update` POST at a time per worker against the emulator (no limits, no latency,
in its own process), for 1, 8, 32 and 128 requests in flight: requests/s and this process's
CPU per request. Clients: `httpx.AsyncClient` with its default transport (the baseline),
the service's own client (`consumer.iterable`: httpx requests on `consumer.transport`, with
JSON encoding, pacing off, and answer classification included), and aiohttp itself.
Ratios are against the baseline measured in the same run. Writes
bench/results/http_client.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from consumer.dev.emulator.process import EmulatorProcess
from consumer.endpoints import Endpoint
from consumer.iterable import ClientSettings, IterableClient

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = (1, 8, 32, 128)
Post = Callable[[int], Awaitable[None]]


async def _measure(post: Post, concurrency: int, seconds: float) -> tuple[float, float]:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await post(n)
            done += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return done / wall, cpu / max(done, 1)


def _body(n: int) -> dict[str, object]:
    return {"email": f"user{n % 500}@example.com", "dataFields": {"n": n}}


async def _httpx(url: str, key: str, concurrency: int, seconds: float) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Api-Key": key}, limits=limits) as client:

        async def post(n: int) -> None:
            (await client.post("/api/users/update", json=_body(n))).raise_for_status()

        return await _measure(post, concurrency, seconds)


async def _shipped(url: str, key: str, concurrency: int, seconds: float) -> tuple[float, float]:
    settings = ClientSettings(
        url, key, max_connections=concurrency, max_in_flight=concurrency, rates={}
    )
    client = IterableClient(settings)
    try:

        async def post(n: int) -> None:
            await client.post(Endpoint.UPDATE, _body(n))

        return await _measure(post, concurrency, seconds)
    finally:
        await client.aclose()


async def _aiohttp(url: str, key: str, concurrency: int, seconds: float) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, headers={"Api-Key": key}) as session:

        async def post(n: int) -> None:
            async with session.post("/api/users/update", json=_body(n)) as response:
                response.raise_for_status()
                await response.read()

        return await _measure(post, concurrency, seconds)


async def _run(url: str, key: str, seconds: float) -> dict[str, dict[int, tuple[float, float]]]:
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for name in ("httpx default transport", "consumer.iterable client (shipped)", "aiohttp"):
        results[name] = {}
        for concurrency in CONCURRENCY:
            if name == "aiohttp":
                results[name][concurrency] = await _aiohttp(url, key, concurrency, seconds)
            elif "shipped" in name:
                results[name][concurrency] = await _shipped(url, key, concurrency, seconds)
            else:
                results[name][concurrency] = await _httpx(url, key, concurrency, seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with EmulatorProcess("--no-rate-limits", "--quiet") as emulator:
        results = asyncio.run(_run(emulator.url, emulator.api_key, args.seconds))
    baseline = results["httpx default transport"]
    lines = [
        "| client | " + " | ".join(str(c) for c in CONCURRENCY) + " |",
        "| --- |" + " --- |" * len(CONCURRENCY),
    ]
    for name, by_concurrency in results.items():
        cells = []
        for c in CONCURRENCY:
            rate, cpu = by_concurrency[c]
            ratio = rate / baseline[c][0]
            cells.append(f"{rate:,.0f}/s, {cpu * 1e6:,.0f} µs (x{ratio:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_client.json").write_text(
        json.dumps(
            {
                n: {
                    str(c): {"requests_per_second": r, "cpu_seconds_per_request": u}
                    for c, (r, u) in v.items()
                }
                for n, v in results.items()
            },
            indent=2,
        )
        + "\n"
    )
    caption = (
        "`users/update` against the emulator; columns are requests in flight; each cell:"
        " requests/s, client CPU per request, (ratio to httpx's default transport, same run)."
    )
    (RESULTS / "http_client.md").write_text(f"{caption}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
