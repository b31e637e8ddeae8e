import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from contracts import ApiError
from services.matcher import handlers, scoring

pytestmark = pytest.mark.domain

RULES = scoring.Rules.load(Path(scoring.__file__).with_name("matching.yaml"))
PLACES = scoring.places_from({"d1": {
    "g1": {"community": "c1", "street": "s1", "neighbours": ["g2"]},
    "g2": {"community": "c1", "street": "s1", "neighbours": ["g1", "g3"]},
    "g3": {"community": "c1", "street": "s1", "neighbours": ["g2"]},
    "g4": {"community": "c2", "street": "s1", "neighbours": []},
    "g5": {"community": "c3", "street": "s2", "neighbours": []},
}})
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC).timestamp()  # Tuesday 10:00 in Shanghai


def volunteer(vid: str, grids: list[str] | None = None, skills: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"_id": vid, "district": "d1", "grids": grids or ["g1"], "skills": skills or ["repair"], "capacity": 2,
            **extra}


def request(**extra: Any) -> dict[str, Any]:
    return {"_id": "r1", "district": "d1", "grid": "g1", "service": "repair.plumbing", "category": "repair",
            "urgency": "routine", "tried": [], "round": 1, "needs": [], **extra}


def ranked(req: dict[str, Any], roster: list[dict[str, Any]], free: dict[str, int] | None = None,
           histories: dict[str, dict[str, Any]] | None = None) -> tuple[list[str], dict[str, int]]:
    result, out = scoring.rank(req, roster, free or {v["_id"]: 2 for v in roster}, histories or {}, PLACES, RULES,
                               NOW, ZONE)
    return [s.volunteer_id for s in result], dict(Counter(out.values()))


def test_place_tiers_follow_the_grid_hierarchy() -> None:
    assert PLACES.tier("d1", "g1", ["g1"]) == "grid"
    assert PLACES.tier("d1", "g1", ["g2"]) == "neighbour"
    assert PLACES.tier("d1", "g1", ["g3"]) == "community"
    assert PLACES.tier("d1", "g1", ["g4"]) == "street"
    assert PLACES.tier("d1", "g1", ["g5"]) == "district"
    assert PLACES.tier("d1", "unknown", ["g1"]) == "district"
    assert PLACES.grids_within("d1", "g1", ("grid", "neighbour")) == ["g1", "g2"]
    assert PLACES.grids_within("d1", "g1", ("grid", "neighbour", "community")) == ["g1", "g2", "g3"]
    assert PLACES.grids_within("d1", "g1", scoring.TIERS) is None


def test_nearer_volunteers_rank_higher_all_else_equal() -> None:
    roster = [volunteer(v, [g]) for v, g in [("far", "g5"), ("street", "g4"), ("near", "g2"), ("here", "g1")]]
    assert ranked(request(), roster)[0] == ["here", "near", "street", "far"]


def test_an_item_skill_or_a_category_skill_qualifies_and_others_fall_out() -> None:
    roster = [volunteer("item", skills=["repair.plumbing"]), volunteer("cat"), volunteer("barber", skills=["haircut"])]
    order, out = ranked(request(), roster)
    assert sorted(order) == ["cat", "item"] and out == {"skill": 1}


@pytest.mark.parametrize("need, attributes, fits", [
    ("sign-language", ["sign-language"], True),
    ("sign-language", [], False),
    ("dialect:sichuan", ["dialect:sichuan"], True),
    ("dialect:sichuan", ["dialect:cantonese"], False),
    ("woman", ["woman"], True),
    ("woman", [], False),
    ("wheelchair", ["wheelchair", "woman"], True),
    ("wheelchair", ["sign-language"], False),
])
def test_each_stated_need_is_a_hard_constraint(need: str, attributes: list[str], fits: bool) -> None:
    order, out = ranked(request(needs=[need]), [volunteer("v", attributes=attributes)])
    assert (order == ["v"]) is fits
    assert out == ({} if fits else {"needs": 1})


def test_weekly_windows_and_away_periods_decide_availability() -> None:
    weekday_days = {"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
    evenings = {"days": [1], "start": "18:00", "end": "21:00"}
    roster = [
        volunteer("daytime", availability=[weekday_days]),
        volunteer("evenings", availability=[evenings]),
        volunteer("any-time"),
        volunteer("away", away=[{"start": "2026-11-23", "end": "2026-11-29"}]),
    ]
    order, out = ranked(request(), roster)
    assert sorted(order) == ["any-time", "daytime"] and out == {"unavailable": 1, "away": 1}
    evening = request(window_start="2026-11-24T19:00:00+08:00")
    assert "evenings" in ranked(evening, roster)[0] and "daytime" not in ranked(evening, roster)[0]


def test_full_volunteers_and_those_already_offered_are_left_out_with_a_reason() -> None:
    roster = [volunteer("full"), volunteer("tried"), volunteer("ok")]
    order, out = ranked(request(tried=["tried"]), roster, free={"full": 0, "tried": 2, "ok": 2})
    assert order == ["ok"] and out == {"at full capacity": 1, "already offered": 1}


def test_fairness_prefers_volunteers_with_less_recent_work() -> None:
    roster = [volunteer("busy", recent_work=6.0, recent_at=NOW), volunteer("rested")]
    assert ranked(request(), roster)[0] == ["rested", "busy"]
    # work long ago has decayed away, so the two are equal again and the id decides
    old = [volunteer("busy", recent_work=6.0, recent_at=NOW - 120 * 86400), volunteer("rested")]
    assert ranked(request(), old)[0] == ["busy", "rested"]


def test_continuity_prefers_a_well_rated_previous_helper_and_avoids_a_poorly_rated_one() -> None:
    roster = [volunteer("a"), volunteer("b"), volunteer("c")]
    liked = {"b": {"stars": 5, "at": NOW}, "c": {"stars": 1, "at": NOW}}
    order, out = ranked(request(resident_ref="p1"), roster, histories=liked)
    assert order == ["b", "a"] and out == {"rated poorly by this resident": 1}


def test_a_better_rated_volunteer_ranks_higher() -> None:
    roster = [volunteer("low", stars_sum=4, stars_n=2), volunteer("high", stars_sum=25, stars_n=5)]
    assert ranked(request(), roster)[0] == ["high", "low"]


def test_the_explanation_adds_up_to_the_score() -> None:
    scored = scoring.score(volunteer("v", ["g2"]), "neighbour", 1, None, RULES, NOW)
    parts = scored.components
    assert set(parts) == {"place", "load", "fairness", "continuity", "rating"}
    assert sum(p["points"] for p in parts.values()) == pytest.approx(scored.total)
    assert parts["place"]["value"] == RULES.place_scores["neighbour"] and parts["load"]["value"] == 0.5
    explained = scored.explanation(rank=1, stage="nearby", considered=4, rules_version=RULES.version)
    assert explained["components"] is parts and explained["considered"] == 4


def test_weights_come_from_configuration() -> None:
    raw = {"version": 2, "weights": {"place": 0, "load": 0, "fairness": 0, "continuity": 0, "rating": 1},
           "place_scores": RULES.place_scores, "fairness": {"half_life_days": 7, "hours_scale": 8},
           "rating": {"prior_stars": 4, "prior_weight": 3}, "continuity": {"min_stars": 4, "avoid_below": 3},
           "stages": {u: [{"name": "all", "tiers": list(scoring.TIERS)}] for u in ("routine", "soon", "urgent")}}
    only_rating = scoring.Rules.parse(raw)
    roster = [volunteer("near-but-low", ["g1"], stars_sum=2, stars_n=2), volunteer("far-but-high", ["g5"], stars_sum=10, stars_n=2)]
    result, _ = scoring.rank(request(), roster, {"near-but-low": 2, "far-but-high": 2}, {}, PLACES, only_rating, NOW, ZONE)
    assert [s.volunteer_id for s in result] == ["far-but-high", "near-but-low"]
    with pytest.raises(ValueError, match="unknown tiers"):
        scoring.Rules.parse({**raw, "stages": {u: [{"name": "x", "tiers": ["moon"]}] for u in ("routine", "soon", "urgent")}})
    with pytest.raises(ValueError, match="incomplete"):
        scoring.Rules.parse({"version": 1})


def test_urgent_requests_fan_out_and_routine_ones_widen_step_by_step() -> None:
    urgent = RULES.stages["urgent"][0]
    assert urgent.offer_to >= 2 and urgent.ttl_factor < 1
    tiers = [s.tiers for s in RULES.stages["routine"]]
    assert all(set(a) < set(b) for a, b in zip(tiers, tiers[1:], strict=False))
    assert scoring.stage_for(RULES, "routine", len(tiers)) is None


def test_unmatched_reason_names_the_main_obstacle() -> None:
    from collections import Counter

    assert "skill" in scoring.unmatched_reason(Counter({"skill": 5, "needs": 1}), 0)
    assert "needs" in scoring.unmatched_reason(Counter({"needs": 3}), 0)
    assert "declined or did not answer" in scoring.unmatched_reason(Counter({"already offered": 2}), 2)


def test_assignment_ids_differ_per_round_and_per_fan_out_slot_and_repeat_otherwise() -> None:
    assert handlers.assignment_id_for("r1", 1) == handlers.assignment_id_for("r1", 1, 0)
    ids = {handlers.assignment_id_for("r1", r, s) for r in (1, 2) for s in (0, 1, 2)}
    assert len(ids) == 6


def test_only_the_offered_volunteer_may_answer() -> None:
    with pytest.raises(ApiError) as err:
        handlers.check_responder({"volunteer_id": "a"}, "b")
    assert err.value.code == "not_your_assignment"


def test_a_repeated_answer_is_accepted_and_a_contradicting_one_refused() -> None:
    handlers.refuse_response({"state": "accepted", "expires": 0}, accept=True, now=10)
    with pytest.raises(ApiError) as err:
        handlers.refuse_response({"state": "accepted", "expires": 0}, accept=False, now=10)
    assert err.value.code == "offer_closed"
    with pytest.raises(ApiError) as err:
        handlers.refuse_response({"state": "offered", "expires": 5}, accept=True, now=10)
    assert err.value.code == "offer_expired"
    with pytest.raises(ApiError) as err:
        handlers.refuse_response({"state": "withdrawn", "reason": handlers.TAKEN, "expires": 0}, accept=True, now=1)
    assert err.value.code == "taken"


def test_completion_repeats_only_with_the_same_hours() -> None:
    handlers.refuse_completion({"state": "completed", "hours": "1.50"}, Decimal("1.5"))
    with pytest.raises(ApiError) as err:
        handlers.refuse_completion({"state": "completed", "hours": "1.50"}, Decimal("2"))
    assert err.value.code == "already_completed"
    with pytest.raises(ApiError) as err:
        handlers.refuse_completion({"state": "offered", "hours": None}, Decimal("2"))
    assert err.value.code == "not_accepted"


def test_completion_logs_exact_hours_caused_by_the_completion() -> None:
    req = {**request(), "resident_ref": "p1"}
    assignment = {"_id": "a1", "request_id": "r1", "volunteer_id": "v1", "hours": "1.25", "completed_at": time.time()}
    done, logged = handlers.completed(req, assignment)
    assert logged.data.hours == Decimal("1.25") and logged.data.category == "repair"
    assert (logged.data.service, logged.data.grid, logged.data.resident_ref) == ("repair.plumbing", "g1", "p1")
    assert logged.causationid == done.id and logged.correlationid == "r1"
    assert handlers.completed(req, assignment)[1].id == logged.id


def test_unmatched_event_lists_each_candidate_and_why() -> None:
    event = handlers.unmatched({**request(), "tried": ["a", "b"], "why": {"a": "declined: 在上班", "b": "did not answer in time"},
                                "not_considered": {"skill": 3}}, "nobody")
    assert [(c.volunteer_id, c.why) for c in event.data.candidates] == [("a", "declined: 在上班"), ("b", "did not answer in time")]
    assert event.data.not_considered == {"skill": 3}


FATIGUE = scoring.Rules.parse({**yaml.safe_load(Path(scoring.__file__).with_name("matching.yaml").read_text()),
                               "fatigue": {"offers_per_week": 3, "hours_per_week": 10}})


def test_a_weekly_limit_on_offers_or_hours_is_a_hard_rule_named_fatigue() -> None:
    assert not scoring.fatigued(None, FATIGUE)
    assert not scoring.fatigued({"offers": 2, "hours": 9.5}, FATIGUE)
    assert scoring.fatigued({"offers": 3, "hours": 0.0}, FATIGUE)
    assert scoring.fatigued({"offers": 0, "hours": 10.0}, FATIGUE)
    roster = [volunteer("tired"), volunteer("fresh")]
    result, out = scoring.rank(request(), roster, {"tired": 2, "fresh": 2}, {}, PLACES, FATIGUE, NOW, ZONE,
                               weeks={"tired": {"offers": 3}})
    assert [s.volunteer_id for s in result] == ["fresh"] and out == {"tired": "fatigue"}


def test_without_limits_in_the_rules_nobody_is_fatigued() -> None:
    unlimited = scoring.Rules.parse({**yaml.safe_load(Path(scoring.__file__).with_name("matching.yaml").read_text()),
                                     "fatigue": {"offers_per_week": 0}})
    assert unlimited.max_offers_per_week is None and unlimited.max_hours_per_week is None
    assert not scoring.fatigued({"offers": 500, "hours": 100.0}, unlimited)


def test_a_volunteer_who_left_is_left_out() -> None:
    assert ranked(request(), [volunteer("gone", left=True), volunteer("here")]) == (["here"], {"left": 1})


@pytest.mark.parametrize("out, offered, code", [
    (Counter(), 0, "no_volunteers"),
    (Counter({"skill": 4, "needs": 1}), 0, "no_skill"),
    (Counter({"fatigue": 2, "skill": 1}), 0, "fatigue"),
    (Counter({"at full capacity": 2}), 0, "none_eligible"),
    (Counter({"already offered": 2}), 2, "all_fell_out"),
])
def test_unmatched_reason_codes_name_the_main_obstacle(out: Counter[str], offered: int, code: str) -> None:
    assert scoring.unmatched_code(out, offered) == code


def test_one_or_two_stars_or_not_done_reopen_a_request() -> None:
    assert handlers.reopens(2, True) and handlers.reopens(1, True) and handlers.reopens(5, False)
    assert not handlers.reopens(3, True)


def test_weeks_turn_on_monday_midnight_on_the_district_clock() -> None:
    sunday_night = datetime(2026, 12, 6, 15, 59, tzinfo=UTC).timestamp()  # Sunday 23:59 in Shanghai
    assert handlers.week_of(sunday_night, ZONE) == "2026-W49"
    assert handlers.week_of(sunday_night + 60, ZONE) == "2026-W50"


def test_offer_events_carry_what_a_volunteer_needs_and_the_codes() -> None:
    req = {**request(), "code": "K7QX3M", "description": "换灯泡", "window_start": "2026-12-03T01:00:00+00:00",
           "window_end": None, "district": "d1"}
    assignment = {"_id": "a1", "request_id": "r1", "volunteer_id": "v1", "expires": NOW, "code": "ABC234",
                  "service": "repair.plumbing", **handlers.offer_details(req, "neighbour")}
    offer = handlers.offered(req, assignment).data
    assert (offer.code, offer.request_code, offer.district, offer.description, offer.place) == (
        "ABC234", "K7QX3M", "d1", "换灯泡", "neighbour")
    assert offer.window_start == datetime(2026, 12, 3, 1, 0, tzinfo=UTC) and offer.window_end is None
    accepted = handlers.accepted(req, assignment).data
    assert (accepted.code, accepted.request_code, accepted.service) == ("ABC234", "K7QX3M", "repair.plumbing")
    assert accepted.window_start == offer.window_start
    for event in (handlers.declined(req, assignment, ""), handlers.expired(req, assignment),
                  handlers.withdrawn(req, assignment, "x", "matcher")):
        assert (event.data.code, event.data.request_code) == ("ABC234", "K7QX3M")
    unmatched = handlers.unmatched({**req, "reason_code": "no_skill"}, "no volunteer has this skill").data
    assert (unmatched.reason_code, unmatched.request_code) == ("no_skill", "K7QX3M")


def test_an_operator_may_name_only_an_active_volunteer_of_the_district_with_room() -> None:
    for who, district, free, code in [(None, "d1", 1, "unknown_volunteer"), (volunteer("x"), "d2", 1, "unknown_volunteer"),
                                      (volunteer("x", left=True), "d1", 1, "volunteer_left"),
                                      (volunteer("x"), "d1", 0, "at_capacity")]:
        with pytest.raises(ApiError) as err:
            handlers.check_named_volunteer(who, district, free)
        assert err.value.code == code
    handlers.check_named_volunteer(volunteer("x"), "d1", 1)


def test_an_operator_refused_for_a_passing_state_is_told_to_try_again_and_for_an_ended_one_is_not() -> None:
    placing = handlers.not_changeable("placing", redispatch=False)
    just_completed = handlers.not_changeable("completed", redispatch=True)
    completed = handlers.not_changeable("completed", redispatch=False)
    closed = handlers.not_changeable("closed", redispatch=True)

    assert "try again in a moment" in placing and "try again in a moment" in just_completed
    assert completed == "a completed request cannot be changed" and closed == "a closed request cannot be changed"
