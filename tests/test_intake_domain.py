"""Intake's decisions without I/O: how a request moves, what a list query asks, how a profile changes."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import ApiError, new_event
from contracts.calls import RateRequest, RequestsQuery, SubmitRequest, UpdateVolunteer
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    RequestRedispatched,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.common.places import Places
from services.intake import handlers
from services.intake.config import DEFAULT_CATALOG

pytestmark = pytest.mark.domain
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
MENU = handlers.Menu.load(DEFAULT_CATALOG)
PLACES = Places.load(Path(__file__).with_name("samples") / "places.yaml")


def request(**fields: Any) -> dict[str, Any]:
    call = SubmitRequest.model_validate({
        "idempotency_key": "kiosk-12345678", "district": "beibei", "grid": "quanwai-01", "service": "repair.plumbing",
        "resident": {"name": "王秀英", "phone": "13800138000"},
    })
    doc, _ = handlers.new_request(call, MENU, T0)
    return {**doc, **fields}


def said(data: Any, minutes: int) -> Any:
    return new_event(data, source="test", district="beibei", subject="r", correlationid="r",
                     time=T0 + timedelta(minutes=minutes))


def ids(assignment: str = "a-1", volunteer: str = "v-1") -> dict[str, str]:
    return {"request_id": "r", "volunteer_id": volunteer, "assignment_id": assignment}


def offer(minutes: int, assignment: str = "a-1") -> Any:
    return said(VolunteerAssigned(**ids(assignment), expires_at=T0 + timedelta(hours=1)), minutes)


def test_a_late_offer_does_not_undo_an_acceptance() -> None:
    doc = request(status="accepted", stage_at=(T0 + timedelta(minutes=5)).isoformat())
    assert handlers.follow(doc, "offered", offer(2), "asked", "a-1") is None


def test_a_newer_offer_after_an_unmatched_moves_the_request_but_an_older_one_does_not() -> None:
    doc = request(status="unmatched", stage_at=(T0 + timedelta(minutes=5)).isoformat())
    assert handlers.follow(doc, "offered", offer(3), "asked", "a-1") is None
    move = handlers.follow(doc, "offered", offer(9, "a-2"), "asked", "a-2")
    assert move is not None and move.status == "offered" and move.changes["assignment_id"] == "a-2"


def test_work_of_the_next_round_that_overtakes_the_redispatch_starts_the_round() -> None:
    doc = request(status="reopened", assignment_id="a-1", volunteer_id="v-1", stars=2, round=0,
                  stage_at=(T0 + timedelta(minutes=30)).isoformat())
    accepted = said(AssignmentAccepted(**ids("a-2", "v-2")), 40)

    move = handlers.follow(doc, "accepted", accepted, "coming", "a-2", volunteer_id="v-2")
    assert move is not None and move.status == "accepted"
    assert move.changes["round"] == 1 and move.changes["stars"] is None and move.changes["volunteer_id"] == "v-2"

    moved = move.applied_to(doc, 1.0)
    late = handlers.redispatch(moved, said(RequestRedispatched(request_id="r", operator="小刘", reason="换人"), 35))
    assert late.note == "sent out again by 小刘: 换人" and set(late.update(2.0)) == {f"history.{late.key}"}


def test_an_unmatched_newer_than_the_reopen_belongs_to_the_next_round() -> None:
    doc = request(status="reopened", assignment_id="a-1", stage_at=(T0 + timedelta(minutes=30)).isoformat())
    unmatched = said(RequestUnmatched(request_id="r", reason="nobody"), 45)
    move = handlers.follow(doc, "unmatched", unmatched, "nobody")
    assert move is not None and move.status == "unmatched" and move.changes["round"] == 1


def test_a_late_offer_of_the_round_before_a_redispatch_changes_nothing() -> None:
    doc = request(status="reopened", assignment_id="a-1", stage_at=(T0 + timedelta(minutes=30)).isoformat())
    again = handlers.redispatch(doc, said(RequestRedispatched(request_id="r", operator="小刘", reason="换人"),
                                          40)).applied_to(doc, 1.0)
    assert again["status"] == "submitted" and again["round"] == 1
    assert handlers.follow(again, "offered", offer(5, "a-0"), "asked", "a-0") is None
    assert handlers.follow(again, "offered", offer(50, "a-2"), "asked", "a-2") is not None


def test_a_repeated_event_of_the_reopened_round_changes_nothing() -> None:
    doc = request(status="reopened", assignment_id="a-1", stage_at=(T0 + timedelta(minutes=30)).isoformat())
    completed = said(AssignmentCompleted(**ids("a-1"), hours="1"), 20)
    assert handlers.follow(doc, "completed", completed, "done", "a-1") is None


def test_a_rating_is_once_per_round_and_each_round_rates_under_its_own_event_id() -> None:
    first = request(status="rated", stars=5, done=True, volunteer_id="v-1", round=0)
    second = {**first, "round": 1, "volunteer_id": "v-2"}
    assert handlers.rated_event(first, 5, "", T0).id != handlers.rated_event(second, 5, "", T0).id
    with pytest.raises(ApiError) as refused:
        handlers.check_rating(first, 3)
    assert refused.value.code == "already_rated"


def test_a_request_without_a_window_is_due_sooner_when_urgent() -> None:
    assert handlers.due_time(T0, None, 7200) == T0.timestamp() + 7200
    end = T0 + timedelta(hours=5)
    assert handlers.due_time(T0, end, 7200) == end.timestamp()


def test_a_community_lists_its_grids_and_the_cursor_pages_after_the_last_item() -> None:
    queries = handlers.requests_queries(RequestsQuery(state="open", community="quanwaiyuan"), PLACES, 0)
    assert {(q["district"], q["grid"], q["status"]) for q in queries} == {
        ("beibei", grid, status) for grid in ("quanwai-01", "quanwai-02", "quanwai-03")
        for status in ("submitted", "offered")}

    cursor = handlers.cursor_after({"created": 12.5, "_id": "r-9"})
    [paged] = handlers.requests_queries(RequestsQuery(cursor=cursor), PLACES, 0)
    assert paged == {"$or": [{"created": {"$gt": 12.5}}, {"created": 12.5, "_id": {"$gt": "r-9"}}]}


def test_a_grid_outside_the_community_named_lists_nothing() -> None:
    call = RequestsQuery(community="quanwaiyuan", district="beibei", grid="chaoyang-01")
    assert handlers.requests_queries(call, PLACES, 0) == []


def test_an_update_that_changes_nothing_keeps_the_revision() -> None:
    stored = {"_id": "v-1", "name": "袁文", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"],
              "capacity": 1, "team": "", "attributes": [], "availability": [], "away": [], "revision": 3}
    same = handlers.updated_volunteer(stored, UpdateVolunteer(volunteer_id="v-1", capacity=1), MENU, PLACES, T0)
    more = handlers.updated_volunteer(stored, UpdateVolunteer(volunteer_id="v-1", capacity=2), MENU, PLACES, T0)
    assert same is stored
    assert more["capacity"] == 2 and more["revision"] == 4 and more["grids"] == ["quanwai-01"]
    assert handlers.registered_event(more, T0).id != handlers.registered_event(stored, T0).id


@pytest.mark.parametrize("status", ["offered", "unmatched", "accepted", "completed"])
def test_the_move_saved_without_reading_is_the_one_follow_decides_on_every_request_it_selects(status: str) -> None:
    event = said(AssignmentAccepted(**ids("a-3", "v-3")), 10)
    expect, unread = handlers.plain_follow(status, event, "note", "a-3", volunteer_id="v-3")
    selected = expect["status"]["$in"] if isinstance(expect["status"], dict) else [expect["status"]]

    assert expect["round"] == 0 and "reopened" not in selected and status not in selected
    for current in selected:
        doc = request(status=current, stage_at=(T0 + timedelta(minutes=20)).isoformat())
        assert handlers.follow(doc, status, event, "note", "a-3", volunteer_id="v-3") == unread


def test_a_request_holds_its_history_in_the_order_written_and_a_move_it_holds_the_line_of_was_made() -> None:
    doc = request()
    offered = handlers.follow(doc, "offered", offer(1, "a.1"), "asked", "a.1")
    assert offered is not None and not handlers.made(doc, offered)
    moved = offered.applied_to(doc, doc["created"] + 1)

    assert handlers.made(moved, offered) and moved["version"] == doc["version"] + 1
    assert [(line["status"], line["note"]) for line in handlers.history_lines(moved, [])] == [
        ("submitted", "received by kiosk"), ("offered", "asked")]
    assert not handlers.history_stored_apart(moved)


def test_a_request_stored_by_an_earlier_version_reads_its_lines_stored_apart_first() -> None:
    earlier = {key: value for key, value in request(status="offered").items() if key != "history"}
    stored_apart = [
        {"_id": f"{earlier['_id']}:submitted:0", "status": "submitted", "at": "t0", "note": "in", "seq": 1.0},
        {"_id": f"{earlier['_id']}:e-1", "status": "offered", "at": "t1", "note": "asked", "seq": 2.0}]
    crashed = {**earlier, "last_change": {"key": "e-2", "status": "accepted", "at": "t2", "note": "coming"}}
    accepted = handlers.follow(earlier, "accepted", said(AssignmentAccepted(**ids()), 3), "coming", "a-1")
    assert accepted is not None
    moved = accepted.applied_to(earlier, 3.0)

    assert handlers.history_stored_apart(earlier) and handlers.history_stored_apart(moved)
    assert [line["note"] for line in handlers.history_lines(moved, stored_apart)] == ["in", "asked", "coming"]
    assert [line["note"] for line in handlers.history_lines(crashed, stored_apart)] == ["in", "asked", "coming"]


@pytest.mark.parametrize(("stars", "done"), [(5, True), (2, True), (4, False)])
def test_the_rating_saved_without_reading_is_the_one_rate_decides_on_the_request_it_selects(
    stars: int, done: bool
) -> None:
    call = RateRequest(request_id="r", stars=stars, done=done, comment="好")
    expect, unread = handlers.plain_rate(call, T0)
    doc = request(**expect, volunteer_id="v-1")

    assert doc["status"] == "completed" and doc["round"] == 0
    assert handlers.rate(doc, call, T0) == unread
