"""A refused matcher call changes nothing: not the matcher's database, not the stream."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from contracts import API
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service
DISTRICT = "beibei"


@dataclass
class World:
    """A: quanwai-01, capacity 1, accepted r1. B: quanwai-02, capacity 2, offered r2, completed r3."""

    matcher: Service
    a: str
    b: str
    r1: str
    r2: str
    r3: str
    r1_offer: dict[str, Any]
    r2_offer: dict[str, Any]
    r3_offer: dict[str, Any]


@pytest.fixture
async def services(settings: BusSettings) -> AsyncIterator[tuple[Service, Service]]:
    intake = build_intake(IntakeSettings(bus=settings))
    matcher = build_matcher(MatcherSettings(bus=settings, offer_ttl=600, sweep_interval=0.2, lease=5))
    await intake.start()
    await matcher.start()
    yield intake, matcher
    await matcher.stop()
    await intake.stop()


async def register(bus: Bus, matcher: Service, phone: str, grid: str, capacity: int) -> str:
    reply = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": f"志愿者{phone[-3:]}", "phone": phone, "district": DISTRICT, "grids": [grid], "skills": ["repair"],
        "capacity": capacity,
    })
    volunteer_id: str = reply["volunteer_id"]
    await eventually(lambda: matcher.db["volunteers"].find_one({"_id": volunteer_id}))
    return volunteer_id


async def offered(bus: Bus, grid: str, phone: str) -> tuple[str, dict[str, Any]]:
    reply = await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": str(uuid.uuid4()), "district": DISTRICT, "grid": grid, "service": "repair.plumbing",
        "resident": {"name": "王秀英", "phone": phone},
    })
    request_id: str = reply["request_id"]
    return request_id, (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]


async def accept(bus: Bus, offer: dict[str, Any]) -> None:
    answer = await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["assignment_id"],
                                                  "volunteer_id": offer["volunteer_id"], "accept": True})
    assert answer["status"] == "accepted"
    await bus.wait_for("assignment.accepted", assignment_id=offer["assignment_id"])


@pytest.fixture
async def world(services: tuple[Service, Service], bus: Bus) -> World:
    _, matcher = services
    a = await register(bus, matcher, "13900000701", "quanwai-01", 1)
    b = await register(bus, matcher, "13900000702", "quanwai-02", 2)
    r1, r1_offer = await offered(bus, "quanwai-01", "13800000711")
    assert r1_offer["volunteer_id"] == a
    await accept(bus, r1_offer)
    r2, r2_offer = await offered(bus, "quanwai-01", "13800000712")
    r3, r3_offer = await offered(bus, "quanwai-02", "13800000713")
    assert r2_offer["volunteer_id"] == b == r3_offer["volunteer_id"]
    await accept(bus, r3_offer)
    done = await bus.call(API.MATCHER_COMPLETE, {"assignment_id": r3_offer["assignment_id"], "volunteer_id": b,
                                                 "hours": "1"})
    assert done["status"] == "completed"
    await bus.wait_for("hours.logged", request_id=r3)
    return World(matcher, a, b, r1, r2, r3, r1_offer, r2_offer, r3_offer)


async def snapshot(matcher: Service, bus: Bus) -> tuple[dict[str, list[dict[str, Any]]], int]:
    db = matcher.db
    documents = {name: await db[name].find({}).sort("_id", 1).to_list()
                 for name in sorted(await db.list_collection_names())}
    stream = await bus.nc.jetstream().stream_info("LINLI")
    return documents, stream.state.last_seq


async def refused(world: World, bus: Bus, subject: str, call: dict[str, Any], code: str) -> None:
    # Once the arranged work has all landed: published outbox entries are deleted by the relay's next pass,
    # and the flags of events published from their own documents cleared by the sweep's.
    await eventually(lambda: _outbox_empty(world.matcher))
    await eventually(lambda: _flags_cleared(world.matcher))
    before = await snapshot(world.matcher, bus)
    answer = await bus.call(subject, call)
    assert answer.get("error", {}).get("code") == code, answer
    await bus.nc.flush()
    after = await snapshot(world.matcher, bus)
    assert after[1] == before[1], f"{subject} {code}: the stream grew"
    changed = [name for name in before[0].keys() | after[0].keys() if before[0].get(name) != after[0].get(name)]
    assert not changed, f"{subject} {code}: changed {changed}"


async def _outbox_empty(matcher: Service) -> bool:
    return await matcher.db["outbox"].count_documents({}) == 0


async def _flags_cleared(matcher: Service) -> bool:
    return (await matcher.db["assignments"].count_documents({"announced": False}) == 0
            and await matcher.db["requests"].count_documents({"tidy": True}) == 0)


async def test_a_refused_assign_changes_nothing(world: World, bus: Bus) -> None:
    by_hand = {"operator": "网格员小李", "reason": "老人点名要他"}
    await refused(world, bus, API.MATCHER_ASSIGN, {"request_id": world.r1, "volunteer_id": "v-nobody", **by_hand},
                  "unknown_volunteer")
    await refused(world, bus, API.MATCHER_ASSIGN, {"request_id": world.r2, "volunteer_id": world.a, **by_hand},
                  "at_capacity")
    await refused(world, bus, API.MATCHER_ASSIGN, {"request_id": world.r3, "volunteer_id": world.a, **by_hand},
                  "not_changeable")
    await refused(world, bus, API.MATCHER_ASSIGN, {"request_id": "r-nope", "volunteer_id": world.a, **by_hand},
                  "not_found")
    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": world.r1})
    assert explained["state"] == "assigned" and explained["operator_actions"] == []


async def test_a_refused_reassign_changes_nothing(world: World, bus: Bus) -> None:
    again = {"operator": "社区工作者老王", "reason": "他临时住院了"}
    await refused(world, bus, API.MATCHER_REASSIGN, {"request_id": world.r1, "volunteer_id": "v-nobody", **again},
                  "unknown_volunteer")
    await refused(world, bus, API.MATCHER_REASSIGN, {"request_id": world.r2, "volunteer_id": world.a, **again},
                  "at_capacity")
    await refused(world, bus, API.MATCHER_REASSIGN, {"request_id": world.r3, **again}, "not_changeable")
    await refused(world, bus, API.MATCHER_REASSIGN, {"request_id": "r-nope", **again}, "not_found")


async def test_a_refused_answer_changes_nothing(world: World, bus: Bus) -> None:
    await refused(world, bus, API.MATCHER_RESPOND, {"assignment_id": "a-nope", "volunteer_id": world.a,
                                                    "accept": True}, "not_found")
    await refused(world, bus, API.MATCHER_RESPOND, {"assignment_id": world.r2_offer["assignment_id"],
                                                    "volunteer_id": world.a, "accept": True}, "not_your_assignment")
    await refused(world, bus, API.MATCHER_RESPOND, {"assignment_id": world.r1_offer["assignment_id"],
                                                    "volunteer_id": world.a, "accept": False}, "offer_closed")
    await refused(world, bus, API.MATCHER_RESPOND, {"assignment_id": world.r3_offer["assignment_id"],
                                                    "volunteer_id": world.b, "accept": True}, "offer_closed")


async def test_a_refused_completion_changes_nothing(world: World, bus: Bus) -> None:
    await refused(world, bus, API.MATCHER_COMPLETE, {"assignment_id": "a-nope", "volunteer_id": world.b,
                                                     "hours": "1"}, "not_found")
    await refused(world, bus, API.MATCHER_COMPLETE, {"assignment_id": world.r2_offer["assignment_id"],
                                                     "volunteer_id": world.a, "hours": "1"}, "not_your_assignment")
    await refused(world, bus, API.MATCHER_COMPLETE, {"assignment_id": world.r2_offer["assignment_id"],
                                                     "volunteer_id": world.b, "hours": "1"}, "not_accepted")
    await refused(world, bus, API.MATCHER_COMPLETE, {"assignment_id": world.r3_offer["assignment_id"],
                                                     "volunteer_id": world.b, "hours": "2"}, "already_completed")


async def test_a_refused_question_changes_nothing(world: World, bus: Bus) -> None:
    await refused(world, bus, API.MATCHER_EXPLAIN, {"request_id": "r-nope"}, "not_found")
    await refused(world, bus, API.MATCHER_ASSIGNMENTS, {"volunteer_id": "v-nobody"}, "not_found")
    await refused(world, bus, API.MATCHER_VOLUNTEERS, {"district": "beibei", "limit": 0}, "invalid_request")
