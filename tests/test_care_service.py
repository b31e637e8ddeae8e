"""Care on a real nats-server and nx-27017, with a clock the tests move: plans, check-ins, the watchdog's
escalation chain (one per missed deadline, whatever the replicas and restarts) and children's safeguarding."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import API, new_event
from contracts.events import AssignmentCompleted
from contracts.subjects import event_subject
from linli.client import caught_up
from services.care.app import assemble
from services.care.config import CareSettings
from services.care.watch import Care
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, stored_events

pytestmark = pytest.mark.service

# 08:00 in Beibei (UTC+8) on a Tuesday; the daily visit is due at 18:00 local, 10:00 UTC.
START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
OPERATOR = {"person_id": "op-1", "role": "operator", "district": "beibei"}


@dataclass
class MovedClock:
    at: datetime = START

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@dataclass
class Replica:
    service: Service
    care: Care


async def replica(settings: BusSettings, clock: MovedClock, **overrides: Any) -> Replica:
    # The watchdog's own loop waits an hour between passes: each test takes the passes itself.
    care_settings = CareSettings(bus=settings, watch_interval=3600.0, **overrides)
    service, care = assemble(care_settings, clock)
    await service.start()
    return Replica(service, care)


@pytest.fixture
def clock() -> MovedClock:
    return MovedClock()


@pytest.fixture
async def care(settings: BusSettings, clock: MovedClock) -> AsyncIterator[Replica]:
    running = await replica(settings, clock)
    yield running
    await running.service.stop()


def elderly_plan(**overrides: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "idempotency_key": f"plan-{uuid.uuid4()}", "reader": OPERATOR, "district": "beibei",
        "community": "quanwaiyuan", "grid": "quanwai-01", "resident_name": "张桂兰", "resident_phone": "13800138011",
        "address": "泉外园小区5栋101", "resident_kind": "elderly_alone", "health_notes": "高血压，去年轻度中风",
        "medicines": ["硝苯地平"], "family_phones": ["13900000001"],
        "group": [
            {"person_id": "neighbour-1", "name": "对门李阿姨", "role": "neighbour"},
            {"person_id": "worker-1", "name": "社区赵姐", "role": "community_worker"},
            {"person_id": "grid-1", "name": "网格员王哥", "role": "grid_worker"},
        ],
        "duties": [{"duty_id": "visit", "kind": "visit", "rhythm": "daily", "due": "18:00", "holder": "neighbour-1"}],
        "reason": "独居高龄",
    }
    plan.update(overrides)
    return plan


async def create(bus: Bus, **overrides: Any) -> dict[str, Any]:
    reply = await bus.call(API.CARE_CREATE_PLAN, elderly_plan(**overrides))
    assert "plan_id" in reply, reply
    return reply


async def check_in(bus: Bus, plan_id: str, by: str, outcome: str = "fine", mode: str = "visit",
                   duty: str = "visit") -> dict[str, Any]:
    return await bus.call(API.CARE_CHECK_IN, {"idempotency_key": f"ci-{uuid.uuid4()}", "plan_id": plan_id,
                                              "duty_id": duty, "by": by, "mode": mode, "outcome": outcome})


def steps(bus: Bus) -> list[tuple[int, str, list[str]]]:
    return [(e["data"]["step"], e["data"]["level"], e["data"]["recipients"]) for e in bus.of_type("care.escalated")]


async def settled(bus: Bus) -> None:
    await asyncio.sleep(0.3)  # events published by a pass reach the watcher's subscription


async def test_a_missed_daily_visit_walks_the_whole_chain_and_a_check_in_stops_it(
        bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE - timedelta(seconds=1)
    assert await care.care.watch_once() == 0  # not yet due

    clock.at = DUE + timedelta(seconds=5)
    assert await care.care.watch_once() == 1
    missed = await bus.wait_for("care.duty.missed")
    assert missed[0]["data"]["alert"] == "missed" and missed[0]["data"]["plan_id"] == plan["plan_id"]
    await bus.wait_for("care.escalated", step=1)
    for minutes in (30, 60, 120):
        clock.advance(minutes=minutes)
        assert await care.care.watch_once() == 1
    await bus.wait_for("care.escalated", count=4)
    assert steps(bus) == [
        (1, "holder", ["person:neighbour-1"]),
        (2, "group", ["person:worker-1"]),
        (3, "grid_worker", ["person:grid-1"]),
        (4, "operators", ["operators"]),
    ]
    clock.advance(hours=3)
    assert await care.care.watch_once() == 0  # the last step was the operators'

    reply = await check_in(bus, plan["plan_id"], "worker-1")
    assert reply["stopped_escalation"] is True and reply["on_time"] is False
    stopped = await bus.wait_for("care.escalation.stopped")
    assert stopped[0]["data"]["by"] == "worker-1" and stopped[0]["data"]["step"] == 4


async def test_a_check_in_mid_chain_stops_it_before_the_next_step(bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE + timedelta(seconds=1)
    await care.care.watch_once()
    clock.advance(minutes=30)
    await care.care.watch_once()
    await bus.wait_for("care.escalated", step=2)

    await check_in(bus, plan["plan_id"], "neighbour-1", mode="call")
    await bus.wait_for("care.escalation.stopped")
    clock.advance(hours=5)
    await care.care.watch_once()  # tomorrow's visit is not due yet
    await settled(bus)
    assert [s for s, _, _ in steps(bus)] == [1, 2]


async def test_a_visit_on_time_raises_nothing_and_the_next_day_is_watched(
        bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE - timedelta(hours=2)
    reply = await check_in(bus, plan["plan_id"], "neighbour-1")
    assert reply["on_time"] is True and reply["stopped_escalation"] is False
    clock.at = DUE + timedelta(hours=1)
    assert await care.care.watch_once() == 0
    clock.at = DUE + timedelta(days=1, seconds=1)  # the next day's deadline, not checked in
    assert await care.care.watch_once() == 1
    missed = await bus.wait_for("care.duty.missed")
    assert missed[0]["data"]["due_at"].startswith("2026-12-02T10:00")


async def test_not_at_home_on_a_visit_starts_the_escalation_at_once(bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE - timedelta(hours=4)
    reply = await check_in(bus, plan["plan_id"], "neighbour-1", outcome="not_home")
    assert reply["escalation_started"] is True
    missed = await bus.wait_for("care.duty.missed")
    assert missed[0]["data"]["alert"] == "not_home"
    clock.advance(minutes=30)
    assert await care.care.watch_once() == 1
    await bus.wait_for("care.escalated", step=2, alert="not_home")
    await check_in(bus, plan["plan_id"], "grid-1", mode="visit", outcome="fine")
    await bus.wait_for("care.escalation.stopped")


async def test_two_watchdog_replicas_take_each_step_exactly_once(
        bus: Bus, settings: BusSettings, clock: MovedClock) -> None:
    first, second = await replica(settings, clock), await replica(settings, clock)
    try:
        await create(bus)
        clock.at = DUE + timedelta(seconds=1)
        for minutes in (0, 30, 60, 120):
            clock.advance(minutes=minutes)
            taken = await asyncio.gather(first.care.watch_once(), second.care.watch_once())
            assert sum(taken) == 1
        await bus.wait_for("care.escalated", count=4)
        await settled(bus)
        assert [s for s, _, _ in steps(bus)] == [1, 2, 3, 4]
        assert len(bus.of_type("care.duty.missed")) == 1
        assert len(await stored_events(bus.nc, "care.escalated")) == 4
    finally:
        await first.service.stop()
        await second.service.stop()


async def test_a_watchdog_stopped_mid_chain_resumes_it_exactly_once_and_catches_what_it_missed(
        bus: Bus, settings: BusSettings, clock: MovedClock) -> None:
    first = await replica(settings, clock)
    plan = await create(bus)
    clock.at = DUE + timedelta(seconds=1)
    await first.care.watch_once()
    await bus.wait_for("care.escalated", step=1)
    await first.service.stop()

    clock.advance(minutes=45)  # step 2 fell due while no watchdog ran
    restarted = await replica(settings, clock)
    try:
        assert await restarted.care.watch_once() == 1
        assert await restarted.care.watch_once() == 0
        await bus.wait_for("care.escalated", step=2)

        await check_in(bus, plan["plan_id"], "worker-1")
        await restarted.service.stop()
        clock.at = DUE + timedelta(days=1, hours=1)  # the next day's visit is missed with no watchdog running
        restarted = await replica(settings, clock)
        assert await restarted.care.watch_once() == 2  # its reminder and, an hour late, the group's step
        missed = await bus.wait_for("care.duty.missed", count=2)
        assert missed[1]["data"]["due_at"].startswith("2026-12-02T10:00")
        await settled(bus)
        assert [s for s, _, _ in steps(bus)] == [1, 2, 1, 2]
    finally:
        await restarted.service.stop()


async def test_a_step_saved_but_not_published_is_published_by_the_next_pass(
        bus: Bus, care: Replica, clock: MovedClock) -> None:
    await create(bus)
    clock.at = DUE + timedelta(seconds=1)
    await care.care.watch_once()
    await bus.wait_for("care.escalated", step=1)
    # As a crash between saving the step and publishing it leaves it.
    await care.care.store.occurrences.update_many({"step": 1}, {"$set": {"unsent": True, "unsent_at": 0.0}})
    await care.care.watch_once()
    assert await care.care.store.unsent() == []
    await bus.wait_for("care.escalated", step=1, count=2)  # published again under the same id
    stored = await stored_events(bus.nc, "care.escalated")
    assert len(stored) == 1  # JetStream keeps one


async def test_unwell_raises_an_urgent_request_offered_to_volunteers(
        bus: Bus, settings: BusSettings, care: Replica, clock: MovedClock) -> None:
    intake = build_intake(IntakeSettings(bus=settings))
    matcher = build_matcher(MatcherSettings(bus=settings, offer_ttl=3600, sweep_interval=0.5))
    await intake.start()
    await matcher.start()
    try:
        volunteer = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"],
            "skills": ["elderly"]})
        await bus.wait_for("volunteer.registered")
        plan = await create(bus)
        reply = await check_in(bus, plan["plan_id"], "neighbour-1", outcome="unwell")
        assert reply["request_id"]
        created = await bus.wait_for("request.created", request_id=reply["request_id"])
        assert created[0]["data"]["urgency"] == "urgent"
        offer = await bus.wait_for("volunteer.assigned", request_id=reply["request_id"])
        assert offer[0]["data"]["volunteer_id"] == volunteer["volunteer_id"]
        # The same check-in again raises no second request.
        again = await bus.call(API.CARE_CHECK_IN, {"idempotency_key": "repeat-unwell-1", "plan_id": plan["plan_id"],
                                                   "duty_id": "visit", "by": "neighbour-1", "mode": "visit",
                                                   "outcome": "unwell"})
        repeat = await bus.call(API.CARE_CHECK_IN, {"idempotency_key": "repeat-unwell-1", "plan_id": plan["plan_id"],
                                                    "duty_id": "visit", "by": "neighbour-1", "mode": "visit",
                                                    "outcome": "unwell"})
        assert again["request_id"] == repeat["request_id"]
    finally:
        await matcher.stop()
        await intake.stop()


def child_plan(**overrides: Any) -> dict[str, Any]:
    return elderly_plan(
        resident_name="小明", resident_phone="13800138022", resident_kind="child", health_notes="",
        medicines=[], family_phones=[],
        group=[{"person_id": "parent-1", "name": "爱心家长刘", "role": "caring_parent"},
               {"person_id": "director-1", "name": "儿童主任陈", "role": "director"}],
        duties=[], reason="困境儿童结对", **overrides)


async def test_fourteen_days_without_contact_alert_the_childrens_director(
        bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await bus.call(API.CARE_CREATE_PLAN, child_plan())
    clock.advance(days=3)  # the quiet days count from the last contact, not from the plan
    logged = await bus.call(API.CARE_LOG_CONTACT, {
        "idempotency_key": f"contact-{uuid.uuid4()}", "plan_id": plan["plan_id"], "by": "parent-1",
        "where": "家中", "what": "辅导作业，聊了学校的事"})
    assert logged["contact_id"]
    clock.advance(days=13, hours=23)
    assert await care.care.watch_once() == 0
    director = {"person_id": "director-1", "role": "director", "district": "beibei"}
    assert (await bus.call(API.CARE_SAFEGUARD_QUEUE, {"reader": director}))["items"] == []

    clock.advance(hours=2)
    assert await care.care.watch_once() == 1
    assert await care.care.watch_once() == 0
    alert = await bus.wait_for("care.contact.overdue")
    assert alert[0]["data"]["director"] == "person:director-1" and alert[0]["data"]["days"] == 14
    queue = await bus.call(API.CARE_SAFEGUARD_QUEUE, {"reader": director})
    assert [(i["plan_id"], i["caring_parent"], i["days"]) for i in queue["items"]] == [(plan["plan_id"], "parent-1", 14)]

    await bus.call(API.CARE_LOG_CONTACT, {"idempotency_key": f"contact-{uuid.uuid4()}", "plan_id": plan["plan_id"],
                                          "by": "parent-1", "where": "学校门口", "what": "接放学"})
    assert (await bus.call(API.CARE_SAFEGUARD_QUEUE, {"reader": director}))["items"] == []


async def test_cover_for_an_absent_caring_parent_is_recorded_and_may_log_contacts(bus: Bus, care: Replica) -> None:
    plan = await bus.call(API.CARE_CREATE_PLAN, child_plan())
    director = {"person_id": "director-1", "role": "director", "district": "beibei"}
    covered = await bus.call(API.CARE_ASSIGN_COVER, {
        "plan_id": plan["plan_id"], "reader": director, "for_person": "parent-1",
        "cover": {"person_id": "parent-2", "name": "爱心家长周", "role": "caring_parent"},
        "start": "2026-12-01", "end": "2026-12-20", "reason": "刘外出务工"})
    assert covered["covers"][0]["person_id"] == "parent-2" and covered["history"][-1]["action"] == "cover"
    logged = await bus.call(API.CARE_LOG_CONTACT, {"idempotency_key": f"contact-{uuid.uuid4()}",
                                                   "plan_id": plan["plan_id"], "by": "parent-2", "where": "家中",
                                                   "what": "家访"})
    assert "contact_id" in logged


async def test_only_the_group_the_director_and_operators_of_the_district_read_a_plan(bus: Bus, care: Replica) -> None:
    plan = await create(bus)
    member = await bus.call(API.CARE_PLAN, {"plan_id": plan["plan_id"],
                                            "reader": {"person_id": "neighbour-1", "role": "member", "district": "beibei"}})
    assert member["health_notes"] == "高血压，去年轻度中风"
    stranger = await bus.call(API.CARE_PLAN, {"plan_id": plan["plan_id"],
                                              "reader": {"person_id": "someone", "role": "member", "district": "beibei"}})
    assert stranger["error"]["code"] == "forbidden"
    elsewhere = await bus.call(API.CARE_PLAN, {"plan_id": plan["plan_id"],
                                               "reader": {"person_id": "op-9", "role": "operator", "district": "tieling"}})
    assert elsewhere["error"]["code"] == "forbidden"


async def test_events_carry_pseudonyms_and_never_notes_or_phones(bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE + timedelta(seconds=1)
    await care.care.watch_once()
    await bus.wait_for("care.escalated")
    text = json.dumps(bus.events, ensure_ascii=False)
    for secret in ("高血压", "硝苯地平", "13900000001", "13800138011", "张桂兰", "泉外园小区5栋101"):
        assert secret not in text
    assert plan["resident_ref"] in text


async def test_a_refused_check_in_changes_nothing(bus: Bus, care: Replica) -> None:
    plan = await create(bus)
    before = await care.care.store.checkins.count_documents({})
    refused = await check_in(bus, plan["plan_id"], "someone-else")
    assert refused["error"]["code"] == "not_in_group"
    assert await care.care.store.checkins.count_documents({}) == before


async def test_a_month_report_counts_on_time_late_and_missed(bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    clock.at = DUE - timedelta(hours=1)
    await check_in(bus, plan["plan_id"], "neighbour-1")  # day 1 on time
    clock.at = DUE + timedelta(days=1, seconds=1)
    await care.care.watch_once()  # day 2 missed
    clock.advance(hours=1)
    await check_in(bus, plan["plan_id"], "grid-1")  # day 2 late, ends its chain
    clock.at = DUE + timedelta(days=2, seconds=1)
    await care.care.watch_once()  # day 3 missed, still open
    report = await bus.call(API.CARE_REPORT, {"reader": OPERATOR, "community": "quanwaiyuan", "month": "2026-12"})
    assert (report["due"], report["on_time"], report["late"], report["missed"], report["escalations"]) == (3, 1, 1, 1, 2)
    assert report["endings"] == {"checked_in": 1, "open": 1, "plan_ended": 0}
    assert report["residents"][0]["last_contact"] is not None
    assert report["csv"].splitlines()[1].split(",")[2:7] == ["3", "1", "1", "1", "2"]



async def test_a_changed_duty_is_watched_at_its_new_time_and_an_ended_plan_not_at_all(
        bus: Bus, care: Replica, clock: MovedClock) -> None:
    plan = await create(bus)
    changed = await bus.call(API.CARE_CHANGE_PLAN, {
        "plan_id": plan["plan_id"], "reader": OPERATOR, "reason": "邻居改为晚上来",
        "duties": [{"duty_id": "visit", "kind": "visit", "rhythm": "daily", "due": "20:00", "holder": "neighbour-1"}]})
    assert changed["duties"][0]["due"] == "20:00" and changed["history"][-1]["reason"] == "邻居改为晚上来"
    clock.at = DUE + timedelta(seconds=1)  # 18:00 local: no longer a deadline
    assert await care.care.watch_once() == 0
    clock.at = DUE + timedelta(hours=2, seconds=1)
    assert await care.care.watch_once() == 1

    ended = await bus.call(API.CARE_END_PLAN, {"plan_id": plan["plan_id"], "reader": OPERATOR, "reason": "搬去女儿家"})
    assert ended["active"] is False
    clock.advance(days=2)
    assert await care.care.watch_once() == 0
    refused = await check_in(bus, plan["plan_id"], "neighbour-1")
    assert refused["error"]["code"] == "plan_ended"


async def test_an_urgent_request_intake_did_not_take_is_raised_by_the_next_pass(
        bus: Bus, settings: BusSettings, care: Replica) -> None:
    plan = await create(bus)
    reply = await check_in(bus, plan["plan_id"], "neighbour-1", outcome="needs_help")  # no intake running
    assert reply["request_id"] is None and reply["checkin_id"]
    intake = build_intake(IntakeSettings(bus=settings))
    await intake.start()
    try:
        await care.care.watch_once()
        created = await bus.wait_for("request.created")
        assert created[0]["data"]["urgency"] == "urgent"
        assert await care.care.store.pending_requests() == []
        await care.care.watch_once()
        await settled(bus)
        assert len(bus.of_type("request.created")) == 1
    finally:
        await intake.stop()


async def test_the_completion_of_an_urgent_request_is_recorded_once_and_an_older_repeat_moves_nothing_back(
        bus: Bus, care: Replica) -> None:
    await care.care.store.add_checkin({"_id": "ci-raised", "plan_id": "cp-1", "request_id": "r-care-raised"})
    first = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)

    def completion(at: datetime) -> Any:
        return new_event(AssignmentCompleted(request_id="r-care-raised", volunteer_id="v-1", assignment_id="a-1",
                                             hours="1"), source="linli/matcher", district="beibei",
                         subject="r-care-raised", correlationid="r-care-raised", time=at)

    js = bus.nc.jetstream()
    earlier, later = completion(first), completion(first + timedelta(days=2))  # reopened, then done again
    # The later completion, then the earlier one redelivered past the stream's de-duplication, twice.
    for n, event in enumerate((earlier, later, earlier, earlier)):
        await js.publish(event_subject("assignment.completed", "beibei"), envelope_json(event),
                         headers={"Nats-Msg-Id": f"{event.id}-{n}"})
        await caught_up(bus.nc, "care", "assignment.completed")
    checkin = await care.care.store.checkin("ci-raised")

    assert checkin is not None
    assert datetime.fromisoformat(checkin["request_done_at"]) == first + timedelta(days=2)


async def test_the_stored_cursor_only_moves_on_whichever_replica_stores_it_last(
        bus: Bus, settings: BusSettings, clock: MovedClock) -> None:
    ahead, behind = await replica(settings, clock), await replica(settings, clock)
    try:
        await behind.care.watch_once()
        clock.advance(minutes=5)
        await ahead.care.watch_once()
        clock.advance(minutes=-3)  # a replica whose pass began earlier stores its cursor later
        await behind.care.watch_once()
        stored = await behind.care.store.cursor()
    finally:
        await ahead.service.stop()
        await behind.service.stop()

    assert stored == "20261201000500"
