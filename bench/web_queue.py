#!/usr/bin/env python
"""The operator console's live queue with 1,000 open requests: how long the page takes to make and to show.

    python bench/web_queue.py [--requests 1000] [--runs 10]

What it does, in one temp directory:

1. Starts the whole system as `linli up` runs it (tokens required, every service its own process, the web
   included), with the demo's people. The matcher is then stopped, so every request stays open (submitted)
   instead of being offered or found unmatched: the queue holds exactly the requests seeded.
2. Seeds N requests through linli.api.intake.submit as the district's dispatcher (20 at a time).
3. SERVER: signs in over HTTP and fetches /ops?state=open --runs times: the wall time of each response (HTML
   complete), the web's own time for it and the part of that spent waiting for the lists' calls (its
   Server-Timing header), the bus calls the page made (X-Bus-Calls) and the rows it holds.
4. BROWSER: in Debian's Chromium (Playwright), signs in, then loads the page --runs times, each time from
   navigation start until the queue's table holds all N rows, and the browser's own DOMContentLoaded.
5. Prints each figure's median and worst; exits non-zero if the page ever held fewer rows than seeded.

The target (issue 9) is under a second for the page with 1,000 open requests on the machine it runs on.
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts import API  # noqa: E402
from linli.client import Client  # noqa: E402
from tests.browser import WebSystem, launch, start_web_system  # noqa: E402

DISTRICT, GRID = "beibei", "quanwai-01"
ROW = re.compile(r"<tr data-request=")


async def seed(web: WebSystem, n: int, token: str, parallel: int = 20) -> float:
    client = await Client.connect(web.system.nats_url, token=token)
    started = time.perf_counter()
    try:
        gate = asyncio.Semaphore(parallel)

        async def one(i: int) -> None:
            async with gate:
                await client.call(API.INTAKE_SUBMIT, {
                    "idempotency_key": f"bench-web-{uuid.uuid4()}", "district": DISTRICT, "grid": GRID,
                    "service": "repair.plumbing", "channel": "hotline", "description": f"bench {i}",
                    "resident": {"name": "居民", "phone": f"138{i:08d}", "address": ""}}, timeout=30)

        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()
    return time.perf_counter() - started


def server_side(web: WebSystem, runs: int) -> list[dict[str, float]]:
    figures = []
    with httpx.Client(base_url=web.url, timeout=60) as http:
        signed = http.post("/signin", data={"user": "dispatcher", "password": web.passwords["dispatcher"],
                                            "next": "/ops"}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        http.get("/ops?state=open")  # the first page also learns the places and the token key: not counted
        for _ in range(runs):
            started = time.perf_counter()
            page = http.get("/ops?state=open")
            wall = time.perf_counter() - started
            timing = dict(part.strip().split(";dur=") for part in page.headers["server-timing"].split(","))
            figures.append({"wall": wall, "web_total": float(timing["total"]) / 1000,
                            "web_waiting_for_bus": float(timing["bus"]) / 1000, "calls": float(page.headers["x-bus-calls"]),
                            "rows": float(len(ROW.findall(page.text))), "bytes": float(len(page.content))})
    return figures


def in_browser(web: WebSystem, runs: int, n: int) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    figures = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(f"{web.url}/signin?next=/ops%3Fstate%3Dopen")
            page.fill("#f-user", "dispatcher")
            page.fill("#f-password", web.passwords["dispatcher"])
            page.click("button[type=submit]")
            page.wait_for_url("**/ops?state=open")
            rows = "#t-list-queue tbody tr"
            for _ in range(runs):
                started = time.perf_counter()
                page.goto(f"{web.url}/ops?state=open", wait_until="commit")
                page.wait_for_function(f"document.querySelectorAll('{rows}').length >= {min(n, 1000)}")
                shown = time.perf_counter() - started
                loaded = page.evaluate(
                    "(() => { const t = performance.getEntriesByType('navigation')[0];"
                    " return t.domContentLoadedEventEnd - t.startTime; })()") / 1000
                figures.append({"rows_shown": shown, "dom_content_loaded": loaded,
                                "rows": float(page.locator(rows).count())})
        finally:
            browser.close()
    return figures


def show(title: str, figures: list[dict[str, float]]) -> None:
    print(f"\n{title} ({len(figures)} runs)")
    for name in figures[0]:
        values = [f[name] for f in figures]
        if name in ("rows", "calls", "bytes"):
            print(f"  {name:<20} {statistics.median(values):>10.0f}   (min {min(values):.0f}, max {max(values):.0f})")
        else:
            print(f"  {name:<20} {statistics.median(values) * 1000:>8.1f} ms median, {max(values) * 1000:.1f} ms worst")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linli-bench-web-") as folder:
        systems = start_web_system(Path(folder), env={"LINLI_AUTH": "required"})
        web = next(systems)
        try:
            web.system.kill("matcher-0")  # requests stay open: nobody offers them
            token = web.token("dispatcher")
            took = asyncio.run(seed(web, args.requests, token))
            print(f"seeded {args.requests} open requests through intake.submit in {took:.1f} s")
            print(f"load average before measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"on {os.cpu_count()} CPUs")
            server = server_side(web, args.runs)
            show("server: GET /ops?state=open, HTML complete", server)
            browser = in_browser(web, args.runs, args.requests)
            show("Chromium: navigation to every row present", browser)
            print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            for _ in systems:
                pass
    short = [f["rows"] for f in server + browser if f["rows"] < min(args.requests, 1000)]
    if short:
        print(f"\nFAILED: a page held fewer rows than the {args.requests} seeded: {short}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
