"""Intake's part of the loop that reaches people, on a real nats-server and nx-27017: places, one person per
phone, short codes, details for the accepted volunteer only, status as the resident sees it, lists."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import API, event_subject, new_event
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentWithdrawn,
    RequestRedispatched,
    RequestUnmatched,
    VolunteerAssigned,
)
from contracts.subjects import STREAM
from linli.client import caught_up
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build
from services.intake.config import IntakeSettings
from tests.conftest import Bus, eventually, stored_events

pytestmark = pytest.mark.service


async def started(settings: BusSettings, **overrides: Any) -> Service:
    service = build(IntakeSettings(bus=settings, announce_after=0.5, **overrides))
    await service.start()
    return service


@pytest.fixture
async def intake(settings: BusSettings) -> AsyncIterator[Service]:
    service = await started(settings)
    yield service
    await service.stop()


def submission(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "description": "厨房水管漏水", "urgency": "routine",
        "resident": {"name": "王秀英", "phone": "13800138000", "address": "泉外园小区3栋2单元401"}, "channel": "kiosk",
    }
    call.update(overrides)
    return call


def volunteer(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"],
                            "skills": ["repair"]}
    call.update(overrides)
    return call


async def submit(bus: Bus, **overrides: Any) -> str:
    reply = await bus.call(API.INTAKE_SUBMIT, submission(**overrides))
    return str(reply["request_id"])


async def register(bus: Bus, **overrides: Any) -> str:
    reply = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer(**overrides))
    return str(reply["volunteer_id"])


async def tell(intake: Service, data: BaseModel, request_id: str, at: datetime | None = None) -> None:
    """What the matcher would publish about a request."""
    await intake.outbox.send([new_event(data, source="linli/matcher", district="beibei", subject=request_id,
                                        correlationid=request_id, time=at)])


async def status_is(bus: Bus, request_id: str, status: str, **fields: Any) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        view = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
        return view if view["status"] == status and all(view.get(k) == v for k, v in fields.items()) else None

    result: dict[str, Any] = await eventually(reached)
    return result


async def accepted_by(intake: Service, bus: Bus, request_id: str, volunteer_id: str, n: int = 1) -> str:
    assignment = f"a-{n}-{uuid.uuid4().hex[:6]}"
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": assignment}
    await tell(intake, AssignmentAccepted(**ids, code=f"AC{n + 1}XYZ"), request_id)
    await status_is(bus, request_id, "accepted", volunteer_id=volunteer_id)
    return assignment


async def completed_by(intake: Service, bus: Bus, request_id: str, volunteer_id: str, assignment: str) -> None:
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": assignment}
    await tell(intake, AssignmentCompleted(**ids, hours="1.5"), request_id)
    await status_is(bus, request_id, "completed", volunteer_id=volunteer_id)


# --- places ---------------------------------------------------------------------------------------------------


async def test_a_request_in_an_unknown_grid_is_refused_with_the_choices_and_changes_nothing(
    intake: Service, bus: Bus
) -> None:
    reply = await bus.call(API.INTAKE_SUBMIT, submission(grid="quanwai-99"))

    error = reply["error"]
    assert error["code"] == "unknown_place"
    assert error["details"][0]["field"] == "grid" and "quanwai-01" in error["details"][0]["choices"]
    assert await intake.db["requests"].count_documents({}) == 0
    assert await intake.db["outbox"].count_documents({}) == 0


async def test_a_registration_in_an_unknown_district_or_grid_is_refused_and_changes_nothing(
    intake: Service, bus: Bus
) -> None:
    district = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer(district="nowhere"))
    grids = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer(grids=["quanwai-01", "moon-01"]))

    assert district["error"]["code"] == "unknown_place" and "beibei" in district["error"]["details"][0]["choices"]
    assert grids["error"]["code"] == "unknown_place"
    assert [d["problem"] for d in grids["error"]["details"]] == ["unknown grid 'moon-01' in 北碚区"]
    assert await intake.db["volunteers"].count_documents({}) == 0
    await asyncio.sleep(0.2)
    assert bus.of_type("volunteer.registered") == []


async def test_places_names_a_districts_communities_and_grids(intake: Service, bus: Bus) -> None:
    one = await bus.call(API.INTAKE_PLACES, {"district": "beibei"})
    every = await bus.call(API.INTAKE_PLACES, {})
    unknown = await bus.call(API.INTAKE_PLACES, {"district": "nowhere"})

    [beibei] = one["districts"]
    assert beibei["name"] == "北碚区" and beibei["timezone"] == "Asia/Shanghai"
    grids = {g["id"]: g for g in beibei["grids"]}
    assert grids["quanwai-02"]["name"] == "泉外第二网格" and grids["quanwai-02"]["community"] == "quanwaiyuan"
    assert {"id": "quanwaiyuan", "name": "泉外社区", "name_en": "Quanwai Community", "street": "tiansheng"} \
        in beibei["communities"]
    assert "quanwai" in [d["id"] for d in every["districts"]]
    assert unknown["error"]["code"] == "unknown_place"


# --- one phone, one person --------------------------------------------------------------------------------------


async def test_a_phone_under_another_name_is_refused_and_the_same_person_gets_the_same_id(
    intake: Service, bus: Bus
) -> None:
    first = await register(bus)
    await bus.wait_for("volunteer.registered", volunteer_id=first)

    other = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer(name="李四"))
    again = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer(skills=["haircut"], capacity=3))

    assert other["error"]["code"] == "phone_registered"
    assert "update_volunteer" in other["error"]["message"] and other["error"]["details"]["volunteer_id"] == first
    assert again == {"volunteer_id": first}
    stored = await intake.db["volunteers"].find_one({"_id": first})
    assert stored and stored["name"] == "袁文" and stored["skills"] == ["repair"] and stored["capacity"] == 1
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "volunteer.registered")) == 1


async def test_an_update_republishes_the_whole_profile_and_an_unknown_volunteer_is_not_found(
    intake: Service, bus: Bus
) -> None:
    volunteer_id = await register(bus, team="便民服务队")
    await bus.wait_for("volunteer.registered", volunteer_id=volunteer_id)

    updated = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {
        "volunteer_id": volunteer_id, "grids": ["quanwai-02"], "capacity": 2,
        "away": [{"start": "2026-12-01", "end": "2026-12-07"}]})
    repeated = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": volunteer_id, "capacity": 2})
    bad_grid = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": volunteer_id, "grids": ["moon-01"]})
    unknown = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": "v-nobody", "capacity": 2})

    assert updated["grids"] == ["quanwai-02"] and updated["capacity"] == 2 and updated["skills"] == ["repair"]
    assert updated["team"] == "便民服务队" and updated["name"] == "袁文" and updated["active"] is True
    assert repeated == updated
    assert bad_grid["error"]["code"] == "unknown_place" and unknown["error"]["code"] == "not_found"
    event = (await bus.wait_for("volunteer.registered", volunteer_id=volunteer_id, capacity=2))[0]
    assert event["data"]["grids"] == ["quanwai-02"] and event["data"]["team"] == "便民服务队"
    assert event["data"]["away"] == [{"start": "2026-12-01", "end": "2026-12-07"}]
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "volunteer.registered")) == 2


async def test_a_volunteer_who_leaves_is_announced_once_and_can_no_longer_be_updated(
    intake: Service, bus: Bus
) -> None:
    volunteer_id = await register(bus)

    left = await bus.call(API.INTAKE_LEAVE, {"volunteer_id": volunteer_id, "reason": "搬家了"})
    again = await bus.call(API.INTAKE_LEAVE, {"volunteer_id": volunteer_id, "reason": "搬家了"})
    update = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": volunteer_id, "capacity": 2})
    unknown = await bus.call(API.INTAKE_LEAVE, {"volunteer_id": "v-nobody"})

    assert left["active"] is False and again == left
    assert update["error"]["code"] == "volunteer_left" and unknown["error"]["code"] == "not_found"
    await bus.wait_for("volunteer.left", volunteer_id=volunteer_id, reason="搬家了")
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "volunteer.left")) == 1

    back = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer())
    assert back == {"volunteer_id": volunteer_id}
    rejoined = await intake.db["volunteers"].find_one({"_id": volunteer_id})
    assert rejoined and rejoined["active"] is True
    await bus.wait_for("volunteer.registered", count=2, volunteer_id=volunteer_id)


# --- short codes ----------------------------------------------------------------------------------------------


async def test_a_request_is_found_by_its_short_code_as_well_as_its_id(intake: Service, bus: Bus) -> None:
    request_id = await submit(bus)
    created = (await bus.wait_for("request.created", request_id=request_id))[0]["data"]
    code = created["code"]

    by_id = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
    by_code = await bus.call(API.INTAKE_STATUS, {"request_id": code.lower()})
    cancelled = await bus.call(API.INTAKE_CANCEL, {"request_id": code, "reason": "不需要了"})

    assert len(code) == 6 and by_id["code"] == code and by_code == by_id
    assert cancelled["request_id"] == request_id and cancelled["status"] == "cancelled"


# --- details for the accepted volunteer only ------------------------------------------------------------------------


async def test_only_the_accepted_volunteer_is_given_the_residents_details(intake: Service, bus: Bus) -> None:
    volunteer_id = await register(bus)
    request_id = await submit(bus, window_start="2026-12-02T01:00:00Z", window_end="2026-12-02T03:00:00Z")
    assignment = await accepted_by(intake, bus, request_id, volunteer_id)

    mine = await bus.call(API.INTAKE_DETAILS, {"assignment_id": assignment, "volunteer_id": volunteer_id})
    by_code = await bus.call(API.INTAKE_DETAILS, {"assignment_id": "ac2-xyz", "volunteer_id": volunteer_id})
    theirs = await bus.call(API.INTAKE_DETAILS, {"assignment_id": assignment, "volunteer_id": "v-someone-else"})
    unknown = await bus.call(API.INTAKE_DETAILS, {"assignment_id": "a-nothing", "volunteer_id": volunteer_id})
    contact = await bus.call(API.INTAKE_CONTACT, {"kind": "resident", "id": request_id})

    assert mine["resident_name"] == "王秀英" and mine["resident_phone"] == "13800138000"
    assert mine["address"] == "泉外园小区3栋2单元401" and mine["place"] == "泉外社区泉外第一网格"
    assert mine["service_name"] == "水电维修" and mine["window_end"] == "2026-12-02T03:00:00Z"
    assert mine["access_until"] is None and by_code == mine
    assert theirs["error"]["code"] == "not_your_assignment" and "13800138000" not in str(theirs)
    assert unknown["error"]["code"] == "not_found"
    assert contact["address"] == "泉外园小区3栋2单元401"


async def test_details_are_no_longer_given_once_the_ttl_after_completion_has_passed(
    settings: BusSettings, bus: Bus
) -> None:
    intake = await started(settings, details_ttl=0.5)
    try:
        volunteer_id = await register(bus)
        request_id = await submit(bus)
        assignment = await accepted_by(intake, bus, request_id, volunteer_id)
        await completed_by(intake, bus, request_id, volunteer_id, assignment)

        async def expired() -> bool:
            reply = await bus.call(API.INTAKE_DETAILS, {"assignment_id": assignment, "volunteer_id": volunteer_id})
            return bool(reply.get("error", {}).get("code") == "details_expired")

        assert await eventually(expired)
    finally:
        await intake.stop()


async def test_a_volunteer_taken_off_the_work_is_no_longer_given_the_details(intake: Service, bus: Bus) -> None:
    volunteer_id = await register(bus)
    request_id = await submit(bus)
    assignment = await accepted_by(intake, bus, request_id, volunteer_id)
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": assignment}
    await tell(intake, AssignmentWithdrawn(**ids, reason="reassigned", by="小刘"), request_id)

    async def refused() -> dict[str, Any] | None:
        reply = await bus.call(API.INTAKE_DETAILS, {"assignment_id": assignment, "volunteer_id": volunteer_id})
        return reply if "error" in reply else None

    assert (await eventually(refused))["error"]["code"] == "details_expired"


# --- status as the resident sees it -----------------------------------------------------------------------------


async def test_the_resident_sees_the_offer_then_who_is_coming_and_when(intake: Service, bus: Bus) -> None:
    volunteer_id = await register(bus)
    request_id = await submit(bus, window_start="2026-12-02T01:00:00Z", window_end="2026-12-02T03:00:00Z")
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": "a-offer"}
    await tell(intake, VolunteerAssigned(**ids, expires_at=datetime.now(UTC) + timedelta(minutes=5)), request_id)
    offered = await status_is(bus, request_id, "offered")
    await tell(intake, AssignmentAccepted(**ids), request_id)
    accepted = await status_is(bus, request_id, "accepted")

    assert offered["volunteer_name"] == ""
    assert accepted["volunteer_name"] == "袁文" and accepted["window_start"] == "2026-12-02T01:00:00Z"
    assert [h["status"] for h in accepted["history"]] == ["submitted", "offered", "accepted"]


async def test_a_redispatched_request_is_open_again_and_its_second_completion_is_rated_again(
    intake: Service, bus: Bus
) -> None:
    first, second = await register(bus), await register(bus, name="赵强", phone="13900139001")
    request_id = await submit(bus)
    done_once = await accepted_by(intake, bus, request_id, first)
    await completed_by(intake, bus, request_id, first, done_once)
    reopened = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 2, "done": False})
    assert reopened["status"] == "reopened"

    await tell(intake, RequestRedispatched(request_id=request_id, operator="小刘", reason="换一位志愿者",
                                           excluded=[first]), request_id)
    again = await status_is(bus, request_id, "submitted")
    done_twice = await accepted_by(intake, bus, request_id, second, n=2)
    await completed_by(intake, bus, request_id, second, done_twice)
    rated = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5})

    assert again["volunteer_id"] is None and again["stars"] is None
    assert again["history"][-1]["note"] == "sent out again by 小刘: 换一位志愿者"
    assert rated["status"] == "rated" and rated["stars"] == 5 and rated["volunteer_id"] == second
    await bus.wait_for("request.rated", request_id=request_id, volunteer_id=second, stars=5)
    await asyncio.sleep(0.3)
    kept = await stored_events(bus.nc, "request.rated")
    assert [(e["data"]["volunteer_id"], e["data"]["stars"]) for e in kept] == [(first, 2), (second, 5)]


async def test_only_a_reopened_request_is_closed_and_the_operator_and_reason_are_kept(
    intake: Service, bus: Bus
) -> None:
    volunteer_id = await register(bus)
    request_id = await submit(bus)
    early = await bus.call(API.INTAKE_CLOSE, {"request_id": request_id, "operator": "小刘", "reason": "无需处理"})
    assignment = await accepted_by(intake, bus, request_id, volunteer_id)
    await completed_by(intake, bus, request_id, volunteer_id, assignment)
    await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 1})

    closed = await bus.call(API.INTAKE_CLOSE, {"request_id": request_id, "operator": "小刘", "reason": "已电话回访"})
    again = await bus.call(API.INTAKE_CLOSE, {"request_id": request_id, "operator": "小刘", "reason": "已电话回访"})

    assert early["error"]["code"] == "not_changeable"
    assert closed["status"] == "closed" and closed["history"][-1]["note"] == "closed by 小刘: 已电话回访"
    assert again == closed
    await bus.wait_for("request.closed", request_id=request_id, operator="小刘", reason="已电话回访")
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "request.closed")) == 1


# --- lists ---------------------------------------------------------------------------------------------------


async def test_requests_are_listed_by_state_and_place_and_paged_with_a_cursor(intake: Service, bus: Bus) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    quanwai = [await submit(bus, grid=grid) for grid in ("quanwai-01", "quanwai-02", "quanwai-03")]
    late = await submit(bus, grid="xinglong-01", window_start=(datetime.now(UTC) - timedelta(hours=3)).isoformat(),
                        window_end=past)
    unmatched = await submit(bus, grid="chaoyang-01")
    await tell(intake, RequestUnmatched(request_id=unmatched, reason="nobody"), unmatched)
    await status_is(bus, unmatched, "unmatched")

    async def listed(**query: Any) -> list[str]:
        reply = await bus.call(API.INTAKE_REQUESTS, query)
        return [item["request_id"] for item in reply["items"]]

    pages, cursor = [], ""
    while True:
        page = await bus.call(API.INTAKE_REQUESTS, {"district": "beibei", "limit": 2, "cursor": cursor})
        pages.append([item["request_id"] for item in page["items"]])
        if not (cursor := page["next_cursor"]):
            break

    assert pages == [quanwai[:2], [quanwai[2], late], [unmatched]]
    assert await listed(state="open", community="quanwaiyuan") == quanwai
    assert await listed(state="open", district="beibei", grid="quanwai-02") == [quanwai[1]]
    assert await listed(state="overdue", district="beibei") == [late]
    assert await listed(state="unmatched") == [unmatched]
    made = [item["created_at"] for item in (await bus.call(API.INTAKE_REQUESTS, {"district": "beibei"}))["items"]]
    assert await listed(district="beibei", since=made[1], until=made[3]) == [quanwai[1], quanwai[2]]
    first = (await bus.call(API.INTAKE_REQUESTS, {"district": "beibei", "limit": 1}))["items"][0]
    assert first["place"] == "泉外社区泉外第一网格" and first["service_name"] == "水电维修" and len(first["code"]) == 6
    nowhere = await bus.call(API.INTAKE_REQUESTS, {"community": "atlantis"})
    assert nowhere["error"]["code"] == "unknown_place"
    bad_cursor = await bus.call(API.INTAKE_REQUESTS, {"cursor": "not-a-cursor"})
    assert bad_cursor["error"]["code"] == "invalid_request"


# --- unknown ids --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("subject", "call"), [
    (API.INTAKE_STATUS, {"request_id": "r-nothing"}),
    (API.INTAKE_STATUS, {"request_id": "ZZZZZZ"}),
    (API.INTAKE_RATE, {"request_id": "r-nothing", "stars": 5}),
    (API.INTAKE_CANCEL, {"request_id": "r-nothing"}),
    (API.INTAKE_CLOSE, {"request_id": "r-nothing", "operator": "小刘", "reason": "x"}),
    (API.INTAKE_CONTACT, {"kind": "resident", "id": "r-nothing"}),
    (API.INTAKE_CONTACT, {"kind": "volunteer", "id": "v-nothing"}),
    (API.INTAKE_DETAILS, {"assignment_id": "a-nothing", "volunteer_id": "v-nothing"}),
    (API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": "v-nothing", "capacity": 2}),
    (API.INTAKE_LEAVE, {"volunteer_id": "v-nothing"}),
    (API.INTAKE_UNPAIR, {"pairing_id": "pr-nothing"}),
])
async def test_an_unknown_id_is_not_found(intake: Service, bus: Bus, subject: str, call: dict[str, Any]) -> None:
    reply = await bus.call(subject, call)
    assert reply["error"]["code"] == "not_found"


# --- with the real matcher ------------------------------------------------------------------------------------


async def test_through_the_matcher_the_resident_sees_the_offer_and_only_the_volunteer_who_accepts_gets_details(
    intake: Service, settings: BusSettings, bus: Bus
) -> None:
    from services.matcher.app import build as build_matcher
    from services.matcher.config import MatcherSettings

    matcher = build_matcher(MatcherSettings(bus=settings, offer_ttl=60, sweep_interval=0.2, lease=5))
    await matcher.start()
    try:
        volunteer_id = await register(bus)
        await eventually(lambda: matcher.db["volunteers"].find_one({"_id": volunteer_id}))
        request_id = await submit(bus)
        offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
        await status_is(bus, request_id, "offered")
        before = await bus.call(API.INTAKE_DETAILS, {"assignment_id": offer["assignment_id"],
                                                      "volunteer_id": volunteer_id})

        await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["assignment_id"], "volunteer_id": volunteer_id,
                                             "accept": True})
        coming = await status_is(bus, request_id, "accepted", volunteer_name="袁文")

        async def given() -> dict[str, Any] | None:
            reply = await bus.call(API.INTAKE_DETAILS, {"assignment_id": offer["assignment_id"],
                                                         "volunteer_id": volunteer_id})
            return reply if "error" not in reply else None

        details = await eventually(given)
        assert before["error"]["code"] == "not_found"  # an offer is not yet the work
        assert [h["status"] for h in coming["history"]] == ["submitted", "offered", "accepted"]
        assert details["address"] == "泉外园小区3栋2单元401" and details["code"] == coming["code"]
    finally:
        await matcher.stop()


# --- what a redelivery or an earlier version leaves ------------------------------------------------------------


async def test_a_redelivered_event_changes_nothing_and_leaves_one_line_in_the_history(
    intake: Service, bus: Bus
) -> None:
    volunteer_id = await register(bus)
    request_id = await submit(bus)
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": "a-again"}
    events = [new_event(data, source="linli/matcher", district="beibei", subject=request_id,
                        correlationid=request_id)
              for data in (VolunteerAssigned(**ids, expires_at=datetime.now(UTC) + timedelta(minutes=5)),
                           AssignmentAccepted(**ids), AssignmentCompleted(**ids, hours="2"))]
    for event, status in zip(events, ["offered", "accepted", "completed"], strict=True):
        await intake.outbox.send([event])
        await status_is(bus, request_id, status)
    before = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
    stored = await intake.db["requests"].find_one({"_id": request_id})

    js = bus.nc.jetstream()  # each again under a new message id, which JetStream does not take for a duplicate
    for event in events:
        await js.publish(event_subject(event.short_type, "beibei"), event.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": f"again-{event.id}"}, stream=STREAM)
    for event_type in ("volunteer.assigned", "assignment.accepted", "assignment.completed"):
        await caught_up(bus.nc, "intake", event_type)

    after = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
    assert after == before
    assert [line["status"] for line in after["history"]] == ["submitted", "offered", "accepted", "completed"]
    assert after["history"][2]["note"] == "袁文 is coming" and after["hours"] == "2"
    again = await intake.db["requests"].find_one({"_id": request_id})
    assert stored is not None and again is not None and again["version"] == stored["version"]


async def test_a_request_stored_by_an_earlier_version_shows_its_history_stored_apart_and_moves_on(
    intake: Service, bus: Bus
) -> None:
    request_id = await submit(bus)
    # As the version before kept it: no lines in the request, one row per line in status_changes.
    await intake.db["requests"].update_one({"_id": request_id}, {"$unset": {"history": ""}})
    await intake.db["status_changes"].insert_many([
        {"_id": f"{request_id}:submitted:0", "request_id": request_id, "status": "submitted",
         "at": "2026-11-30T08:00:00+00:00", "note": "received by phone", "seq": 1.0},
        {"_id": f"{request_id}:e-old", "request_id": request_id, "status": "unmatched",
         "at": "2026-11-30T08:01:00+00:00", "note": "no volunteer found yet", "seq": 2.0},
    ])
    ids = {"request_id": request_id, "volunteer_id": "v-earlier", "assignment_id": "a-earlier"}
    await tell(intake, AssignmentAccepted(**ids), request_id)

    view = await status_is(bus, request_id, "accepted")
    assert [(line["status"], line["note"]) for line in view["history"]] == [
        ("submitted", "received by phone"), ("unmatched", "no volunteer found yet"),
        ("accepted", "a volunteer is coming")]


async def test_a_volunteer_who_changes_their_name_is_named_so_in_the_work_accepted_after(
    intake: Service, bus: Bus
) -> None:
    volunteer_id = await register(bus)
    first, second = await submit(bus), await submit(bus)
    await accepted_by(intake, bus, first, volunteer_id)
    renamed = await bus.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": volunteer_id, "name": "袁文华"})
    await accepted_by(intake, bus, second, volunteer_id, n=2)

    assert renamed["name"] == "袁文华"
    before = await bus.call(API.INTAKE_STATUS, {"request_id": first})
    after = await bus.call(API.INTAKE_STATUS, {"request_id": second})
    assert (before["volunteer_name"], before["history"][-1]["note"]) == ("袁文", "袁文 is coming")
    assert (after["volunteer_name"], after["history"][-1]["note"]) == ("袁文华", "袁文华 is coming")
