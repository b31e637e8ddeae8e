"""A matcher process SIGKILLed while urgent offers are being answered: another process tidies up after it."""

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import nats.errors
import pytest

from contracts import API
from linli.client import caught_up
from linli.system import System
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.system
VOLUNTEERS, REQUESTS = 10, 24


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.start(
        tmp_path_factory.mktemp("killed"),
        env={"MATCHER_OFFER_TTL": "900", "MATCHER_SWEEP_INTERVAL": "0.3", "MATCHER_LEASE": "1.5",
             "LINLI_ACK_WAIT": "3", "LINLI_LOG_LEVEL": "WARNING"},
    )
    yield running
    running.stop()


async def test_after_a_matcher_is_killed_no_losing_offer_holds_a_volunteer_and_no_request_stays_placing(
    system: System, client: Bus
) -> None:
    volunteers = [
        (await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": f"志愿者{n}", "phone": f"1391{n:07d}", "district": "beibei", "grids": ["quanwai-01"],
            "skills": ["elderly"], "capacity": 3,
        }))["volunteer_id"]
        for n in range(VOLUNTEERS)
    ]
    await client.wait_for("volunteer.registered", count=VOLUNTEERS, timeout=30)
    await caught_up(client.nc, "matcher", "volunteer.registered")

    async def answer(offer: dict[str, Any]) -> None:
        try:
            await client.call(API.MATCHER_RESPOND, {"assignment_id": offer["code"], "volunteer_id": offer["volunteer_id"],
                                                    "accept": True}, timeout=3)
        except (TimeoutError, asyncio.TimeoutError, nats.errors.Error):
            pass  # the matcher that would have answered is gone, and none has started yet

    answered: set[str] = set()
    answers: list[asyncio.Task[None]] = []
    requests = []
    for n in range(REQUESTS):
        requests.append((await client.call(API.INTAKE_SUBMIT, {
            "idempotency_key": f"urgent-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
            "service": "elderly.escort", "urgency": "urgent", "resident": {"name": "居民", "phone": f"1361{n:07d}"},
        }))["request_id"])
        for event in client.of_type("volunteer.assigned"):
            if event["data"]["request_id"] not in answered:  # the first offer of each request says yes at once
                answered.add(event["data"]["request_id"])
                answers.append(asyncio.create_task(answer(event["data"])))
        if n == REQUESTS // 2:
            system.kill("matcher-0")
            del system.processes["matcher-0"]
            system.spawn("matcher", 1)
    await asyncio.gather(*answers)
    await asyncio.to_thread(system.wait_ready)

    async def tidy() -> bool:
        for request_id in requests:
            explained = await client.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
            if "error" in explained or explained["state"] == "placing":
                return False
            if explained["state"] == "assigned" and any(o["state"] == "offered" for o in explained["offers"]):
                return False  # a losing offer still holds a volunteer
        return True

    await eventually(tidy, timeout=60, interval=0.5)
    held = [a for v in volunteers for a in (await client.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": v}))["assignments"]]
    assert len(held) <= VOLUNTEERS * 3
    live = [a["request_id"] for a in held if a["status"] == "accepted"]
    assert len(live) == len(set(live)), "a request was accepted twice"
