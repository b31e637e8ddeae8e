#!/usr/bin/env python
"""Database commands the notifier sends per notification, counted with a PyMongo CommandListener.

    python bench/notifier_writes.py [--events 20]

Starts a real nats-server and nx-27017 in a temp directory, intake and the notifier in this process
(console channel, no webhook), registers one volunteer and one request, sends one warm-up offer (it
fills the contact store and the service names), then N points.earned and N volunteer.assigned events
for that volunteer, waits until every one has its notification.delivered, and prints the notifier
database's commands per notification, by command. Intake's own commands are not counted.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts import API, Envelope, event_subject, new_event  # noqa: E402
from contracts.events import PointsEarned, VolunteerAssigned  # noqa: E402
from linli.embedded import start_mongo, start_nats  # noqa: E402
from services.common.bus import envelope_json  # noqa: E402
from services.common.config import BusSettings  # noqa: E402
from services.intake.app import build as build_intake  # noqa: E402
from services.intake.config import IntakeSettings  # noqa: E402
from services.notifier.app import build as build_notifier  # noqa: E402
from services.notifier.config import NotifierSettings  # noqa: E402

WRITES = {"insert", "update", "delete", "findAndModify"}


class Commands(monitoring.CommandListener):
    def __init__(self, database: str) -> None:
        self.database = database
        self.seen: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            collection = event.command.get(event.command_name)
            self.seen[f"{event.command_name} {collection}" if isinstance(collection, str) else event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def main(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = start_nats(Path(tmp) / "nats")
        mongo_server = start_mongo(Path(tmp) / "mongo")
        try:
            await run(events, nats_server.url, mongo_server.url)
        finally:
            nats_server.stop()
            mongo_server.stop()


async def run(events: int, nats_url: str, mongo_url: str) -> None:
    # Tokens off: what is counted is the notifier's own writes, and the bench's calls carry no token.
    bus = BusSettings(nats_url=nats_url, mongo_url=mongo_url, db_prefix=f"b{uuid.uuid4().hex[:8]}", auth="off")
    commands = Commands(bus.database("notifier"))
    monitoring.register(commands)  # before the clients are made: they take the listeners registered then
    intake = build_intake(IntakeSettings(bus=bus))
    notifier = build_notifier(NotifierSettings(bus=bus))
    await intake.start()
    await notifier.start()
    nc = await nats.connect(nats_url)
    delivered: set[str] = set()

    async def seen(msg: Any) -> None:
        delivered.add(json.loads(msg.data)["causationid"])

    await nc.subscribe("linli.evt.notification.*.>", cb=seen)

    async def call(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads((await nc.request(subject, json.dumps(payload).encode(), timeout=10)).data)
        return answer

    async def send(data: Any, request_id: str) -> str:
        event: Envelope[Any] = new_event(data, source="bench", district="beibei", subject=request_id,
                                         correlationid=request_id)
        await nc.jetstream().publish(event_subject(event.short_type, "beibei"), envelope_json(event),
                                     headers={"Nats-Msg-Id": event.id})
        return event.id

    async def all_delivered(ids: list[str]) -> None:
        while not set(ids) <= delivered:
            await asyncio.sleep(0.05)

    try:
        volunteer = (await call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"],
        }))["volunteer_id"]
        request = (await call(API.INTAKE_SUBMIT, {
            "idempotency_key": uuid.uuid4().hex, "district": "beibei", "grid": "quanwai-01",
            "service": "repair.plumbing", "resident": {"name": "王秀英", "phone": "13800138000"},
        }))["request_id"]

        def offer() -> VolunteerAssigned:
            return VolunteerAssigned(
                request_id=request, volunteer_id=volunteer, assignment_id=str(uuid.uuid4()),
                expires_at=datetime.now(UTC) + timedelta(minutes=5), service="repair.plumbing", grid="quanwai-01",
            )

        def earned() -> PointsEarned:
            return PointsEarned(volunteer_id=volunteer, request_id=request, hours=Decimal("1.5"),
                                points=Decimal("15"), balance_points=Decimal("15"), rate=Decimal("10"))

        await asyncio.wait_for(all_delivered([await send(offer(), request)]), 30)
        for name, make in (("points.earned", earned), ("volunteer.assigned", offer)):
            commands.seen.clear()
            ids = [await send(make(), request) for _ in range(events)]
            await asyncio.wait_for(all_delivered(ids), 120)
            await asyncio.sleep(0.5)  # the last handler's own writes after its outcome was published
            counted = dict(commands.seen)
            writes = sum(n for command, n in counted.items() if command.split()[0] in WRITES)
            total = sum(counted.values())
            per = f"{total / events:.1f} commands, {writes / events:.1f} writes per notification"
            print(f"{name} x{events} (console): {per}")
            for command, n in sorted(counted.items(), key=lambda item: -item[1]):
                print(f"    {n / events:5.2f}  {command}")
    finally:
        await nc.close()
        await notifier.stop()
        await intake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20)
    asyncio.run(main(parser.parse_args().events))
