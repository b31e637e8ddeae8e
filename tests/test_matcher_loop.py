"""The loop reaches people, as far as the matcher goes: offers say what a volunteer needs to decide, codes stand
for ids, a reopened request goes out again, a volunteer who left is asked no more, and loads are visible."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import API, new_event
from contracts.events import RequestClosed, RequestCreated, RequestRated, VolunteerLeft, VolunteerRegistered
from contracts.subjects import event_subject
from linli.client import caught_up
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.common.runtime import Service
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from services.matcher.store import MatcherStore
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service
DISTRICT = "beibei"
WINDOW = datetime(2026, 12, 3, 1, 0, tzinfo=UTC), datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


@pytest.fixture
async def matcher(settings: BusSettings) -> AsyncIterator[Service]:
    service = build_matcher(MatcherSettings(bus=settings, offer_ttl=600, sweep_interval=0.2, lease=5))
    await service.start()
    yield service
    await service.stop()


async def publish(bus: Bus, data: BaseModel, subject: str, at: datetime | None = None) -> None:
    """As intake (or a district system) would: one event on the stream."""
    event = new_event(data, source="linli/intake", district=DISTRICT, subject=subject, correlationid=subject,
                      time=at)
    await bus.nc.jetstream().publish(event_subject(event.short_type, DISTRICT), envelope_json(event),
                                     headers={"Nats-Msg-Id": event.id})


async def volunteer(bus: Bus, matcher: Service, grid: str, capacity: int = 1, team: str = "",
                    skills: list[str] | None = None) -> str:
    volunteer_id = f"v-{uuid.uuid4().hex[:8]}"
    await publish(bus, VolunteerRegistered(volunteer_id=volunteer_id, district=DISTRICT, grids=[grid],
                                           skills=skills or ["repair"], capacity=capacity, team=team), volunteer_id)
    await eventually(lambda: matcher.db["volunteers"].find_one({"_id": volunteer_id}))
    return volunteer_id


async def request(bus: Bus, grid: str = "quanwai-01", code: str = "", service: str = "repair.plumbing") -> str:
    request_id = f"r-{uuid.uuid4().hex[:8]}"
    await publish(bus, RequestCreated(
        request_id=request_id, district=DISTRICT, grid=grid, service=service, category=service.split(".")[0],
        urgency="routine", description="厨房水龙头漏水", window_start=WINDOW[0], window_end=WINDOW[1],
        code=code or f"K{uuid.uuid4().hex[:5].upper().replace('0', '2').replace('1', '3')}",
    ), request_id)
    return request_id


async def offer_of(bus: Bus, request_id: str, n: int = 1) -> dict[str, Any]:
    return (await bus.wait_for("volunteer.assigned", request_id=request_id, count=n))[n - 1]["data"]


async def test_an_offer_says_what_a_volunteer_needs_and_its_code_answers_for_its_id(
    matcher: Service, bus: Bus
) -> None:
    near = await volunteer(bus, matcher, "quanwai-02")
    request_id = await request(bus, code="K7QX3M")
    offer = await offer_of(bus, request_id)
    assert offer["volunteer_id"] == near
    assert (offer["request_code"], offer["district"], offer["description"], offer["place"]) == (
        "K7QX3M", DISTRICT, "厨房水龙头漏水", "neighbour")
    assert (offer["window_start"], offer["window_end"]) == tuple(w.isoformat().replace("+00:00", "Z") for w in WINDOW)
    assert len(offer["code"]) == 6 and offer["code"] != offer["assignment_id"]

    view = (await bus.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": near}))["assignments"][0]
    assert {k: view[k] for k in ("code", "request_code", "district", "place", "description")} == {
        "code": offer["code"], "request_code": "K7QX3M", "district": DISTRICT, "place": "neighbour",
        "description": "厨房水龙头漏水"}
    assert view["window_start"] == offer["window_start"]

    typed = offer["code"].lower()[:3] + "-" + offer["code"][3:]  # as a person types it
    accepted = await bus.call(API.MATCHER_RESPOND, {"assignment_id": typed, "volunteer_id": near, "accept": True})
    assert accepted == {"assignment_id": offer["assignment_id"], "request_id": request_id, "status": "accepted",
                        "code": offer["code"]}
    done = await bus.call(API.MATCHER_COMPLETE, {"assignment_id": offer["code"], "volunteer_id": near, "hours": "1.5"})
    assert done["status"] == "completed"

    event = (await bus.wait_for("assignment.accepted", request_id=request_id))[0]["data"]
    assert (event["code"], event["request_code"], event["service"]) == (offer["code"], "K7QX3M", "repair.plumbing")
    assert event["window_start"] == offer["window_start"]
    completed = (await bus.wait_for("assignment.completed", request_id=request_id))[0]["data"]
    assert (completed["code"], completed["request_code"]) == (offer["code"], "K7QX3M")
    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": "K7QX3M"})
    assert explained["request_id"] == request_id and explained["offers"][0]["code"] == offer["code"]


async def test_a_reopened_request_is_redispatched_without_the_volunteer_it_was_reopened_against(
    matcher: Service, bus: Bus
) -> None:
    first = await volunteer(bus, matcher, "quanwai-01")
    second = await volunteer(bus, matcher, "quanwai-02")
    request_id = await request(bus)
    offer = await offer_of(bus, request_id)
    assert offer["volunteer_id"] == first
    await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["code"], "volunteer_id": first, "accept": True})
    await bus.call(API.MATCHER_COMPLETE, {"assignment_id": offer["code"], "volunteer_id": first, "hours": "1"})
    again = {"request_id": request_id, "operator": "社区工作者老王", "reason": "居民说没修好"}
    not_yet = await bus.call(API.MATCHER_REASSIGN, again)
    assert not_yet["error"]["code"] == "not_changeable"  # completed and not reopened
    assert "once the resident reopens it" in not_yet["error"]["message"]

    await publish(bus, RequestRated(request_id=request_id, volunteer_id=first, stars=2, done=False), request_id)
    await eventually(lambda: _explained(bus, request_id, reopened=True))
    nobody = await bus.call(API.MATCHER_REASSIGN, {**again, "volunteer_id": "v-nobody"})
    assert nobody["error"]["code"] == "unknown_volunteer"
    assert await _explained(bus, request_id, reopened=True, state="completed", operator_actions=[])
    redone = await bus.call(API.MATCHER_REASSIGN, again)
    assert redone["status"] == "offered"

    redispatched = (await bus.wait_for("request.redispatched", request_id=request_id))[0]
    assert (redispatched["data"]["operator"], redispatched["data"]["excluded"]) == ("社区工作者老王", [first])
    new_offer = await offer_of(bus, request_id, 2)
    assert new_offer["volunteer_id"] == second
    order = [e["type"] for e in bus.events if e["data"].get("request_id") == request_id]
    assert order.index("linli.request.redispatched") < len(order) - 1 - order[::-1].index("linli.volunteer.assigned")
    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    assert [(a["action"], a["operator"]) for a in explained["operator_actions"]] == [("re-dispatched", "社区工作者老王")]

    await bus.call(API.MATCHER_RESPOND, {"assignment_id": new_offer["code"], "volunteer_id": second, "accept": True})
    await bus.call(API.MATCHER_COMPLETE, {"assignment_id": new_offer["code"], "volunteer_id": second, "hours": "1"})
    assert len(await bus.wait_for("hours.logged", request_id=request_id, count=2)) == 2
    await publish(bus, RequestRated(request_id=request_id, volunteer_id=second, stars=1), request_id)
    await eventually(lambda: _explained(bus, request_id, reopened=True))
    await publish(bus, RequestClosed(request_id=request_id, operator="社区工作者老王", reason="已上门核实"), request_id)
    await eventually(lambda: _explained(bus, request_id, state="closed"))
    ended = await bus.call(API.MATCHER_REASSIGN, again)
    assert ended["error"] == {"code": "not_changeable", "message": "a closed request cannot be changed",
                              "details": {"state": "closed"}}


async def _equals(got: Any, expected: Any) -> bool:
    return bool(await got == expected)


async def _explained(bus: Bus, request_id: str, **expected: Any) -> bool:
    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    return all(explained.get(k) == v for k, v in expected.items())


async def test_a_named_volunteer_gets_a_reopened_request_even_the_one_it_was_reopened_against(
    matcher: Service, bus: Bus
) -> None:
    first = await volunteer(bus, matcher, "quanwai-01")
    await volunteer(bus, matcher, "quanwai-02")
    request_id = await request(bus)
    offer = await offer_of(bus, request_id)
    await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["code"], "volunteer_id": first, "accept": True})
    await bus.call(API.MATCHER_COMPLETE, {"assignment_id": offer["code"], "volunteer_id": first, "hours": "1"})
    await publish(bus, RequestRated(request_id=request_id, volunteer_id=first, stars=1), request_id)
    await eventually(lambda: _explained(bus, request_id, reopened=True))

    named = await bus.call(API.MATCHER_REASSIGN, {"request_id": request_id, "operator": "网格员小李",
                                                  "reason": "他说再去一次", "volunteer_id": first})
    assert named["status"] == "offered"
    event = (await bus.wait_for("request.redispatched", request_id=request_id))[0]["data"]
    assert (event["volunteer_id"], event["excluded"]) == (first, [])
    assert (await offer_of(bus, request_id, 2))["volunteer_id"] == first


async def test_a_volunteer_who_left_gets_no_new_offers_and_their_open_offers_go_to_others(
    matcher: Service, bus: Bus
) -> None:
    leaving = await volunteer(bus, matcher, "quanwai-01")
    staying = await volunteer(bus, matcher, "quanwai-02")
    request_id = await request(bus)
    offer = await offer_of(bus, request_id)
    assert offer["volunteer_id"] == leaving

    await publish(bus, VolunteerLeft(volunteer_id=leaving, district=DISTRICT, reason="搬家了"), leaving)
    withdrawn = (await bus.wait_for("assignment.withdrawn", request_id=request_id))[0]["data"]
    assert (withdrawn["assignment_id"], withdrawn["by"]) == (offer["assignment_id"], "volunteer")
    assert (await offer_of(bus, request_id, 2))["volunteer_id"] == staying
    assert await MatcherStore(matcher.db).held() == {staying: [(await offer_of(bus, request_id, 2))["assignment_id"]]}

    later = await request(bus)
    unmatched = (await bus.wait_for("request.unmatched", request_id=later))[0]["data"]
    assert unmatched["reason_code"] == "none_eligible" and unmatched["request_code"]
    refused = await bus.call(API.MATCHER_ASSIGN, {"request_id": later, "volunteer_id": leaving,
                                                  "operator": "网格员小李", "reason": "老人点名要他"})
    assert refused["error"]["code"] == "volunteer_left"
    listed = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT})
    assert [v["volunteer_id"] for v in listed["items"]] == [staying]

    profile = VolunteerRegistered(volunteer_id=leaving, district=DISTRICT, grids=["quanwai-01"], skills=["repair"],
                                  capacity=1)
    await publish(bus, profile, leaving, at=datetime.now(UTC) - timedelta(hours=1))  # redelivered from before
    await caught_up(bus.nc, "matcher", "volunteer.registered")
    listed = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT})
    assert [v["volunteer_id"] for v in listed["items"]] == [staying]
    await publish(bus, profile, leaving)  # registered again after leaving: back on the roster
    await eventually(lambda: _listed(bus, sorted([leaving, staying])))


async def _listed(bus: Bus, expected: list[str]) -> bool:
    listed = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT})
    return [v["volunteer_id"] for v in listed["items"]] == expected


async def test_volunteers_are_listed_with_their_load_and_week_and_paged(matcher: Service, bus: Bus) -> None:
    busy = await volunteer(bus, matcher, "quanwai-01", capacity=2, team="泉外志愿服务队")
    others = [await volunteer(bus, matcher, "xinglong-01", skills=["haircut"]) for _ in range(3)]
    request_id = await request(bus)
    offer = await offer_of(bus, request_id)
    assert offer["volunteer_id"] == busy
    await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["code"], "volunteer_id": busy, "accept": True})
    await bus.call(API.MATCHER_COMPLETE, {"assignment_id": offer["code"], "volunteer_id": busy, "hours": "2.5"})
    await offer_of(bus, await request(bus))

    async def by_grid() -> list[tuple[Any, ...]]:
        listed = (await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT, "grid": "quanwai-01"}))["items"]
        return [(v["volunteer_id"], v["load"], v["capacity"], v["offers_this_week"], v["hours_this_week"])
                for v in listed]

    # The week is counted as the offer is chosen, the hours as the work is completed.
    await eventually(lambda: _equals(by_grid(), [(busy, 1, 2, 2, "2.5")]))
    by_team = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT, "team": "泉外志愿服务队"})
    assert [v["volunteer_id"] for v in by_team["items"]] == [busy]
    by_skill = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT, "skill": "haircut", "limit": 2})
    rest = await bus.call(API.MATCHER_VOLUNTEERS, {"district": DISTRICT, "skill": "haircut", "limit": 2,
                                                   "cursor": by_skill["next_cursor"]})
    assert [v["volunteer_id"] for v in by_skill["items"] + rest["items"]] == sorted(others)
    assert rest["next_cursor"] == ""


async def test_assignments_of_an_unknown_volunteer_are_not_found(matcher: Service, bus: Bus) -> None:
    missing = await bus.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": "v-nobody"})
    assert missing["error"]["code"] == "not_found"
    known = await volunteer(bus, matcher, "quanwai-01")
    assert (await bus.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": known}))["assignments"] == []


async def test_a_volunteer_at_the_weekly_limit_is_left_out_as_fatigued(matcher: Service, bus: Bus) -> None:
    tired = await volunteer(bus, matcher, "quanwai-01", capacity=5)
    week = datetime.now(UTC) + timedelta(hours=8)  # Asia/Shanghai, beibei's clock
    year, number, _ = week.isocalendar()
    await matcher.db["volunteers"].update_one({"_id": tired}, {"$set": {"week": f"{year}-W{number:02d}",
                                                                       "week_offers": 0, "week_hours": 15.0}})
    request_id = await request(bus)
    unmatched = (await bus.wait_for("request.unmatched", request_id=request_id))[0]["data"]
    # Counted once, however many stages looked at the volunteer, like every other hard rule.
    assert unmatched["reason_code"] == "fatigue" and unmatched["not_considered"] == {"fatigue": 1}
    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    assert explained["not_considered"] == {"fatigue": 1}
