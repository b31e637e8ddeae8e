#!/usr/bin/env python
"""200 kiosks pressing "confirm" at the same moment, through the web's own kiosk pages.

    python bench/kiosks.py [--kiosks 200] [--devices 20] [--data <folder>]

Starts the whole system as `linli up` does (tokens required, every service and the web a process of its
own) in a temp folder. --devices kiosk devices are made (identity.device_put, spread over the district's
grids), each signed in once through the web's kiosk setup page, as a committee member would; the kiosks share
them round the circle (a device's secret is an argon2 hash to check, so signing in 200 takes minutes, and the
burst, not the sign-in, is what is measured). Then every kiosk sends
its request at once: POST /kiosk/send with its session cookie, all --kiosks HTTP requests in flight together
(httpx, one connection each). Printed: how many were answered and with which HTTP status, the latency from
the burst's start to each answer (p50, p95, max), and how many distinct requests intake.requests lists
afterwards (it must be exactly one per kiosk: no request lost, none made twice).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts import API  # noqa: E402
from linli import identity_cli  # noqa: E402
from linli.client import Client  # noqa: E402
from linli.system import System  # noqa: E402

DISTRICT = "beibei"


async def devices(system: System, folder: Path, count: int) -> tuple[list[tuple[str, str]], str]:
    """One device per kiosk over the district's grids, with its secret; and a dispatcher's token."""
    client = await Client.connect(system.nats_url, token="")
    try:
        people = await identity_cli.create_people(client, folder, DISTRICT, "quanwai-03")
        places = await client.call(API.INTAKE_PLACES, {"district": DISTRICT})
        grids = [g["id"] for g in places["districts"][0]["grids"]]
        made = []
        for n in range(count):
            device = f"kiosk-bench-{n:03d}"
            reply = await client.call(API.IDENTITY_DEVICE_PUT,
                                      {"device_id": device, "district": DISTRICT, "grid": grids[n % len(grids)]},
                                      token=people.admin)
            made.append((device, str(reply["secret"])))
        return made, people.dispatcher
    finally:
        await client.close()


async def sign_in(http: httpx.AsyncClient, device: str, secret: str) -> str:
    answer = await http.post("/kiosk/setup", data={"device_id": device, "secret": secret})
    assert answer.status_code == 303, f"{device} was not signed in: {answer.status_code}"
    return str(answer.cookies["linli_kiosk"])


async def send(http: httpx.AsyncClient, token: str, n: int, start: float) -> tuple[int, float]:
    form = {"service": "repair.plumbing", "phone": f"1390000{n:04d}", "name": f"居民{n}",
            "description": "厨房水管漏水", "urgency": "routine", "key": f"bench-kiosk-{n:04d}"}
    try:
        answer = await http.post("/kiosk/send", data=form, headers={"Cookie": f"linli_kiosk={token}"})
        status = answer.status_code
    except httpx.HTTPError as exc:
        print(f"kiosk {n}: no answer ({type(exc).__name__})", file=sys.stderr)
        status = 0
    return status, time.perf_counter() - start


async def listed(system: System, token: str) -> set[str]:
    client = await Client.connect(system.nats_url, token="")
    try:
        ids: set[str] = set()
        cursor = ""
        while True:
            page = await client.call(API.INTAKE_REQUESTS, {"district": DISTRICT, "limit": 500, "cursor": cursor},
                                     token=token)
            ids |= {item["request_id"] for item in page["items"]}
            if not (cursor := page.get("next_cursor", "")):
                return ids
    finally:
        await client.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def burst(system: System, folder: Path, kiosks: int, count: int) -> dict[str, Any]:
    made, dispatcher = await devices(system, folder, count)
    limits = httpx.Limits(max_connections=kiosks, max_keepalive_connections=kiosks)
    async with httpx.AsyncClient(base_url=system.web_url, timeout=120, limits=limits) as http:
        signed = [await sign_in(http, device, secret) for device, secret in made]
        tokens = [signed[n % len(signed)] for n in range(kiosks)]
        warm = await http.get("/kiosk", headers={"Cookie": f"linli_kiosk={tokens[0]}"})  # the menu, as at opening
        assert warm.status_code == 200, warm.status_code
        start = time.perf_counter()
        answers = await asyncio.gather(*(send(http, token, n, start) for n, token in enumerate(tokens)))
        wall = time.perf_counter() - start
    latencies = [seconds for status, seconds in answers if status]
    return {"statuses": Counter(status for status, _ in answers), "latencies": latencies, "wall": wall,
            "requests": len(await listed(system, dispatcher))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiosks", type=int, default=200)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--data", type=Path, help="a folder for the system's data (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linli-kiosks-") as temp:
        folder = args.data or Path(temp)
        system = System.start(folder, env=identity_cli.service_env(folder))
        try:
            found = asyncio.run(burst(system, folder, args.kiosks, args.devices))
        finally:
            system.stop()
    latencies = found["latencies"]
    answered = sum(n for status, n in found["statuses"].items() if status)
    print(f"{args.kiosks} kiosks sent at once; {answered} answered in {found['wall']:.2f} s")
    print("statuses: " + ", ".join(f"{status or 'no answer'} × {n}" for status, n in sorted(found["statuses"].items())))
    if latencies:
        print(f"latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"distinct requests afterwards (intake.requests): {found['requests']}")
    ok = answered == args.kiosks and set(found["statuses"]) == {303} and found["requests"] == args.kiosks
    print("all answered, each made exactly once" if ok else "NOT all answered once each")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
