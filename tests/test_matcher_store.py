"""What the matcher stores, read and written the way the loop does: against a real MongoDB-wire server."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from linli.embedded import Server
from services.common.codes import short_code
from services.matcher.scoring import decayed
from services.matcher.store import MatcherStore

pytestmark = pytest.mark.service

Doc = dict[str, Any]
HALF_LIFE_DAYS = 7.0


@pytest.fixture
async def store(mongo_server: Server) -> AsyncIterator[MatcherStore]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_server.url)
    matcher = MatcherStore(client[f"t{uuid.uuid4().hex[:10]}"])
    await matcher.ensure_indexes()
    yield matcher
    await client.close()


def recent(doc: Doc, now: float) -> float:
    return decayed(doc.get("recent_work", 0.0), doc.get("recent_at", now), now, HALF_LIFE_DAYS)


async def test_work_two_replicas_add_at_once_is_all_counted(store: MatcherStore) -> None:
    an_hour_ago = round(time.time() - 3600, 3)
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 1.0, "recent_at": an_hour_ago})
    known = (1.0, an_hour_ago)
    await asyncio.gather(store.note_work("v-1", 0.5, HALF_LIFE_DAYS, known),
                         store.note_work("v-1", 2.0, HALF_LIFE_DAYS, known))
    now = time.time()
    stored = await store.volunteers.find_one({"_id": "v-1"})
    assert stored is not None
    assert recent(stored, now) == pytest.approx(decayed(1.0, an_hour_ago, now, HALF_LIFE_DAYS) + 2.5, rel=1e-6)
    assert stored["recent_at"] == an_hour_ago  # added as of the stored time, without moving it


async def test_work_added_from_a_stale_view_is_added_to_what_is_stored(store: MatcherStore) -> None:
    a_day_ago = time.time() - 86400
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 4.0, "recent_at": a_day_ago})
    noted = await store.note_work("v-1", 1.0, HALF_LIFE_DAYS, (0.5, a_day_ago - 500))  # another replica moved it on
    now = time.time()
    stored = await store.volunteers.find_one({"_id": "v-1"})
    assert stored is not None and noted is not None
    assert recent(stored, now) == pytest.approx(decayed(4.0, a_day_ago, now, HALF_LIFE_DAYS) + 1.0, rel=1e-6)
    assert noted[1] == stored["recent_at"]  # what the memory keeps matches what a later $inc filters on
    assert noted[0] == pytest.approx(stored["recent_work"], rel=1e-9)


async def test_the_first_work_of_a_volunteer_is_stored_as_it_is(store: MatcherStore) -> None:
    await store.volunteers.insert_one({"_id": "v-1", "district": "beibei"})
    noted = await store.note_work("v-1", 0.5, HALF_LIFE_DAYS, None)
    stored = await store.volunteers.find_one({"_id": "v-1"})
    assert stored is not None
    assert noted == (0.5, stored["recent_at"]) and stored["recent_work"] == 0.5


async def test_work_for_a_volunteer_the_matcher_does_not_know_is_not_stored(store: MatcherStore) -> None:
    assert await store.note_work("v-nobody", 0.5, HALF_LIFE_DAYS, None) is None
    assert await store.volunteers.find_one({"_id": "v-nobody"}) is None


async def test_an_assignment_carries_its_code_and_is_found_by_it(store: MatcherStore) -> None:
    code = await store.add_assignment({"_id": "a-1", "request_id": "r-1", "state": "offered"})
    assert code == short_code("a-1", 6)
    found = await store.assignment_by_ref(code.lower())
    assert found is not None and found["_id"] == "a-1"


async def test_storing_an_assignment_again_keeps_its_code_and_changes_nothing(store: MatcherStore) -> None:
    first = await store.add_assignment({"_id": "a-1", "request_id": "r-1", "state": "offered"})
    again = await store.add_assignment({"_id": "a-1", "request_id": "r-1", "state": "offered"})
    assert again == first
    assert await store.assignments.count_documents({"request_id": "r-1"}) == 1


async def test_a_code_another_assignment_holds_is_lengthened(store: MatcherStore) -> None:
    await store.assignments.insert_one({"_id": "a-other", "code": short_code("a-1", 6)})
    code = await store.add_assignment({"_id": "a-1", "request_id": "r-1", "state": "offered"})
    assert code == short_code("a-1", 7)
    found = await store.assignment_by_ref(code)
    assert found is not None and found["_id"] == "a-1"


async def test_a_code_issued_before_assignments_carried_their_own_still_finds_its_assignment(
    store: MatcherStore,
) -> None:
    await store.assignments.insert_one({"_id": "a-old", "request_id": "r-1", "state": "accepted"})
    await store.codes.insert_one({"_id": short_code("a-old", 6), "assignment_id": "a-old"})
    found = await store.assignment_by_ref(short_code("a-old", 6))
    assert found is not None and found["_id"] == "a-old"


async def test_an_offer_is_counted_only_while_the_week_is_under_its_limits(store: MatcherStore) -> None:
    await store.volunteers.insert_many([{"_id": "v-1"}, {"_id": "v-2"}])
    await store.note_week("v-1", "2026-W49", offers=2)
    assert (await store.count_offer("v-1", "2026-W49", 3, 15.0) or {}).get("offers") == 3
    assert await store.count_offer("v-1", "2026-W49", 3, 15.0) is None
    await store.note_week("v-2", "2026-W49", hours=15.0)
    assert await store.count_offer("v-2", "2026-W49", 3, 15.0) is None
    weeks = await store.weeks_of(["v-1", "v-2"], "2026-W49")
    assert weeks["v-1"]["offers"] == 3 and weeks["v-2"]["offers"] == 0


async def test_replicas_counting_a_last_offer_at_once_count_it_once(store: MatcherStore) -> None:
    await store.volunteers.insert_one({"_id": "v-1"})
    counted = await asyncio.gather(*(store.count_offer("v-1", "2026-W49", 1, None) for _ in range(5)))
    assert len([c for c in counted if c is not None]) == 1
    assert (await store.weeks_of(["v-1"], "2026-W49"))["v-1"]["offers"] == 1


async def test_without_limits_every_offer_is_counted(store: MatcherStore) -> None:
    await store.volunteers.insert_one({"_id": "v-1"})
    for _ in range(3):
        assert await store.count_offer("v-1", "2026-W49", None, None) is not None
    assert (await store.weeks_of(["v-1"], "2026-W49"))["v-1"]["offers"] == 3


async def test_an_offer_counts_into_the_week_and_the_recent_work_in_one_write(store: MatcherStore) -> None:
    now = round(time.time(), 3)
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 0.0, "recent_at": now, "week": "2026-W49",
                                       "week_offers": 0, "week_hours": 0.0})
    counted = await store.count_offer("v-1", "2026-W49", 3, 15.0, work=0.5, half_life_days=HALF_LIFE_DAYS,
                                      known=(0.0, now))
    stored = await store.volunteers.find_one({"_id": "v-1"})
    assert counted is not None and stored is not None
    assert stored["week_offers"] == 1 and stored["recent_at"] == now
    assert stored["recent_work"] == pytest.approx(0.5, rel=1e-3) == counted["recent_work"]


async def test_replicas_counting_offers_and_work_at_once_count_all_of_both(store: MatcherStore) -> None:
    an_hour_ago = round(time.time() - 3600, 3)
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 1.0, "recent_at": an_hour_ago})
    # One replica knows the stored time, the other a stale one; the week turns for both.
    await asyncio.gather(
        store.count_offer("v-1", "2026-W49", 5, None, work=0.5, half_life_days=HALF_LIFE_DAYS, known=(1.0, an_hour_ago)),
        store.note_week("v-1", "2026-W49", hours=2.0, work=2.0, half_life_days=HALF_LIFE_DAYS,
                        known=(0.0, an_hour_ago - 500)),
    )
    now = time.time()
    stored = await store.volunteers.find_one({"_id": "v-1"})
    assert stored is not None
    assert (stored["week"], stored["week_offers"], stored["week_hours"]) == ("2026-W49", 1, 2.0)
    assert recent(stored, now) == pytest.approx(decayed(1.0, an_hour_ago, now, HALF_LIFE_DAYS) + 2.5, rel=1e-6)


async def test_a_new_week_starts_from_nothing(store: MatcherStore) -> None:
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 1.0, "recent_at": round(time.time(), 3),
                                       "week": "2026-W48", "week_offers": 3, "week_hours": 15.0})
    assert (await store.count_offer("v-1", "2026-W49", 3, 15.0) or {}).get("offers") == 1
    assert (await store.weeks_of(["v-1"], "2026-W49"))["v-1"]["hours"] == 0.0


async def test_a_week_counted_before_profiles_held_their_weeks_still_limits(store: MatcherStore) -> None:
    await store.volunteers.insert_one({"_id": "v-1", "recent_work": 1.0, "recent_at": round(time.time(), 3)})
    await store.weeks.insert_one({"_id": "v-1:2026-W49", "offers": 2, "hours": 1.0})
    assert (await store.weeks_of(["v-1"], "2026-W49"))["v-1"]["offers"] == 2
    assert (await store.count_offer("v-1", "2026-W49", 3, 15.0) or {}).get("offers") == 3
    assert await store.count_offer("v-1", "2026-W49", 3, 15.0) is None
