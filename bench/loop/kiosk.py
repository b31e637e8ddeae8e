"""One request through the whole loop, as a kiosk and a volunteer's phone drive it over the public contract."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS

from contracts import API
from linli.client import caught_up
from services.common.bus import settled
from services.notifier.handlers import notification_id

# Every consumer a loop's events pass through, to wait for before counting.
CONSUMERS = [
    ("intake", "volunteer.assigned"), ("intake", "assignment.accepted"), ("intake", "assignment.completed"),
    ("matcher", "request.created"), ("matcher", "request.rated"), ("matcher", "volunteer.registered"),
    ("ledger", "hours.logged"), ("ledger", "request.rated"), ("ledger", "volunteer.registered"),
    ("notifier", "volunteer.assigned"), ("notifier", "assignment.accepted"), ("notifier", "assignment.completed"),
    ("notifier", "points.earned"),
]
PHASES = ["submit -> offer -> notified", "accept", "complete -> hours -> points", "rate"]


class Kiosk:
    def __init__(self, nc: NATS, district: str, grid: str) -> None:
        self.nc, self.district, self.grid = nc, district, grid
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        # When each (event type, request id) was first seen, by the monotonic clock.
        self.arrived: dict[tuple[str, str], float] = {}

    async def watch(self) -> None:
        async def collect(msg: Any) -> None:
            event = json.loads(msg.data)
            self.events.append(event)
            self.arrived.setdefault((event["type"].removeprefix("linli."), event["data"].get("request_id", "")),
                                    time.monotonic())
            self.changed.set()

        await self.nc.subscribe("linli.evt.>", cb=collect)
        await settled(self.nc)

    async def call(self, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await self.nc.request(subject, json.dumps(payload, default=str).encode(), timeout=30)
        answer: dict[str, Any] = json.loads(reply.data)
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error']}")
        return answer

    async def event(self, event_type: str, timeout: float = 30.0, **data: Any) -> dict[str, Any]:
        async def seen() -> dict[str, Any]:
            while True:
                for e in self.events:
                    if e["type"] == f"linli.{event_type}" and all(e["data"].get(k) == v for k, v in data.items()):
                        return e
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {event_type} with {data} within {timeout:.0f} s") from None

    async def quiet(self) -> None:
        for service, event_type in CONSUMERS:
            await caught_up(self.nc, service, event_type)

    async def arrival(self, event_type: str, request_id: str, timeout: float = 120.0) -> float:
        async def seen() -> float:
            while (event_type, request_id) not in self.arrived:
                self.changed.clear()
                await self.changed.wait()
            return self.arrived[(event_type, request_id)]

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {event_type} for {request_id} within {timeout:.0f} s") from None

    async def register(self, n: int, capacity: int = 1, first: int = 0) -> list[str]:
        ids = []
        for i in range(first, first + n):
            reply = await self.call(API.INTAKE_REGISTER_VOLUNTEER, {
                "name": f"志愿者{i}", "phone": f"139{i:08d}", "district": self.district, "grids": [self.grid],
                "skills": ["repair"], "capacity": capacity})
            ids.append(str(reply["volunteer_id"]))
        for volunteer_id in ids:
            await self.event("volunteer.registered", volunteer_id=volunteer_id)
        await self.quiet()
        return ids

    async def submit(self) -> str:
        start = datetime.now(UTC) + timedelta(hours=2)
        reply = await self.call(API.INTAKE_SUBMIT, {
            "idempotency_key": f"bench-{uuid.uuid4()}", "district": self.district, "grid": self.grid,
            "service": "repair.plumbing", "description": "厨房水管漏水", "channel": "kiosk",
            "window_start": start.isoformat(), "window_end": (start + timedelta(hours=3)).isoformat(),
            "resident": {"name": "王秀英", "phone": "13800138000", "address": "泉外园小区3栋2单元401"}})
        return str(reply["request_id"])

    async def phase(self, name: str, request_id: str, state: dict[str, Any], settle: bool = True) -> None:
        """Runs one phase of the loop for this request and waits until every service has handled it."""
        if name == PHASES[0]:
            offered = await self.event("volunteer.assigned", request_id=request_id)
            state["offer"] = offered["data"]
            await self.event("notification.delivered", notification_id=notification_id(offered["id"], "offer"))
        elif name == PHASES[1]:
            offer = state["offer"]
            await self.call(API.MATCHER_RESPOND, {"assignment_id": offer["assignment_id"],
                                                  "volunteer_id": offer["volunteer_id"], "accept": True})
            await self.event("assignment.accepted", assignment_id=offer["assignment_id"])
        elif name == PHASES[2]:
            offer = state["offer"]
            await self.call(API.MATCHER_COMPLETE, {"assignment_id": offer["assignment_id"],
                                                   "volunteer_id": offer["volunteer_id"], "hours": "1.5"})
            await self.event("points.earned", request_id=request_id)
        else:
            await self.rated(request_id)
        if settle:
            await self.quiet()

    async def rated(self, request_id: str) -> None:
        for _ in range(100):  # intake takes a rating once it has seen the completion
            try:
                await self.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "好"})
                break
            except RuntimeError:
                await asyncio.sleep(0.1)
        await self.event("request.rated", request_id=request_id)
