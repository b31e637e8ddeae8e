#!/usr/bin/env python
"""Database commands the ledger sends per credited completion, on a volunteer with a long history.

    python bench/ledger_commands.py [--history 300] [--measure 20]

Starts a real nats-server and nx-27017 in a temp directory and the ledger service in this process, with a
pymongo CommandListener registered before the ledger's client is made. It credits one volunteer --history
completions (day 300 of a busy volunteer), then --measure more one at a time, each waited for until the
ledger has acknowledged it (points.earned seen, the consumer caught up), and prints the commands the
ledger's database received per credited completion, by command name. The repair sweep and the outbox relay
are set to run only at start, so what is counted is the work of the hours.logged handler alone: the chain
append, the projection, the outbox and the proof of service (the account is remembered from the last credit).

The figures are counts, not times: they do not depend on the machine, and they are the same on MongoDB.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts import event_subject, new_event  # noqa: E402
from contracts.events import HoursLogged, VolunteerRegistered  # noqa: E402
from linli.client import caught_up  # noqa: E402
from linli.embedded import start_mongo, start_nats  # noqa: E402
from services.common.bus import envelope_json  # noqa: E402
from services.common.config import BusSettings  # noqa: E402
from services.ledger.app import build  # noqa: E402
from services.ledger.config import LedgerSettings  # noqa: E402


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


async def credit(js: Any, nc: Any, volunteer_id: str) -> None:
    request_id = f"r-{uuid.uuid4()}"
    logged = new_event(
        HoursLogged(volunteer_id=volunteer_id, request_id=request_id, assignment_id=f"a-{request_id}",
                    hours=Decimal("1.5"), category="repair", completed_at=datetime(2026, 5, 6, 4, tzinfo=UTC)),
        source="linli/bench", district="beibei", subject=request_id, correlationid=request_id,
    )
    earned = asyncio.get_running_loop().create_future()

    async def seen(msg: Any) -> None:
        if json.loads(msg.data)["data"]["request_id"] == request_id and not earned.done():
            earned.set_result(None)

    sub = await nc.subscribe("linli.evt.points.earned.>", cb=seen)
    await js.publish(event_subject("hours.logged", "beibei"), envelope_json(logged),
                     headers={"Nats-Msg-Id": logged.id})
    await asyncio.wait_for(earned, 30)
    await sub.unsubscribe()
    await caught_up(nc, "ledger", "hours.logged")


async def run(history: int, measure: int, data: Path) -> dict[str, Any]:
    nats_server, mongo_server = start_nats(data), start_mongo(data)
    try:
        bus = BusSettings(nats_url=nats_server.url, mongo_url=mongo_server.url, db_prefix="bench",
                          outbox_relay_interval=3600)
        counter = Commands(bus.database("ledger"))
        monitoring.register(counter)
        ledger = build(replace(LedgerSettings(bus=bus), sweep_interval=3600, district="beibei"))
        await ledger.start()
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        try:
            registered = new_event(VolunteerRegistered(volunteer_id="v-busy", district="beibei", grids=["quanwai-01"],
                                                       skills=["repair"], capacity=2),
                                   source="linli/bench", district="beibei", subject="v-busy", correlationid="v-busy")
            await js.publish(event_subject("volunteer.registered", "beibei"), envelope_json(registered),
                             headers={"Nats-Msg-Id": registered.id})
            await caught_up(nc, "ledger", "volunteer.registered")
            for _ in range(history):
                await credit(js, nc, "v-busy")
            counter.seen.clear()
            for _ in range(measure):
                await credit(js, nc, "v-busy")
            per_credit = {name: count / measure for name, count in sorted(counter.seen.items())}
            return {"history": history, "measured": measure, "per_credit": per_credit,
                    "total_per_credit": sum(counter.seen.values()) / measure}
        finally:
            await nc.close()
            await ledger.stop()
    finally:
        nats_server.stop()
        mongo_server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=300, help="completions credited before measuring")
    parser.add_argument("--measure", type=int, default=20, help="completions measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as data:
        figures = asyncio.run(run(args.history, args.measure, Path(data)))
    print(f"ledger database commands per credited completion (after {figures['history']} earlier credits, "
          f"mean of {figures['measured']}):")
    for name, count in figures["per_credit"].items():
        print(f"  {name:<12} {count:6.2f}")
    print(f"  {'total':<12} {figures['total_per_credit']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
