"""How many users/update calls per second the emulator serves (one process, one core).

    .venv/bin/python bench/emulator_speed.py [--seconds 5] [--concurrency 32]

The load comes from a separate aiohttp process so the emulator's core is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

import aiohttp

from consumer.dev.emulator.process import EmulatorProcess


async def _load(url: str, key: str, seconds: float, concurrency: int) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Api-Key": key}) as session:

        async def worker(n: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < deadline:
                body = {"email": f"user{n}-{i % 500}@example.com", "dataFields": {"i": i}}
                async with session.post(f"{url}/api/users/update", json=body) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                i += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done


def _run_load(
    url: str, key: str, seconds: float, concurrency: int, out: multiprocessing.Queue[int]
) -> None:
    out.put(asyncio.run(_load(url, key, seconds, concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with EmulatorProcess("--no-rate-limits", "--quiet") as emulator:
        queue: multiprocessing.Queue[int] = multiprocessing.Queue()
        loader = multiprocessing.Process(
            target=_run_load,
            args=(emulator.url, emulator.api_key, args.seconds, args.concurrency, queue),
        )
        loader.start()
        done = queue.get()
        loader.join()
    rate = done / args.seconds
    print(
        json.dumps(
            {
                "endpoint": "users/update",
                "requests_per_second": round(rate),
                "concurrency": args.concurrency,
            }
        )
    )


if __name__ == "__main__":
    main()
