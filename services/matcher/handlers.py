"""The matcher's decisions: plain functions over plain data, no I/O."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from contracts import ApiError, Envelope, new_event
from contracts.envelope import derived_id
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentDeclined,
    AssignmentExpired,
    HoursLogged,
    RequestUnmatched,
    VolunteerAssigned,
)

SOURCE = "linli/matcher"


@dataclass(frozen=True)
class Candidate:
    volunteer_id: str
    same_grid: bool
    free: int
    capacity: int

    @property
    def load(self) -> float:
        return 1 - self.free / self.capacity


def assignment_id_for(request_id: str, round_: int) -> str:
    return "a-" + derived_id("assignment", request_id, str(round_))


def skilled(volunteer: dict[str, Any], request: dict[str, Any]) -> bool:
    return request["service"] in volunteer["skills"] or request["category"] in volunteer["skills"]


def rank(request: dict[str, Any], volunteers: list[dict[str, Any]], free: dict[str, int]) -> list[Candidate]:
    """Who to offer the request to, best first: skilled, in the district, with a free slot, not yet tried.

    Same grid first; then the least loaded, so work spreads; the id breaks ties so every replica agrees.
    """
    tried = set(request.get("tried", []))
    candidates = [
        Candidate(v["_id"], request["grid"] in v["grids"], free.get(v["_id"], 0), v["capacity"])
        for v in volunteers
        if v["district"] == request["district"]
        and skilled(v, request)
        and v["_id"] not in tried
        and free.get(v["_id"], 0) > 0
    ]
    return sorted(candidates, key=lambda c: (not c.same_grid, c.load, c.volunteer_id))


def unmatched_reason(request: dict[str, Any], volunteers: list[dict[str, Any]], free: dict[str, int]) -> str:
    skilled_here = [v for v in volunteers if v["district"] == request["district"] and skilled(v, request)]
    if not skilled_here:
        return f"no volunteer in {request['district']} has the skill {request['service']}"
    tried = set(request.get("tried", []))
    if all(v["_id"] in tried for v in skilled_here):
        return f"all {len(skilled_here)} skilled volunteer(s) were offered it and declined or did not answer"
    return "every skilled volunteer who was not yet asked is at full capacity"


def check_responder(assignment: dict[str, Any] | None, volunteer_id: str) -> dict[str, Any]:
    if assignment is None:
        raise ApiError("not_found", "no assignment with this id")
    if assignment["volunteer_id"] != volunteer_id:
        raise ApiError("not_your_assignment", "this assignment was offered to another volunteer")
    return assignment


def refuse_response(assignment: dict[str, Any], accept: bool, now: float) -> None:
    """Raised when a response cannot apply; returns quietly when it repeats one already recorded."""
    state = assignment["state"]
    if (accept and state == "accepted") or (not accept and state == "declined"):
        return
    if state == "offered" and assignment["expires"] <= now:
        raise ApiError("offer_expired", "the offer lapsed before the answer arrived", {"state": "expired"})
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


def _event(data: Any, request: dict[str, Any], kind: str, key: str, causation: str | None) -> Envelope[Any]:
    return new_event(
        data,
        source=SOURCE,
        district=request["district"],
        subject=request["_id"],
        correlationid=request["_id"],
        causationid=causation,
        event_id=derived_id(kind, key),
    )


def offered(request: dict[str, Any], assignment: dict[str, Any]) -> Envelope[Any]:
    data = VolunteerAssigned(
        request_id=request["_id"],
        volunteer_id=assignment["volunteer_id"],
        assignment_id=assignment["_id"],
        expires_at=datetime.fromtimestamp(assignment["expires"], UTC),
        service=request["service"],
        category=request["category"],
        grid=request["grid"],
        urgency=request["urgency"],
    )
    return _event(data, request, "volunteer.assigned", assignment["_id"], request.get("cause"))


def ids(assignment: dict[str, Any]) -> dict[str, str]:
    return {
        "request_id": assignment["request_id"],
        "volunteer_id": assignment["volunteer_id"],
        "assignment_id": assignment["_id"],
    }


def accepted(request: dict[str, Any], assignment: dict[str, Any]) -> Envelope[Any]:
    return _event(AssignmentAccepted(**ids(assignment)), request, "assignment.accepted", assignment["_id"], None)


def declined(request: dict[str, Any], assignment: dict[str, Any], reason: str) -> Envelope[Any]:
    data = AssignmentDeclined(**ids(assignment), reason=reason)
    return _event(data, request, "assignment.declined", assignment["_id"], None)


def expired(request: dict[str, Any], assignment: dict[str, Any]) -> Envelope[Any]:
    return _event(AssignmentExpired(**ids(assignment)), request, "assignment.expired", assignment["_id"], None)


def completed(request: dict[str, Any], assignment: dict[str, Any]) -> list[Envelope[Any]]:
    hours = Decimal(assignment["hours"])
    done = _event(
        AssignmentCompleted(**ids(assignment), hours=hours, note=assignment.get("note", "")),
        request, "assignment.completed", assignment["_id"], None,
    )
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
            completed_at=datetime.fromtimestamp(assignment["completed_at"], UTC) if assignment.get("completed_at") else None,
        ),
        request, "hours.logged", assignment["_id"], done.id,
    )
    return [done, logged]


def unmatched(request: dict[str, Any], reason: str) -> Envelope[Any]:
    data = RequestUnmatched(request_id=request["_id"], reason=reason, tried=list(request.get("tried", [])))
    return _event(data, request, "request.unmatched", f"{request['_id']}/{request['round']}", request.get("cause"))
