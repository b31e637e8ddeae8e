import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from contracts import API
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from services.matcher.store import MatcherStore
from tests.conftest import Bus, eventually, stored_events

pytestmark = pytest.mark.service

StartMatcher = Callable[..., Awaitable[Service]]


@pytest.fixture
async def intake(settings: BusSettings) -> AsyncIterator[Service]:
    service = build_intake(IntakeSettings(bus=settings))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def start_matcher(settings: BusSettings) -> AsyncIterator[StartMatcher]:
    running: list[Service] = []

    async def start(**overrides: Any) -> Service:
        options = {"offer_ttl": 60.0, "sweep_interval": 0.2, "lease": 5.0, "workers": 4, **overrides}
        service = build_matcher(MatcherSettings(bus=settings, **options))
        await service.start()
        running.append(service)
        return service

    yield start
    for service in running:
        if service.broker.running:
            await service.stop()


async def register(bus: Bus, phone: str, grids: list[str], skills: list[str], capacity: int = 1,
                   district: str = "beibei") -> str:
    reply = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": f"志愿者{phone[-4:]}", "phone": phone, "district": district, "grids": grids,
        "skills": skills, "capacity": capacity,
    })
    volunteer_id: str = reply["volunteer_id"]
    await bus.wait_for("volunteer.registered", volunteer_id=volunteer_id)
    return volunteer_id


async def roster_ready(matcher: Service, count: int) -> None:
    await eventually(lambda: _count(matcher, count))


async def _count(matcher: Service, count: int) -> bool:
    return await matcher.db["volunteers"].count_documents({}) >= count


async def submit(bus: Bus, grid: str = "g1", service: str = "repair.plumbing", district: str = "beibei") -> str:
    reply = await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": str(uuid.uuid4()), "district": district, "grid": grid, "service": service,
        "resident": {"name": "李淑君", "phone": "13800000001"},
    })
    request_id: str = reply["request_id"]
    return request_id


async def test_offers_go_to_a_skilled_volunteer_in_the_same_grid_first(
    intake: Service, start_matcher: StartMatcher, bus: Bus
) -> None:
    matcher = await start_matcher()
    far = await register(bus, "13900000001", ["g2"], ["repair"])
    near = await register(bus, "13900000002", ["g1"], ["repair.plumbing"])
    await register(bus, "13900000003", ["g1"], ["haircut"])
    await register(bus, "13900000004", ["g1"], ["repair"], district="tieling")
    await roster_ready(matcher, 4)

    request_id = await submit(bus)
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]
    assert offer["data"]["volunteer_id"] == near
    assert offer["causationid"] == (await bus.wait_for("request.created", request_id=request_id))[0]["id"]

    declined = await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["data"]["assignment_id"], "volunteer_id": near, "accept": False, "reason": "不在家",
    })
    assert declined["status"] == "declined"
    second = await bus.wait_for("volunteer.assigned", request_id=request_id, count=2)
    assert second[1]["data"]["volunteer_id"] == far

    await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": second[1]["data"]["assignment_id"], "volunteer_id": far, "accept": False,
    })
    unmatched = (await bus.wait_for("request.unmatched", request_id=request_id))[0]
    assert sorted(unmatched["data"]["tried"]) == sorted([near, far])
    status = await eventually(lambda: _status_is(bus, request_id, "unmatched"))
    assert status["status"] == "unmatched"


async def _status_is(bus: Bus, request_id: str, status: str) -> dict[str, Any] | None:
    view = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
    return view if view.get("status") == status else None


async def test_accept_and_complete_log_the_hours_once(intake: Service, start_matcher: StartMatcher, bus: Bus) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000011", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    request_id = await submit(bus)
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]

    stranger = await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": "v-someone-else", "accept": True,
    })
    assert stranger["error"]["code"] == "not_your_assignment"
    early = await bus.call(API.MATCHER_COMPLETE, {
        "assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "hours": "1",
    })
    assert early["error"]["code"] == "not_accepted"

    call = {"assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "accept": True}
    assert (await bus.call(API.MATCHER_RESPOND, call))["status"] == "accepted"
    assert (await bus.call(API.MATCHER_RESPOND, call))["status"] == "accepted"
    listed = await bus.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": volunteer})
    assert [a["status"] for a in listed["assignments"]] == ["accepted"]

    done = {"assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "hours": "1.75", "note": "换了水龙头"}
    assert (await bus.call(API.MATCHER_COMPLETE, done))["status"] == "completed"
    assert (await bus.call(API.MATCHER_COMPLETE, done))["status"] == "completed"
    other_hours = await bus.call(API.MATCHER_COMPLETE, {**done, "hours": "3"})
    assert other_hours["error"]["code"] == "already_completed"

    logged = await bus.wait_for("hours.logged", request_id=request_id)
    assert logged[0]["data"]["hours"] == "1.75" and logged[0]["data"]["category"] == "repair"
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "hours.logged")) == 1
    assert len(await stored_events(bus.nc, "assignment.completed")) == 1
    assert (await bus.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": volunteer}))["assignments"] == []
    # the slot is free again: the next request goes to the same volunteer
    next_request = await submit(bus)
    assert (await bus.wait_for("volunteer.assigned", request_id=next_request))[0]["data"]["volunteer_id"] == volunteer


async def test_a_lapsed_offer_moves_on_even_across_a_matcher_restart(
    intake: Service, start_matcher: StartMatcher, bus: Bus
) -> None:
    matcher = await start_matcher(offer_ttl=1.5)
    first = await register(bus, "13900000021", ["g1"], ["repair"])
    second = await register(bus, "13900000022", ["g2"], ["repair"])
    await roster_ready(matcher, 2)
    request_id = await submit(bus)
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
    assert offer["volunteer_id"] == first

    await matcher.stop()  # nobody is watching the clock while the offer lapses
    await asyncio.sleep(2.0)
    await start_matcher(offer_ttl=1.5)

    expired = await bus.wait_for("assignment.expired", request_id=request_id)
    assert expired[0]["data"]["volunteer_id"] == first
    offers = await bus.wait_for("volunteer.assigned", request_id=request_id, count=2)
    assert offers[1]["data"]["volunteer_id"] == second
    late = await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": first, "accept": True,
    })
    assert late["error"]["code"] == "offer_closed"


async def test_capacity_is_never_exceeded(intake: Service, start_matcher: StartMatcher, bus: Bus) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000031", ["g1"], ["repair"], capacity=2)
    await roster_ready(matcher, 1)
    requests = [await submit(bus) for _ in range(3)]

    await bus.wait_for("volunteer.assigned", count=2)
    unmatched = await bus.wait_for("request.unmatched")
    assert "capacity" in unmatched[0]["data"]["reason"]
    offered = {e["data"]["request_id"] for e in bus.of_type("volunteer.assigned")}
    assert len(offered) == 2 and offered | {unmatched[0]["data"]["request_id"]} == set(requests)
    held = await MatcherStore(matcher.db).held()
    assert sorted(held[volunteer]) == sorted(e["data"]["assignment_id"] for e in bus.of_type("volunteer.assigned"))


async def test_a_cancelled_request_withdraws_its_offer_and_frees_the_volunteer(
    intake: Service, start_matcher: StartMatcher, bus: Bus
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000041", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    request_id = await submit(bus)
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]

    cancelled = await bus.call(API.INTAKE_CANCEL, {"request_id": request_id, "reason": "已自行修好"})
    assert cancelled["status"] == "cancelled"
    store = MatcherStore(matcher.db)
    await eventually(lambda: _assignment_state(store, offer["assignment_id"], "withdrawn"))
    assert await store.held() == {}
    answer = await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "accept": True,
    })
    assert answer["error"]["code"] == "offer_closed"


async def _assignment_state(store: MatcherStore, assignment_id: str, state: str) -> bool:
    found = await store.assignment(assignment_id)
    return bool(found and found["state"] == state)


async def test_two_matchers_never_double_book(intake: Service, start_matcher: StartMatcher, bus: Bus) -> None:
    first = await start_matcher()
    await start_matcher()
    volunteers = [await register(bus, f"1390000{i:04d}", [f"g{i % 3}"], ["repair"], capacity=2) for i in range(5)]
    await roster_ready(first, len(volunteers))
    requests = await asyncio.gather(*[submit(bus, grid=f"g{i % 3}") for i in range(30)])

    await eventually(lambda: _all_settled(bus, requests), timeout=30)
    store = MatcherStore(first.db)
    held = await store.held()
    assert all(len(holders) <= 2 for holders in held.values())
    assert sum(len(h) for h in held.values()) == 10
    live = await store.live_assignments()
    assert len({a["request_id"] for a in live}) == len(live) == 10
    offers = {e["data"]["request_id"] for e in bus.of_type("volunteer.assigned")}
    unmatched = {e["data"]["request_id"] for e in bus.of_type("request.unmatched")}
    assert offers.isdisjoint(unmatched) and offers | unmatched == set(requests)


async def _all_settled(bus: Bus, requests: list[str]) -> bool:
    settled = {e["data"]["request_id"] for e in bus.of_type("volunteer.assigned") + bus.of_type("request.unmatched")}
    return settled >= set(requests)


async def test_work_left_by_a_replica_that_died_mid_placement_is_undone_and_redone(
    intake: Service, start_matcher: StartMatcher, bus: Bus
) -> None:
    import time

    from services.matcher.handlers import assignment_id_for

    matcher = await start_matcher(lease=1.0)
    volunteer = await register(bus, "13900000051", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    store = MatcherStore(matcher.db)
    # What a replica killed between writing its offer and flipping the request leaves behind:
    orphan = assignment_id_for("r-orphan", 1)
    await store.add_request({"_id": "r-orphan", "district": "beibei", "grid": "g1", "service": "repair.plumbing",
                             "category": "repair", "urgency": "routine", "state": "placing", "round": 1,
                             "tried": [], "lease": time.time() - 1, "opened": time.time(), "created": time.time()})
    assert await store.reserve(volunteer, orphan)
    await store.add_assignment({"_id": orphan, "request_id": "r-orphan", "volunteer_id": volunteer,
                                "district": "beibei", "service": "repair.plumbing", "grid": "g1",
                                "urgency": "routine", "state": "offered", "round": 1, "created": time.time() - 10,
                                "expires": time.time() + 600, "announced": False})

    offer = (await bus.wait_for("volunteer.assigned", request_id="r-orphan"))[0]["data"]
    assert offer["assignment_id"] == assignment_id_for("r-orphan", 2) and offer["volunteer_id"] == volunteer
    assert (await store.assignment(orphan) or {})["state"] == "withdrawn"
    assert await store.held() == {volunteer: [offer["assignment_id"]]}
    await asyncio.sleep(1.0)
    assert [e["data"]["assignment_id"] for e in bus.of_type("volunteer.assigned")] == [offer["assignment_id"]]
