"""The matcher's refusals and the events it publishes: plain functions over plain data, no I/O."""

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from contracts import ApiError, Envelope, new_event
from contracts.calls import VolunteerLoad
from contracts.envelope import derived_id
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentDeclined,
    AssignmentExpired,
    AssignmentWithdrawn,
    FellOut,
    HoursLogged,
    RequestRedispatched,
    RequestUnmatched,
    VolunteerAssigned,
)

SOURCE = "linli/matcher"


def assignment_id_for(request_id: str, round_: int, slot: int = 0) -> str:
    parts = ("assignment", request_id, str(round_)) if slot == 0 else ("assignment", request_id, str(round_), str(slot))
    return "a-" + derived_id(*parts)


def check_responder(assignment: dict[str, Any] | None, volunteer_id: str) -> dict[str, Any]:
    if assignment is None:
        raise ApiError("not_found", "no assignment with this id")
    if assignment["volunteer_id"] != volunteer_id:
        raise ApiError("not_your_assignment", "this assignment was offered to another volunteer")
    return assignment


def check_named_volunteer(volunteer: dict[str, Any] | None, district: str, free: int) -> None:
    """An operator may name a volunteer of the request's district who is still active and has room."""
    if volunteer is None or volunteer["district"] != district:
        raise ApiError("unknown_volunteer", "no volunteer with this id in the request's district")
    if volunteer.get("left"):
        raise ApiError("volunteer_left", "this volunteer has left and takes no more work",
                       {"volunteer_id": volunteer["_id"]})
    if free <= 0:
        raise ApiError("at_capacity", "this volunteer has no free capacity", {"volunteer_id": volunteer["_id"]})


def refuse_response(assignment: dict[str, Any], accept: bool, now: float) -> None:
    """Raised when a response cannot apply; returns quietly when it repeats one already recorded."""
    state = assignment["state"]
    if (accept and state == "accepted") or (not accept and state == "declined"):
        return
    if state == "offered" and assignment["expires"] <= now:
        raise ApiError("offer_expired", "the offer lapsed before the answer arrived", {"state": "expired"})
    if state == "withdrawn" and assignment.get("reason") == TAKEN:
        raise ApiError("taken", "another volunteer accepted this request first", {"state": state})
    raise ApiError("offer_closed", f"the offer is {state} and can no longer be answered", {"state": state})


def refuse_completion(assignment: dict[str, Any], hours: Decimal) -> None:
    state = assignment["state"]
    if state == "completed":
        if Decimal(assignment["hours"]) == hours:
            return
        raise ApiError(
            "already_completed", "this assignment was completed with other hours", {"hours": assignment["hours"]}
        )
    raise ApiError("not_accepted", f"only an accepted assignment can be completed (it is {state})", {"state": state})


def not_changeable(state: str, redispatch: bool) -> str:
    """Why an operator may not change a request in `state`; two of these states pass within moments."""
    if state == "placing":
        return "the matcher is placing this request right now; try again in a moment"
    if state == "completed" and redispatch:
        return ("a completed request can be dispatched again once the resident reopens it; "
                "if they just did, try again in a moment")
    return f"a {state} request cannot be changed"


TAKEN = "another volunteer accepted first"


def _event(data: Any, request: Mapping[str, Any], kind: str, key: str, causation: str | None) -> Envelope[Any]:
    return new_event(
        data,
        source=SOURCE,
        district=request["district"],
        subject=request["_id"],
        correlationid=request["_id"],
        causationid=causation,
        event_id=derived_id(kind, key),
    )


def ids(assignment: Mapping[str, Any]) -> dict[str, str]:
    return {
        "request_id": assignment["request_id"],
        "volunteer_id": assignment["volunteer_id"],
        "assignment_id": assignment["_id"],
        "code": assignment.get("code", ""),
        "request_code": assignment.get("request_code", ""),
    }


def window(doc: Mapping[str, Any]) -> dict[str, datetime | None]:
    return {
        "window_start": datetime.fromisoformat(doc["window_start"]) if doc.get("window_start") else None,
        "window_end": datetime.fromisoformat(doc["window_end"]) if doc.get("window_end") else None,
    }


def offer_details(request: Mapping[str, Any], tier: str) -> dict[str, Any]:
    """What a volunteer needs to decide, copied onto the offer so that its events and views need no request."""
    return {
        "request_code": request.get("code", ""),
        "description": request.get("description", ""),
        "window_start": request.get("window_start"),
        "window_end": request.get("window_end"),
        "place": tier,
    }


def offered(request: Mapping[str, Any], assignment: Mapping[str, Any]) -> Envelope[Any]:
    data = VolunteerAssigned(
        **ids(assignment),
        expires_at=datetime.fromtimestamp(assignment["expires"], UTC),
        service=request["service"],
        category=request["category"],
        grid=request["grid"],
        urgency=request["urgency"],
        stage=assignment.get("stage", ""),
        explanation=assignment.get("explanation", {}),
        district=request["district"],
        description=assignment.get("description", ""),
        place=assignment.get("place", ""),
        **window(assignment),
    )
    return _event(data, request, "volunteer.assigned", assignment["_id"], request.get("cause"))


def accepted(request: Mapping[str, Any], assignment: Mapping[str, Any]) -> Envelope[Any]:
    data = AssignmentAccepted(**ids(assignment), service=assignment.get("service", ""), **window(assignment))
    return _event(data, request, "assignment.accepted", assignment["_id"], None)


def redispatched(request: Mapping[str, Any], redispatch: Mapping[str, Any]) -> Envelope[Any]:
    data = RequestRedispatched(
        request_id=request["_id"], operator=redispatch["operator"], reason=redispatch["reason"],
        excluded=list(redispatch.get("excluded", [])), volunteer_id=redispatch.get("volunteer_id"),
    )
    return _event(data, request, "request.redispatched", f"{request['_id']}/{redispatch['round']}", None)


def reopens(stars: int, done: bool) -> bool:
    """A rating that sends the request back to an operator: 1–2 stars, or the resident says it was not done."""
    return stars <= 2 or not done


def week_of(moment: float, zone: Any) -> str:
    """The ISO week a moment falls in on the district's clock: weekly limits reset on Monday 00:00 there."""
    year, week, _ = datetime.fromtimestamp(moment, zone).isocalendar()
    return f"{year}-W{week:02d}"


def declined(request: Mapping[str, Any], assignment: Mapping[str, Any], reason: str) -> Envelope[Any]:
    data = AssignmentDeclined(**ids(assignment), reason=reason)
    return _event(data, request, "assignment.declined", assignment["_id"], None)


def expired(request: Mapping[str, Any], assignment: Mapping[str, Any]) -> Envelope[Any]:
    return _event(AssignmentExpired(**ids(assignment)), request, "assignment.expired", assignment["_id"], None)


def withdrawn(request: Mapping[str, Any], assignment: Mapping[str, Any], reason: str, by: str) -> Envelope[Any]:
    data = AssignmentWithdrawn(**ids(assignment), reason=reason, by=by)
    return _event(data, request, "assignment.withdrawn", assignment["_id"], None)


def completed(request: Mapping[str, Any], assignment: Mapping[str, Any]) -> list[Envelope[Any]]:
    hours = Decimal(assignment["hours"])
    done = _event(
        AssignmentCompleted(**ids(assignment), hours=hours, note=assignment.get("note", "")),
        request, "assignment.completed", assignment["_id"], None,
    )
    finished = assignment.get("completed_at")
    logged = _event(
        HoursLogged(
            volunteer_id=assignment["volunteer_id"],
            request_id=request["_id"],
            assignment_id=assignment["_id"],
            hours=hours,
            category=request["category"],
            service=request["service"],
            grid=request["grid"],
            urgency=request["urgency"],
            resident_ref=request.get("resident_ref", ""),
            completed_at=datetime.fromtimestamp(finished, UTC) if finished else None,
        ),
        request, "hours.logged", assignment["_id"], done.id,
    )
    return [done, logged]


def unmatched(request: Mapping[str, Any], reason: str) -> Envelope[Any]:
    why: dict[str, str] = request.get("why", {})
    data = RequestUnmatched(
        request_id=request["_id"],
        reason=reason,
        reason_code=request.get("reason_code", ""),
        request_code=request.get("code", ""),
        tried=list(request.get("tried", [])),
        candidates=[FellOut(volunteer_id=v, why=w) for v, w in sorted(why.items())],
        not_considered=dict(request.get("not_considered", {})),
    )
    return _event(data, request, "request.unmatched", f"{request['_id']}/{request['round']}", request.get("cause"))


def volunteer_load(volunteer: Mapping[str, Any], load: int, week: Mapping[str, Any]) -> VolunteerLoad:
    return VolunteerLoad(
        volunteer_id=volunteer["_id"], district=volunteer["district"], grids=volunteer["grids"],
        skills=volunteer["skills"], team=volunteer.get("team", ""), capacity=volunteer["capacity"], load=load,
        offers_this_week=int(week.get("offers", 0)),
        hours_this_week=Decimal(str(round(float(week.get("hours", 0.0)), 2))),
    )
