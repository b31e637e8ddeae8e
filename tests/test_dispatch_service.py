"""Staged dispatch, urgent fan-out, pairings, needs, explanations and operator control, on the real servers."""

import asyncio
import uuid
from collections.abc import AsyncIterator
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
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service
DISTRICT = "beibei"  # its grid hierarchy ships in services/common/places.yaml


@pytest.fixture
async def services(settings: BusSettings) -> AsyncIterator[tuple[Service, Service]]:
    intake = build_intake(IntakeSettings(bus=settings))
    matcher = build_matcher(MatcherSettings(bus=settings, offer_ttl=60, sweep_interval=0.2, lease=5))
    await intake.start()
    await matcher.start()
    yield intake, matcher
    await matcher.stop()
    await intake.stop()


async def register(bus: Bus, matcher: Service, phone: str, grid: str, skills: list[str], **extra: Any) -> str:
    reply = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": f"志愿者{phone[-3:]}", "phone": phone, "district": DISTRICT, "grids": [grid], "skills": skills,
        **extra,
    })
    volunteer_id: str = reply["volunteer_id"]
    await eventually(lambda: matcher.db["volunteers"].find_one({"_id": volunteer_id}))
    return volunteer_id


async def submit(bus: Bus, grid: str = "quanwai-01", service: str = "repair.plumbing", urgency: str = "routine",
                 phone: str = "13800000001", **extra: Any) -> dict[str, Any]:
    return await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": str(uuid.uuid4()), "district": DISTRICT, "grid": grid, "service": service,
        "urgency": urgency, "resident": {"name": "王秀英", "phone": phone}, **extra,
    })


async def decline(bus: Bus, offer: dict[str, Any], reason: str = "") -> dict[str, Any]:
    return await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": offer["volunteer_id"], "accept": False,
        "reason": reason,
    })


async def test_a_routine_request_widens_stage_by_stage_then_reaches_an_operator(
    services: tuple[Service, Service], bus: Bus
) -> None:
    _, matcher = services
    neighbour = await register(bus, matcher, "13900000101", "quanwai-02", ["repair"])
    same_street = await register(bus, matcher, "13900000102", "xinglong-01", ["repair"])
    elsewhere = await register(bus, matcher, "13900000103", "chaoyang-01", ["repair"])
    request_id = (await submit(bus))["request_id"]

    expected = [(neighbour, "nearby", 1), (same_street, "wider", 3), (elsewhere, "wider", 4)]
    for n, (volunteer, stage, tier) in enumerate(expected, start=1):
        offer = (await bus.wait_for("volunteer.assigned", request_id=request_id, count=n))[n - 1]["data"]
        assert (offer["volunteer_id"], offer["stage"]) == (volunteer, stage)
        assert offer["explanation"]["components"]["place"]["tier"] == tier
        await decline(bus, offer, reason=f"忙{n}")

    unmatched = (await bus.wait_for("request.unmatched", request_id=request_id))[0]["data"]
    assert {c["volunteer_id"]: c["why"] for c in unmatched["candidates"]} == {
        neighbour: "declined: 忙1", same_street: "declined: 忙2", elsewhere: "declined: 忙3",
    }
    assert "declined or did not answer" in unmatched["reason"]


async def test_an_urgent_request_fans_out_and_exactly_one_volunteer_wins(
    services: tuple[Service, Service], bus: Bus
) -> None:
    _, matcher = services
    volunteers = [await register(bus, matcher, f"1390000020{i}", "quanwai-01", ["elderly"]) for i in range(4)]
    request_id = (await submit(bus, service="elderly.escort", urgency="urgent"))["request_id"]

    offers = [e["data"] for e in await bus.wait_for("volunteer.assigned", request_id=request_id, count=3)]
    assert {o["stage"] for o in offers} == {"fan-out"} and len({o["volunteer_id"] for o in offers}) == 3
    assert set(o["volunteer_id"] for o in offers) <= set(volunteers)

    answers = await asyncio.gather(*[
        bus.call(API.MATCHER_RESPOND, {"assignment_id": o["assignment_id"], "volunteer_id": o["volunteer_id"],
                                       "accept": True})
        for o in offers[:2]
    ])
    winners = [a for a in answers if a.get("status") == "accepted"]
    losers = [a for a in answers if "error" in a]
    assert len(winners) == 1 and len(losers) == 1 and losers[0]["error"]["code"] == "taken"

    withdrawn = await bus.wait_for("assignment.withdrawn", request_id=request_id, count=2)
    assert {w["data"]["assignment_id"] for w in withdrawn} == {o["assignment_id"] for o in offers} - {
        winners[0]["assignment_id"]}
    assert (await MatcherStore(matcher.db).held()) == {
        next(o["volunteer_id"] for o in offers if o["assignment_id"] == winners[0]["assignment_id"]):
            [winners[0]["assignment_id"]]
    }


async def test_a_paired_volunteer_is_asked_first_until_the_pairing_ends(
    services: tuple[Service, Service], bus: Bus
) -> None:
    _, matcher = services
    nearby = await register(bus, matcher, "13900000301", "quanwai-01", ["tutoring"])
    caring_parent = await register(bus, matcher, "13900000302", "chaoyang-01", ["elderly"])
    pairing = await bus.call(API.INTAKE_PAIR, {"district": DISTRICT, "resident_phone": "13600000009",
                                               "volunteer_id": caring_parent, "kind": "caring-parent"})
    assert pairing["active"] is True
    await bus.wait_for("pairing.created", pairing_id=pairing["pairing_id"])
    await eventually(lambda: matcher.db["pairings"].find_one({"_id": pairing["pairing_id"]}))

    first = (await submit(bus, service="tutoring.homework", phone="13600000009"))["request_id"]
    offer = (await bus.wait_for("volunteer.assigned", request_id=first))[0]["data"]
    assert (offer["volunteer_id"], offer["stage"]) == (caring_parent, "pairing")
    await decline(bus, offer)  # the pairing is asked first, not only
    assert (await bus.wait_for("volunteer.assigned", request_id=first, count=2))[1]["data"]["volunteer_id"] == nearby

    ended = await bus.call(API.INTAKE_UNPAIR, {"pairing_id": pairing["pairing_id"], "reason": "孩子已成年"})
    assert ended["active"] is False
    await bus.wait_for("pairing.ended", pairing_id=pairing["pairing_id"])
    await eventually(lambda: matcher.db["pairings"].find_one({"_id": pairing["pairing_id"], "active": False}))
    other = await register(bus, matcher, "13900000303", "quanwai-01", ["tutoring"])
    second = (await submit(bus, service="tutoring.reading", phone="13600000009"))["request_id"]
    assert (await bus.wait_for("volunteer.assigned", request_id=second))[0]["data"]["volunteer_id"] == other


async def test_stated_needs_are_hard_constraints(services: tuple[Service, Service], bus: Bus) -> None:
    _, matcher = services
    await register(bus, matcher, "13900000401", "quanwai-01", ["repair"])
    signer = await register(bus, matcher, "13900000402", "quanwai-03", ["repair"], attributes=["sign-language"])
    request_id = (await submit(bus, needs=["sign-language"]))["request_id"]
    assert (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]["volunteer_id"] == signer

    bad = await submit(bus, needs=["telepathy"])
    assert bad["error"]["code"] == "unknown_need"


async def test_explain_shows_why_each_volunteer_was_chosen(services: tuple[Service, Service], bus: Bus) -> None:
    _, matcher = services
    near = await register(bus, matcher, "13900000501", "quanwai-01", ["repair"])
    await register(bus, matcher, "13900000502", "quanwai-02", ["repair"])
    await register(bus, matcher, "13900000503", "quanwai-01", ["haircut"])
    request_id = (await submit(bus))["request_id"]
    await bus.wait_for("volunteer.assigned", request_id=request_id)

    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    offer = explained["offers"][0]
    assert offer["volunteer_id"] == near and offer["explanation"]["rank"] == 1
    assert offer["explanation"]["considered"] == 2
    assert explained["not_considered"] == {"skill": 1}
    parts = offer["explanation"]["components"]
    assert set(parts) == {"place", "load", "fairness", "continuity", "rating"}
    assert sum(p["points"] for p in parts.values()) == pytest.approx(offer["explanation"]["score"], abs=1e-3)
    missing = await bus.call(API.MATCHER_EXPLAIN, {"request_id": "r-nope"})
    assert missing["error"]["code"] == "not_found"


async def test_operators_assign_by_hand_and_reassign_and_every_action_is_recorded(
    services: tuple[Service, Service], bus: Bus
) -> None:
    _, matcher = services
    first = await register(bus, matcher, "13900000601", "quanwai-01", ["repair"])
    chosen = await register(bus, matcher, "13900000602", "chaoyang-01", ["repair"])
    third = await register(bus, matcher, "13900000603", "quanwai-02", ["repair"])
    request_id = (await submit(bus))["request_id"]
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
    assert offer["volunteer_id"] == first

    refused = await bus.call(API.MATCHER_ASSIGN, {"request_id": request_id, "volunteer_id": chosen,
                                                  "operator": "网格员小李", "reason": ""})
    assert refused["error"]["code"] == "invalid_request"
    by_hand = await bus.call(API.MATCHER_ASSIGN, {"request_id": request_id, "volunteer_id": chosen,
                                                  "operator": "网格员小李", "reason": "老人点名要他", "confirmed": True})
    assert by_hand["status"] == "accepted"
    withdrawn = (await bus.wait_for("assignment.withdrawn", request_id=request_id))[0]["data"]
    assert withdrawn["assignment_id"] == offer["assignment_id"] and withdrawn["by"] == "网格员小李"
    await bus.wait_for("assignment.accepted", request_id=request_id, volunteer_id=chosen)
    gone = await bus.call(API.MATCHER_RESPOND, {"assignment_id": offer["assignment_id"], "volunteer_id": first,
                                                "accept": True})
    assert gone["error"]["code"] == "offer_closed"

    again = await bus.call(API.MATCHER_REASSIGN, {"request_id": request_id, "operator": "社区工作者老王",
                                                  "reason": "他临时住院了"})
    assert again["status"] == "offered"
    latest = (await bus.wait_for("volunteer.assigned", request_id=request_id, count=3))[2]["data"]
    assert latest["volunteer_id"] == third  # the two already involved are not asked again

    explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    actions = [(a["action"], a["operator"], a["reason"]) for a in explained["operator_actions"]]
    assert actions == [("assigned by hand", "网格员小李", "老人点名要他"), ("reassigned", "社区工作者老王", "他临时住院了")]
    assert explained["offers"][1]["by"] == "网格员小李" and explained["offers"][1]["stage"] == "operator"
    held = await MatcherStore(matcher.db).held()
    assert held == {third: [latest["assignment_id"]]}
