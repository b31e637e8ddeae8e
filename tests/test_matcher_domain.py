from decimal import Decimal

import pytest

from contracts import ApiError
from services.matcher import handlers

pytestmark = pytest.mark.domain


def volunteer(vid: str, grids: list[str], skills: list[str], capacity: int = 1, district: str = "d1") -> dict:
    return {"_id": vid, "district": district, "grids": grids, "skills": skills, "capacity": capacity}


REQUEST = {"_id": "r1", "district": "d1", "grid": "g1", "service": "repair.plumbing", "category": "repair",
           "urgency": "routine", "tried": [], "round": 1}


def test_same_grid_volunteers_come_before_others() -> None:
    roster = [volunteer("a", ["g2"], ["repair"]), volunteer("b", ["g1"], ["repair"])]
    ranked = handlers.rank(REQUEST, roster, {"a": 1, "b": 1})
    assert [c.volunteer_id for c in ranked] == ["b", "a"]


def test_an_item_skill_matches_as_well_as_a_category_skill() -> None:
    roster = [volunteer("a", ["g1"], ["repair.plumbing"]), volunteer("b", ["g1"], ["haircut"])]
    assert [c.volunteer_id for c in handlers.rank(REQUEST, roster, {"a": 1, "b": 1})] == ["a"]


def test_other_districts_full_volunteers_and_those_already_tried_are_left_out() -> None:
    roster = [
        volunteer("other", ["g1"], ["repair"], district="d2"),
        volunteer("full", ["g1"], ["repair"]),
        volunteer("tried", ["g1"], ["repair"]),
        volunteer("ok", ["g9"], ["repair"]),
    ]
    request = {**REQUEST, "tried": ["tried"]}
    ranked = handlers.rank(request, roster, {"other": 1, "full": 0, "tried": 1, "ok": 1})
    assert [c.volunteer_id for c in ranked] == ["ok"]


def test_less_loaded_volunteers_come_first_within_a_grid() -> None:
    roster = [volunteer("busy", ["g1"], ["repair"], capacity=3), volunteer("idle", ["g1"], ["repair"], capacity=3)]
    ranked = handlers.rank(REQUEST, roster, {"busy": 1, "idle": 3})
    assert [c.volunteer_id for c in ranked] == ["idle", "busy"]


def test_unmatched_reason_says_what_was_missing() -> None:
    assert "skill" in handlers.unmatched_reason(REQUEST, [volunteer("a", ["g1"], ["haircut"])], {"a": 1})
    tried = {**REQUEST, "tried": ["a"]}
    assert "declined or did not answer" in handlers.unmatched_reason(tried, [volunteer("a", ["g1"], ["repair"])], {})
    assert "capacity" in handlers.unmatched_reason(REQUEST, [volunteer("a", ["g1"], ["repair"])], {"a": 0})


def test_assignment_ids_differ_per_round_and_repeat_within_one() -> None:
    assert handlers.assignment_id_for("r1", 1) == handlers.assignment_id_for("r1", 1)
    assert handlers.assignment_id_for("r1", 1) != handlers.assignment_id_for("r1", 2)


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


def test_completion_repeats_only_with_the_same_hours() -> None:
    handlers.refuse_completion({"state": "completed", "hours": "1.50"}, Decimal("1.5"))
    with pytest.raises(ApiError) as err:
        handlers.refuse_completion({"state": "completed", "hours": "1.50"}, Decimal("2"))
    assert err.value.code == "already_completed"
    with pytest.raises(ApiError) as err:
        handlers.refuse_completion({"state": "offered", "hours": None}, Decimal("2"))
    assert err.value.code == "not_accepted"


def test_completion_logs_exact_hours_caused_by_the_completion() -> None:
    request = {**REQUEST}
    assignment = {"_id": "a1", "request_id": "r1", "volunteer_id": "v1", "hours": "1.25"}
    done, logged = handlers.completed(request, assignment)
    assert logged.data.hours == Decimal("1.25") and logged.data.category == "repair"
    assert (logged.data.service, logged.data.grid, logged.data.urgency) == ("repair.plumbing", "g1", "routine")
    assert logged.causationid == done.id and logged.correlationid == "r1"
    assert handlers.completed(request, assignment)[1].id == logged.id
