"""The matcher's in-memory roster: what it finds, what it holds free, how far a change log applies."""

import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.matcher import scoring
from services.matcher.roster import Entry, Roster, applicable, slot_of

pytestmark = pytest.mark.domain

RULES = scoring.Rules.load(Path(scoring.__file__).with_name("matching.yaml"))
PLACES = scoring.places_from({"d1": {
    "g1": {"community": "c1", "street": "s1", "neighbours": ["g2"]},
    "g2": {"community": "c1", "street": "s1", "neighbours": ["g1"]},
    "g3": {"community": "c2", "street": "s1", "neighbours": []},
}})


def profile(vid: str, grids: list[str], skills: list[str], capacity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"_id": vid, "district": "d1", "grids": grids, "skills": skills, "capacity": capacity, "attributes": [],
            "availability": [], "away": [], "team": "", "updated": 0.0, **extra}


def test_a_volunteer_is_found_in_their_grids_and_district_wide_only_by_skill() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1", "g2"], ["repair"]))
    roster.put(profile("v2", ["g3"], ["meals"]))

    assert [v["_id"] for v in roster.near("d1", "repair.plumbing", "repair", ["g2"])] == ["v1"]
    assert [v["_id"] for v in roster.near("d1", "repair.plumbing", "repair", ["g1", "g3"])] == ["v1", "v2"]
    assert [v["_id"] for v in roster.near("d1", "repair.plumbing", "repair", None)] == ["v1"]
    assert roster.near("d2", "repair.plumbing", "repair", ["g1"]) == []


def test_a_volunteer_who_left_is_no_longer_found_near_but_is_still_known_by_id() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"]))
    roster.put(profile("v1", ["g1"], ["repair"], left=True, left_at=5.0))

    assert roster.near("d1", "repair.plumbing", "repair", ["g1"]) == []
    assert roster.by_id(["v1"])[0]["left"] is True
    assert roster.index == {}


def test_a_registration_again_moves_the_volunteer_to_their_new_grids_and_skills() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"]))
    roster.put(profile("v1", ["g3"], ["meals"]))

    assert roster.near("d1", "repair.plumbing", "repair", ["g1"]) == []
    assert [v["_id"] for v in roster.near("d1", "meals.delivery", "meals", ["g3"])] == ["v1"]
    assert set(roster.index) == {("grid", "d1", "g3"), ("skill", "d1", "meals")}


def test_held_slots_are_not_free_and_letting_one_go_frees_it() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"], capacity=3), held=[0, 2])

    assert roster.free(["v1", "v-unknown"]) == {"v1": 1, "v-unknown": 0}
    assert roster.free_slots("v1") == [1]
    roster.hold("v1", 1)
    assert roster.free_slots("v1") == []
    roster.let_go("v1", 2)
    assert roster.free_slots("v1") == [2]


def test_a_slot_held_beyond_a_lowered_capacity_frees_nothing() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"], capacity=1), held=[1])

    assert roster.free(["v1"]) == {"v1": 1}


def test_work_and_ratings_noted_in_memory_change_the_score_as_the_stored_profile_would() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"]))
    roster.note_work("v1", 3.0, 100.0)
    roster.note_rating("v1", 5)

    held = roster.by_id(["v1"])[0]
    assert (held["recent_work"], held["recent_at"], held["stars_sum"], held["stars_n"]) == (3.0, 100.0, 5.0, 1)


def test_ranking_from_memory_agrees_with_ranking_from_stored_profiles() -> None:
    stored = [
        profile("v1", ["g1"], ["repair"], capacity=2, recent_work=2.0, recent_at=time.time() - 3600,
                stars_sum=9, stars_n=2),
        profile("v2", ["g2"], ["repair"], attributes=["woman"]),
        profile("v3", ["g1"], ["repair"], availability=[{"days": [0], "start": "00:00", "end": "00:01"}]),
        profile("v4", ["g3"], ["meals"], away=[{"start": "2020-01-01", "end": "2020-01-02"}]),
    ]
    roster = Roster()
    for doc in stored:
        roster.put(doc, held=[0] if doc["_id"] == "v1" else [])
    request = {"_id": "r1", "district": "d1", "grid": "g1", "service": "repair.plumbing", "category": "repair",
               "urgency": "routine", "needs": [], "tried": []}
    now, zone = time.time(), ZoneInfo("Asia/Shanghai")
    free = {"v1": 1, "v2": 1, "v3": 1, "v4": 1}

    from_disk = scoring.rank(request, stored, free, {}, PLACES, RULES, now, zone)
    pool = roster.near("d1", "repair.plumbing", "repair", ["g1", "g2", "g3"])
    from_memory = scoring.rank(request, pool, roster.free([v["_id"] for v in pool]), {}, PLACES, RULES, now, zone)

    assert from_memory == from_disk


def test_an_entry_keeps_no_profile_text_and_shares_its_strings() -> None:
    first = Entry.of(profile("v1", ["g1"], ["repair"], name="王阿姨", phone="13900000000"))
    second = Entry.of(profile("v2", ["".join(["g", "1"])], ["repair"]))

    assert "name" not in first.doc() and "phone" not in first.doc()
    assert first.grids[0] is second.grids[0]


def test_a_slot_id_names_its_volunteer_and_index() -> None:
    assert slot_of("v-3f2a:1") == ("v-3f2a", 1)
    assert slot_of("v:with:colons:12") == ("v:with:colons", 12)


def test_the_change_log_applies_up_to_a_change_still_being_written() -> None:
    waiting: dict[int, float] = {}

    assert applicable(3, 7, {4, 5, 7}, waiting, now=100.0) == 5
    assert waiting == {6: 100.0}
    assert applicable(5, 7, {7}, waiting, now=101.0) == 5
    assert applicable(5, 7, {6, 7}, waiting, now=102.0) == 7
    assert waiting == {}


def test_a_change_whose_row_never_came_is_passed_over_after_the_patience() -> None:
    waiting: dict[int, float] = {}

    assert applicable(0, 2, {2}, waiting, now=10.0, patience=5.0) == 0
    assert applicable(0, 2, {2}, waiting, now=15.0, patience=5.0) == 2
    assert waiting == {}


def test_nothing_applies_when_the_log_has_not_moved() -> None:
    assert applicable(4, 4, set(), {}, now=0.0) == 4


def test_a_packed_roster_unpacks_to_the_same_volunteers_in_the_same_places() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1", "g2"], ["repair"], capacity=2, recent_work=1.5, recent_at=10.0, stars_sum=9,
                       stars_n=2, availability=[{"days": [0, 1], "start": "08:00", "end": "12:00"}]))
    roster.put(profile("v2", ["g3"], ["meals"], left=True, away=[{"start": "2026-12-01", "end": "2026-12-07"}]))

    unpacked = Roster.unpack(roster.pack())

    assert unpacked.by_id(["v1", "v2"]) == roster.by_id(["v1", "v2"])
    assert unpacked.index == roster.index


def test_the_taken_slots_read_at_start_replace_what_the_memory_held() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"], capacity=2), held=[0])
    roster.put(profile("v2", ["g1"], ["repair"], capacity=1))

    roster.set_held({"v2": [0]})

    assert roster.free(["v1", "v2"]) == {"v1": 2, "v2": 0}


def test_a_week_held_in_memory_counts_only_for_that_week() -> None:
    roster = Roster()
    roster.put(profile("v1", ["g1"], ["repair"]))
    roster.set_week("v1", "2026-W49", {"offers": 3, "hours": 2.5})

    assert roster.week_of(["v1", "v2"], "2026-W49") == {"v1": {"offers": 3, "hours": 2.5}}
    assert roster.week_of(["v1"], "2026-W50") == {}
    roster.put(profile("v1", ["g2"], ["repair"]))  # a new registration keeps the week's counts
    assert roster.week_of(["v1"], "2026-W49") == {"v1": {"offers": 3, "hours": 2.5}}
