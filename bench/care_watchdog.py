#!/usr/bin/env python
"""The cost of one care watchdog pass over a county's worth of plans, and the delay to the first escalation.

    python bench/care_watchdog.py [--plans 10000] [--deadlines 10] [--interval 10]

Starts a real nats-server and nx-27017 in a temp directory and the care service in this process, with a
clock the benchmark moves and a pymongo CommandListener registered before the service's client is made.
It creates --plans plans, each with a daily visit; their deadlines are spread over --deadlines times of
the evening (17:00, 17:30, ...), as a county's care groups would set them. Then it measures:

- a quiet pass: the watchdog looks at the buckets since the last pass and finds nothing due (the common case,
  every CARE_WATCH_INTERVAL seconds all day);
- a busy pass: the pass right after one evening deadline, which takes the first step (care.duty.missed and the
  holder's reminder) of every visit due then, none of them checked in;
- the delay from a deadline to its first escalation: the pass runs every --interval seconds at a phase the
  deadline does not know, so the wait for the pass is between 0 and --interval seconds; inside the pass, the
  time until that visit's step is published is measured for each visit. Printed: the measured in-pass times
  and the resulting delay (interval/2 + mean in-pass time on average, interval + the slowest in-pass time at
  most).

Database commands are counted by name, for the care database only.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.care import CreatePlan  # noqa: E402
from linli.embedded import start_mongo, start_nats  # noqa: E402
from services.care.app import assemble  # noqa: E402
from services.care.config import CareSettings  # noqa: E402
from services.common.config import BusSettings  # noqa: E402

START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # 08:00 in the district


class Commands(monitoring.CommandListener):
    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            self.seen[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class MovedClock:
    at: datetime = START

    def now(self) -> datetime:
        return self.at


def plan(n: int, deadlines: int) -> CreatePlan:
    due = datetime(2026, 1, 1, 17, 0) + timedelta(minutes=30 * (n % deadlines))
    return CreatePlan.model_validate({
        "idempotency_key": f"bench-plan-{n:06d}",
        "reader": {"person_id": "op", "role": "operator", "district": "beibei"},
        "district": "beibei", "community": "quanwaiyuan", "grid": "quanwai-01", "resident_name": f"居民{n}",
        "resident_phone": f"138{n:08d}", "resident_kind": "elderly_alone",
        "group": [{"person_id": f"n-{n}", "name": "邻居", "role": "neighbour"},
                  {"person_id": f"g-{n % 50}", "name": "网格员", "role": "grid_worker"}],
        "duties": [{"duty_id": "visit", "kind": "visit", "rhythm": "daily", "due": due.strftime("%H:%M"),
                    "holder": f"n-{n}"}],
    })


def show(title: str, seconds: float, commands: Counter[str]) -> None:
    total = sum(commands.values())
    by_name = ", ".join(f"{name} {count}" for name, count in commands.most_common())
    print(f"{title}: {seconds * 1000:.1f} ms, {total} database commands ({by_name})")


async def bench(args: argparse.Namespace, nats_url: str, mongo_url: str) -> None:
    bus = BusSettings(nats_url=nats_url, mongo_url=mongo_url, db_prefix=f"b{uuid.uuid4().hex[:8]}")
    listener = Commands(bus.database("care"))
    monitoring.register(listener)
    clock = MovedClock()
    settings = CareSettings(bus=bus, watch_interval=3600.0, bucket_seconds=60)
    service, care = assemble(settings, clock)
    await service.start()
    try:
        began = time.perf_counter()
        for n in range(args.plans):
            await care.create_plan(plan(n, args.deadlines))
        print(f"{args.plans} plans with a daily visit created in {time.perf_counter() - began:.0f} s "
              f"({args.deadlines} deadlines from 17:00 local, {args.plans // args.deadlines} visits each)")
        await care.watch_once()  # the first pass sets the cursor

        clock.at = START + timedelta(seconds=args.interval)
        listener.seen.clear()
        began = time.perf_counter()
        taken = await care.watch_once()
        show(f"quiet pass ({taken} steps)", time.perf_counter() - began, listener.seen)

        # The first deadline, 17:00 local = 09:00 UTC; the pass after it. The passes between 08:00 and then
        # are quiet ones, measured above; the cursor is put just before the deadline as they would leave it.
        due = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        clock.at = due - timedelta(seconds=args.interval)
        await care.watch_once()
        clock.at = due + timedelta(seconds=1)
        published: list[float] = []
        sent = care.outbox.send

        async def timed_send(events: Any) -> None:
            await sent(events)
            published.append(time.perf_counter())

        care.outbox.send = timed_send  # type: ignore[method-assign]
        listener.seen.clear()
        began = time.perf_counter()
        taken = await care.watch_once()
        took = time.perf_counter() - began
        care.outbox.send = sent  # type: ignore[method-assign]
        show(f"busy pass ({taken} deadlines reached, first steps taken)", took, listener.seen)
        print(f"   per deadline: {sum(listener.seen.values()) / max(taken, 1):.1f} commands, "
              f"{took / max(taken, 1) * 1000:.2f} ms")
        in_pass = [at - began for at in published]
        if in_pass:
            mean, slowest, first = statistics.mean(in_pass), max(in_pass), min(in_pass)
            print(f"in-pass time to a visit's first escalation: first {first * 1000:.0f} ms, "
                  f"mean {mean * 1000:.0f} ms, last {slowest * 1000:.0f} ms")
            print(f"delay from deadline to first escalation with a pass every {args.interval:g} s: "
                  f"mean {args.interval / 2 + mean:.1f} s, at most {args.interval + slowest:.1f} s")
    finally:
        await service.stop()
        monitoring._LISTENERS.command_listeners.remove(listener)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--deadlines", type=int, default=10, help="distinct evening deadlines the plans share")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between watchdog passes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = start_nats(Path(tmp))
        mongo_server = start_mongo(Path(tmp))
        try:
            asyncio.run(bench(args, nats_server.url, mongo_server.url))
        finally:
            mongo_server.stop()
            nats_server.stop()


if __name__ == "__main__":
    main()
