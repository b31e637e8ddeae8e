"""Two matcher replicas, each ranking from its own roster in memory, over the database they share.

One replica runs as the service does; the other is held by the test, so that it is the one that ranks
and it hears of volunteers only through the database, never through the events the first consumed.
"""

import time
from typing import Any

import pytest

from contracts import API, ApiError
from contracts.calls import Respond
from contracts.events import RequestRated
from services.common.config import BusSettings
from services.common.places import Places
from services.common.runtime import Service
from services.matcher import handlers, scoring
from services.matcher.config import MatcherSettings
from services.matcher.dispatch import Dispatch
from services.matcher.roster import SharedRoster
from services.matcher.store import MatcherStore
from tests.conftest import Bus, eventually
from tests.test_matcher_service import StartMatcher, intake, register, roster_ready, start_matcher, submit  # noqa: F401

pytestmark = pytest.mark.service


async def other_replica(matcher: Service, settings: BusSettings) -> Dispatch:
    store = MatcherStore(matcher.db)
    replica = Dispatch(store, matcher.outbox, MatcherSettings(bus=settings),
                       scoring.Rules.load(MatcherSettings().rules_path), Places.load(), roster=SharedRoster(store))
    await replica.start()
    return replica


async def place_by(replica: Dispatch, request_id: str, grid: str = "g1", resident_ref: str = "") -> dict[str, Any]:
    now = time.time()
    await replica.store.add_request(
        {"_id": request_id, "district": "beibei", "grid": grid, "service": "repair.plumbing", "category": "repair",
         "urgency": "routine", "resident_ref": resident_ref, "needs": [], "window_start": None, "window_end": None,
         "code": "", "description": "", "state": "open", "round": 0, "tried": [], "why": {}, "stage": 0,
         "stage_rounds": 0, "pairing_pending": True, "opened": now, "created": now}
    )
    await replica.place(request_id)
    return await replica.store.request(request_id) or {}


async def test_a_volunteer_claimed_by_one_replica_is_not_double_booked_by_the_other(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000901", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    other = await other_replica(matcher, settings)
    offer = (await bus.wait_for("volunteer.assigned", request_id=await submit(bus)))[0]["data"]
    assert offer["volunteer_id"] == volunteer
    assert other.roster.memory.free([volunteer]) == {volunteer: 1}  # it has not looked since

    placed = await place_by(other, "r-second")

    assert placed["state"] == "unmatched" and placed["not_considered"] == {"at full capacity": 1}
    assert await other.store.held() == {volunteer: [offer["assignment_id"]]}
    assert other.roster.memory.free([volunteer]) == {volunteer: 0}  # the lost compare-and-set taught it


async def test_a_slot_freed_by_one_replica_is_read_again_by_the_other_before_it_refuses_for_capacity(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000911", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    first = await submit(bus)
    offer = (await bus.wait_for("volunteer.assigned", request_id=first))[0]["data"]
    other = await other_replica(matcher, settings)
    assert other.roster.memory.free([volunteer]) == {volunteer: 0}

    declined = await bus.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "accept": False,
    })
    assert declined["status"] == "declined"
    await bus.wait_for("request.unmatched", request_id=first)  # the slot is free again: nobody else fits
    placed = await place_by(other, "r-after-decline")

    assert placed["state"] == "offered"
    assert await other.store.held() == {volunteer: [handlers.assignment_id_for("r-after-decline", 1)]}


async def test_a_volunteer_registered_after_start_is_ranked_by_a_replica_that_did_not_hear_the_event(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    other = await other_replica(matcher, settings)
    volunteer = await register(bus, "13900000921", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    assert other.roster.memory.by_id([volunteer]) == []

    placed = await place_by(other, "r-newcomer")

    assert placed["state"] == "offered"
    offer = (await bus.wait_for("volunteer.assigned", request_id="r-newcomer"))[0]["data"]
    assert offer["volunteer_id"] == volunteer


async def test_a_volunteer_who_left_through_one_replica_is_not_offered_by_the_other(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000931", ["g1"], ["repair"])
    await roster_ready(matcher, 1)
    other = await other_replica(matcher, settings)
    assert [v["_id"] for v in other.roster.memory.near("beibei", "repair.plumbing", "repair", ["g1"])] == [volunteer]

    left = await bus.call(API.INTAKE_LEAVE, {"volunteer_id": volunteer, "reason": "搬家了"})
    assert left["active"] is False
    await eventually(lambda: _logged(other.store, 2))  # the registration, then the departure
    placed = await place_by(other, "r-after-leaving")

    assert placed["state"] == "unmatched" and placed["not_considered"] == {}
    assert await other.store.held() == {}


async def test_a_volunteer_at_the_weekly_limit_through_other_replicas_offers_is_not_offered(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000961", ["g1"], ["repair"], capacity=3)
    await roster_ready(matcher, 1)
    other = await other_replica(matcher, settings)
    limit = other.rules.max_offers_per_week
    assert limit is not None
    await other.store.note_week(volunteer, other.week("beibei"), offers=limit)  # as the first replica would

    placed = await place_by(other, "r-tired")

    assert placed["state"] == "unmatched" and placed["reason_code"] == "fatigue"
    assert await other.store.held() == {}


async def test_a_restarted_matcher_ranks_the_volunteers_it_heard_of_before(
    intake: Service, start_matcher: StartMatcher, bus: Bus  # noqa: F811
) -> None:
    matcher = await start_matcher()
    volunteer = await register(bus, "13900000941", ["g1"], ["repair"], capacity=2)
    await roster_ready(matcher, 1)
    await matcher.stop()

    await start_matcher()
    offer = (await bus.wait_for("volunteer.assigned", request_id=await submit(bus)))[0]["data"]

    assert offer["volunteer_id"] == volunteer


async def test_a_pairing_made_or_ended_through_one_replica_is_heeded_by_the_other(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    near = await register(bus, "13900000971", ["g1"], ["repair"], capacity=2)
    paired = await register(bus, "13900000972", ["g2"], ["repair"], capacity=2)
    await roster_ready(matcher, 2)
    other = await other_replica(matcher, settings)
    pairing = await bus.call(API.INTAKE_PAIR, {"district": "beibei", "resident_phone": "13600000971",
                                               "volunteer_id": paired, "kind": "caring-parent"})
    resident = (await bus.wait_for("pairing.created", pairing_id=pairing["pairing_id"]))[0]["data"]["resident_ref"]
    await eventually(lambda: _logged(other.store, 3))  # two registrations, then the pairing

    placed = await place_by(other, "r-paired", resident_ref=resident)
    first = await other.store.round_offers("r-paired", placed["round"])
    assert [(a["volunteer_id"], a["stage"]) for a in first] == [(paired, "pairing")]

    await bus.call(API.INTAKE_UNPAIR, {"pairing_id": pairing["pairing_id"], "reason": "孩子已成年"})
    await eventually(lambda: _logged(other.store, 4))
    placed = await place_by(other, "r-unpaired", resident_ref=resident)
    second = await other.store.round_offers("r-unpaired", placed["round"])
    assert [(a["volunteer_id"], a["stage"]) for a in second] == [(near, "nearby")]


async def _logged(store: MatcherStore, seq: int) -> bool:
    return seq in await store.roster_changes([seq])


async def test_a_replica_starts_from_the_snapshot_and_then_reads_the_profiles_themselves(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()  # it found no snapshot, read the (empty) profiles and packed them
    volunteer = await register(bus, "13900000951", ["g1"], ["repair"])
    store = MatcherStore(matcher.db)
    await eventually(lambda: _logged(store, 1))
    first = await other_replica(matcher, settings)
    assert [v["_id"] for v in first.roster.memory.by_id([volunteer])] == [volunteer]  # through the log
    await first.roster.settle()  # packs a snapshot that holds them
    assert (await store.roster_snapshot() or (0, b""))[0] == 1
    await store.volunteers.update_one({"_id": volunteer}, {"$set": {"stars_sum": 5, "stars_n": 1}})  # not logged

    second = await other_replica(matcher, settings)
    assert not second.roster.exact
    assert second.roster.memory.by_id([volunteer])[0]["stars_n"] == 0
    await second.roster.settle()

    assert second.roster.exact
    assert second.roster.memory.by_id([volunteer])[0]["stars_n"] == 1


async def test_an_offer_declined_through_one_replica_is_not_taken_through_another_that_remembers_it(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    first = await register(bus, "13900000981", ["g1"], ["repair"])
    second = await register(bus, "13900000982", ["g1"], ["repair"])
    await roster_ready(matcher, 2)
    other = await other_replica(matcher, settings)
    now = time.time()
    await other.store.add_request(
        {"_id": "r-remembered", "district": "beibei", "grid": "g1", "service": "repair.plumbing",
         "category": "repair", "urgency": "urgent", "resident_ref": "", "needs": [], "window_start": None,
         "window_end": None, "code": "", "description": "", "state": "open", "round": 0, "tried": [], "why": {},
         "stage": 0, "stage_rounds": 0, "pairing_pending": True, "opened": now, "created": now})
    await other.place("r-remembered")
    offers = {a["volunteer_id"]: a["_id"] for a in await other.store.of_request("r-remembered")}
    assert set(offers) == {first, second}  # one round, both offered at once: `other` made and remembers both
    declined = await bus.call(API.MATCHER_RESPOND, {"assignment_id": offers[first], "volunteer_id": first,
                                                    "accept": False})
    assert declined["status"] == "declined"

    remembered = await other.assignment_of(offers[first], remembered_too=True)
    assert remembered is not None and remembered["remembered"] and remembered["state"] == "offered"
    with pytest.raises(ApiError) as refused:
        await other.respond(Respond(assignment_id=offers[first], volunteer_id=first, accept=True), remembered)

    assert refused.value.code == "offer_closed"
    request = await other.store.request("r-remembered") or {}
    assert request["state"] == "offered" and "assignment_id" not in request  # never taken by the declined offer
    taken = await other.respond(Respond(assignment_id=offers[second], volunteer_id=second, accept=True),
                                await other.assignment_of(offers[second], remembered_too=True))
    assert taken.status == "accepted"
    assert (await other.store.request("r-remembered") or {})["assignment_id"] == offers[second]


async def test_a_rating_is_recorded_under_its_resident_whichever_replica_takes_it(
    intake: Service, start_matcher: StartMatcher, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher = await start_matcher()
    made_it, another = await other_replica(matcher, settings), await other_replica(matcher, settings)
    now = time.time()
    request = {"_id": "r-rated", "district": "beibei", "grid": "g1", "service": "repair.plumbing",
               "category": "repair", "urgency": "routine", "resident_ref": "res-9", "state": "completed",
               "round": 1, "opened": now, "created": now}
    await made_it.store.add_request(request)
    made_it.note_resident(request)  # as when it stored the request, or completed it
    # One remembers whose request it is; the other reads it.
    await made_it.request_rated(RequestRated(request_id="r-rated", volunteer_id="v-a", stars=5))
    await another.request_rated(RequestRated(request_id="r-rated", volunteer_id="v-b", stars=5))

    rows = await made_it.store.served.find({}).to_list()
    assert sorted((row["volunteer_id"], row["resident_ref"]) for row in rows) == [("v-a", "res-9"), ("v-b", "res-9")]
