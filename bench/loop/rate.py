"""Latency at a fixed rate, and throughput at saturation, of placements and of whole loops."""

import asyncio
import time
from typing import Any

from bench.loop.kiosk import PHASES, Kiosk

SPENT: dict[str, float] = {}  # seconds spent in each phase of the whole loops, summed over the loops


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def at_rate(kiosk: Kiosk, n: int, rate: float) -> dict[str, float]:
    """Submits n requests open-loop at `rate` per second; submit -> volunteer.assigned from each scheduled send
    (a late send is counted late: no coordinated omission)."""
    start = time.monotonic() + 0.2
    latencies: list[float] = []

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        request_id = await kiosk.submit()
        latencies.append(await kiosk.arrival("volunteer.assigned", request_id) - scheduled)

    await asyncio.gather(*(one(i) for i in range(n)))
    ms = [1000 * x for x in latencies]
    return {"rate": rate, "n": n, "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


async def placements(kiosk: Kiosk, n: int, in_flight: int = 64) -> float:
    """Placements per second with n requests submitted as fast as the system takes them."""
    gate = asyncio.Semaphore(in_flight)
    started = time.monotonic()

    async def one() -> float:
        async with gate:
            request_id = await kiosk.submit()
        return await kiosk.arrival("volunteer.assigned", request_id)

    done = await asyncio.gather(*(one() for _ in range(n)))
    return n / (max(done) - started)


async def loops(kiosk: Kiosk, n: int, concurrent: int = 16) -> float:
    """Whole loops per second (submit to rated, every consumer caught up at the end), `concurrent` at a time."""
    gate = asyncio.Semaphore(concurrent)
    started = time.monotonic()

    async def one() -> None:
        async with gate:
            request_id = await kiosk.submit()
            state: dict[str, Any] = {}
            await kiosk.arrival("volunteer.assigned", request_id)
            for phase in PHASES:
                at = time.monotonic()
                await kiosk.phase(phase, request_id, state, settle=False)
                SPENT[phase] = SPENT.get(phase, 0.0) + time.monotonic() - at

    await asyncio.gather(*(one() for _ in range(n)))
    await kiosk.quiet()
    return n / (time.monotonic() - started)
