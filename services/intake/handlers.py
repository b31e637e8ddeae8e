"""Intake's decisions: plain functions over plain data, no I/O."""

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from contracts import ApiError, Envelope, new_event
from contracts.calls import (
    AssignmentDetails,
    Catalog,
    CatalogItem,
    CloseRequest,
    CommunityPlace,
    DistrictPlaces,
    GridPlace,
    PlaceName,
    Places as PlacesView,
    RateRequest,
    RegisterVolunteer,
    RequestsQuery,
    RequestStatus,
    RequestSummary,
    SubmitRequest,
    UpdateVolunteer,
    VolunteerProfile,
)
from contracts.envelope import derived_id
from contracts.events import (
    PairingCreated,
    PairingEnded,
    RequestCancelled,
    RequestClosed,
    RequestCreated,
    RequestRated,
    RequestReopened,
    VolunteerLeft,
    VolunteerRegistered,
)
from services.common.codes import looks_like_code, normalize, short_code
from services.common.places import Places

SOURCE = "linli/intake"

# How far along a request is, as the resident sees it. Events can arrive out of order or twice; a status
# only moves to a higher rank (or, while nobody has accepted yet, to a later fact of the same rank), so a
# late or repeated event changes nothing. A rating closes a completed request either way: rated, or
# reopened for an operator when it went badly; a reopened request is sent out again (a new round) or closed.
RANK = {
    "submitted": 0, "offered": 1, "unmatched": 1, "accepted": 2, "completed": 3,
    "rated": 4, "reopened": 4, "closed": 5, "cancelled": 5,
}
CANCELLABLE = {"submitted", "offered", "unmatched", "accepted"}
OPEN = ["submitted", "offered"]
ASSIGNED = ["accepted"]
KNOWN_NEEDS = ("sign-language", "woman", "wheelchair")


class Menu:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.item_category = {item.id: cat.id for cat in catalog.categories for item in cat.items}
        self.items: dict[str, CatalogItem] = {item.id: item for cat in catalog.categories for item in cat.items}
        self.categories = {cat.id for cat in catalog.categories}

    @classmethod
    def load(cls, path: Path) -> "Menu":
        return cls(Catalog.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))

    def category_of(self, service: str) -> str:
        try:
            return self.item_category[service]
        except KeyError:
            raise ApiError("unknown_service", f"{service!r} is not on the service menu", {"service": service}) from None

    def check_skills(self, skills: list[str]) -> None:
        unknown = [s for s in skills if s not in self.categories and s not in self.items]
        if unknown:
            raise ApiError("unknown_skill", "skills must be menu categories or items", {"unknown": unknown})

    def name_of(self, service: str) -> str:
        item = self.items.get(service)
        return item.name if item else service


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def request_id_for(district: str, idempotency_key: str) -> str:
    return "r-" + derived_id("request", district, idempotency_key)


def digits_of(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def keyed_digest(key: bytes, kind: str, district: str, phone: str) -> str:
    """HMAC-SHA256 under the district's secret: without the secret, trying every phone number finds nothing."""
    return hmac.new(key, "/".join((kind, district, digits_of(phone))).encode(), hashlib.sha256).hexdigest()


def resident_ref_for(key: bytes, district: str, phone: str) -> str:
    # "p2-" marks version 2 (keyed); version 1 refs ("p-" + a uuid5 of the phone) are kept as they were stored.
    return "p2-" + keyed_digest(key, "resident", district, phone)[:32]


def phone_key_for(key: bytes, district: str, phone: str) -> str:
    """How a volunteer is found again by phone; the volunteer id itself is random."""
    return keyed_digest(key, "volunteer", district, phone)


def legacy_resident_ref(district: str, phone: str) -> str:
    """Version 1 (unkeyed, reversible by trying phones): only to recognise data stored before version 2."""
    return "p-" + derived_id("resident", district, digits_of(phone))


def is_legacy_ref(ref: str) -> bool:
    return bool(ref) and not ref.startswith("p2-")


def as_code(text: str) -> str | None:
    """What a person typed, as a short code to look up, when it can be one."""
    return normalize(text) if looks_like_code(text) else None


# --- places ---------------------------------------------------------------------------------------------


def check_places(places: Places, district: str, grids: list[str]) -> None:
    if problems := places.problems(district, grids):
        raise ApiError("unknown_place", "; ".join(p["problem"] for p in problems) + " (details list the choices)",
                       problems)


def community_grids(places: Places, district: str | None, community: str) -> tuple[str, list[str]]:
    """The district and grids of a community; a community named without its district is looked up in all."""
    candidates = [places.districts[district]] if district in places.districts else list(places.districts.values())
    for found in candidates:
        if community in found.communities:
            return found.id, sorted(g.id for g in found.grids.values() if g.community == community)
    choices = sorted({c for d in candidates for c in d.communities})
    raise ApiError("unknown_place", f"unknown community {community!r}",
                   [{"field": "community", "problem": f"unknown community {community!r}", "choices": choices}])


def places_view(places: Places, district: str | None) -> PlacesView:
    if district is not None:
        check_places(places, district, [])
    chosen = [places.districts[district]] if district is not None else list(places.districts.values())
    return PlacesView(districts=[
        DistrictPlaces(
            id=d.id, name=d.name, name_en=d.name_en, timezone=d.timezone,
            streets=[PlaceName(id=s, name=about["name"], name_en=about["name_en"]) for s, about in d.streets.items()],
            communities=[CommunityPlace(id=c, name=about["name"], name_en=about["name_en"], street=about["street"])
                         for c, about in d.communities.items()],
            grids=[GridPlace(id=g.id, name=g.name, name_en=g.name_en, community=g.community,
                             neighbours=list(g.neighbours)) for g in d.grids.values()],
        )
        for d in chosen
    ])


# --- requests -------------------------------------------------------------------------------------------


def due_time(created: datetime, window_end: datetime | None, overdue_after: float) -> float:
    """When an unfinished request becomes overdue: its window's end, or a while after it was made."""
    return window_end.timestamp() if window_end else created.timestamp() + overdue_after


def new_request(call: SubmitRequest, menu: Menu, now: datetime, overdue_after: float = 86400.0,
                code_length: int = 6, resident_ref: str = "") -> tuple[dict[str, Any], Envelope[Any]]:
    category = menu.category_of(call.service)
    request_id = request_id_for(call.district, call.idempotency_key)
    doc = {
        "_id": request_id,
        "code": short_code(request_id, code_length),
        "fingerprint": fingerprint(call.model_dump(mode="json")),
        "district": call.district,
        "grid": call.grid,
        "service": call.service,
        "category": category,
        "urgency": call.urgency,
        "description": call.description,
        "window_start": call.window_start.isoformat() if call.window_start else None,
        "window_end": call.window_end.isoformat() if call.window_end else None,
        "channel": call.channel,
        "resident": call.resident.model_dump(),
        "resident_ref": resident_ref,
        "needs": sorted(set(call.needs)),
        "status": "submitted",
        # Each line keyed by what made it (the event id, or the step and round), so a repeat writes none.
        "history": {"submitted:0": history_line("submitted:0", "submitted", now.isoformat(),
                                                f"received by {call.channel}", now.timestamp())},
        "round": 0,
        "version": 0,
        "created_at": now.isoformat(),
        "created": now.timestamp(),
        "due": due_time(now, call.window_end, overdue_after),
        "announced": False,
    }
    return doc, created_event(doc)


def created_event(doc: dict[str, Any]) -> Envelope[Any]:
    data = RequestCreated(
        request_id=doc["_id"],
        district=doc["district"],
        grid=doc["grid"],
        service=doc["service"],
        category=doc["category"],
        urgency=doc["urgency"],
        description=doc["description"],
        window_start=doc["window_start"],
        window_end=doc["window_end"],
        channel=doc["channel"],
        resident_ref=doc.get("resident_ref", ""),
        needs=doc.get("needs", []),
        code=doc.get("code", ""),
    )
    return new_event(
        data,
        source=SOURCE,
        district=doc["district"],
        subject=doc["_id"],
        correlationid=doc["_id"],
        event_id=derived_id("request.created", doc["_id"]),
        time=datetime.fromisoformat(doc["created_at"]),
    )


def same_submission(existing: dict[str, Any], call: SubmitRequest) -> None:
    if existing["fingerprint"] != fingerprint(call.model_dump(mode="json")):
        raise ApiError(
            "idempotency_key_reused",
            "this idempotency_key was already used for a different request",
            {"request_id": existing["_id"]},
        )


def check_needs(needs: list[str]) -> None:
    unknown = [n for n in needs if n not in KNOWN_NEEDS and not n.startswith("dialect:")]
    if unknown:
        raise ApiError("unknown_need", f"needs must be among {', '.join(KNOWN_NEEDS)} or dialect:<name>",
                       {"unknown": unknown})


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def status_view(doc: dict[str, Any], history: list[dict[str, Any]]) -> RequestStatus:
    return RequestStatus(
        request_id=doc["_id"],
        code=doc.get("code", ""),
        status=doc["status"],
        district=doc["district"],
        grid=doc["grid"],
        service=doc["service"],
        urgency=doc["urgency"],
        volunteer_id=doc.get("volunteer_id"),
        volunteer_name=doc.get("volunteer_name") or "",
        window_start=when(doc.get("window_start")),
        window_end=when(doc.get("window_end")),
        hours=Decimal(doc["hours"]) if doc.get("hours") else None,
        stars=doc.get("stars"),
        created_at=doc["created_at"],
        history=history,
    )


def phone_matches(doc: dict[str, Any], last4: str) -> bool:
    """No digits asked for, or the last four digits of the resident's phone."""
    digits = "".join(c for c in str(doc.get("resident", {}).get("phone", "")) if c.isdigit())
    return not last4 or (len(digits) >= 4 and digits[-4:] == last4)


def is_overdue(doc: dict[str, Any], now: float) -> bool:
    return doc["status"] in OPEN + ASSIGNED and doc.get("due", float("inf")) < now


def summary_view(doc: dict[str, Any], places: Places, menu: Menu, now: float) -> RequestSummary:
    return RequestSummary(
        request_id=doc["_id"],
        code=doc.get("code", ""),
        status=doc["status"],
        overdue=is_overdue(doc, now),
        district=doc["district"],
        grid=doc["grid"],
        place=places.place_name(doc["district"], doc["grid"]),
        community=places.community_of(doc["district"], doc["grid"]),
        service=doc["service"],
        service_name=menu.name_of(doc["service"]),
        urgency=doc["urgency"],
        created_at=doc["created_at"],
        window_start=when(doc.get("window_start")),
        window_end=when(doc.get("window_end")),
        volunteer_id=doc.get("volunteer_id"),
    )


# --- the list of requests an operator works through ---------------------------------------------------------


STATES: dict[str, list[str]] = {"open": OPEN, "assigned": ASSIGNED, "overdue": OPEN + ASSIGNED}


def requests_queries(call: RequestsQuery, places: Places, now: float) -> list[dict[str, Any]]:
    """The queries for a page of requests, one per status and grid asked for: each selects by scalar equality
    on indexed fields (nx-27017 uses an index for nothing else), and their pages merge in (created, _id) order."""
    district = call.district
    grids: list[str] | None = None
    if district is not None:
        check_places(places, district, [])
    if call.community:
        district, grids = community_grids(places, district, call.community)
    if call.grid:
        if district is None:
            raise ApiError("invalid_request", "a grid is named within its district",
                           [{"field": "district", "problem": "required with grid"}])
        check_places(places, district, [call.grid])
        grids = [call.grid] if grids is None or call.grid in grids else []
    base: dict[str, Any] = {} if district is None else {"district": district}
    if call.state == "overdue":
        base["due"] = {"$lt": now}
    created: dict[str, float] = {}
    if call.since:
        created["$gte"] = call.since.timestamp()
    if call.until:
        created["$lt"] = call.until.timestamp()
    if created:
        base["created"] = created
    if call.cursor:
        after_created, after_id = read_cursor(call.cursor)
        base["$or"] = [{"created": {"$gt": after_created}}, {"created": after_created, "_id": {"$gt": after_id}}]
    statuses: list[str | None] = [None] if call.state == "any" else list(STATES.get(call.state, [call.state]))
    return [
        {**base, **({"grid": grid} if grid else {}), **({"status": status} if status else {})}
        for status in statuses
        for grid in ([None] if grids is None else grids)
    ]


def cursor_after(doc: dict[str, Any]) -> str:
    raw = json.dumps([doc["created"], doc["_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, request_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created), str(request_id)
    except (ValueError, TypeError):
        raise ApiError("invalid_request", "this cursor was not given out by intake.requests",
                       [{"field": "cursor", "problem": "not a cursor"}]) from None


# --- how a request moves ---------------------------------------------------------------------------------


def line_key(key: str) -> str:
    # Event ids come from other services and may hold a dot, which MongoDB would read as a path.
    return key.replace(".", "_").replace("$", "_")


def history_line(key: str, status: str, at: str, note: str, seq: float) -> dict[str, Any]:
    return {"key": key, "status": status, "at": at, "note": note, "seq": seq}


@dataclass(frozen=True)
class Move:
    """One change of a request's status, with the history line it leaves in the request; `key` makes it happen
    once: a request already holding the line under that key has had this change."""

    status: str
    key: str
    at: datetime
    note: str
    changes: dict[str, Any] = field(default_factory=dict)
    note_only: bool = False  # a line in the history, the status as it is

    def update(self, seq: float) -> dict[str, Any]:
        """The $set that makes the change and writes its history line in the same command."""
        line = {f"history.{line_key(self.key)}": history_line(self.key, self.status, self.at.isoformat(), self.note,
                                                              seq)}
        if self.note_only:
            return line
        return {"status": self.status, "stage_at": self.at.isoformat(), **line, **self.changes}

    def applied_to(self, doc: dict[str, Any], seq: float) -> dict[str, Any]:
        """The request as the update leaves it."""
        update = self.update(seq)
        line = update.pop(f"history.{line_key(self.key)}")
        return {**doc, **update, "history": {**doc.get("history", {}), line_key(self.key): line},
                "version": doc.get("version", 0) + 1}


def made(doc: dict[str, Any], move: Move) -> bool:
    """Whether the request already holds the line this move writes: then the move was made."""
    return line_key(move.key) in doc.get("history", {})


def history_stored_apart(doc: dict[str, Any]) -> bool:
    """A request stored by an earlier version keeps its history lines in status_changes (its first line, the
    submission, is never in the request itself)."""
    return "submitted:0" not in doc.get("history", {})


def history_lines(doc: dict[str, Any], stored_apart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every line of the request's history in the order written: those stored apart by an earlier version
    (under "<request id>:<key>"), then those the request holds."""
    lines = {row["_id"].removeprefix(f"{doc['_id']}:"): row for row in stored_apart}
    if (last := doc.get("last_change")) and last["key"] not in lines:
        # An earlier version wrote the line after the change, and a crash in between left it only here.
        lines[last["key"]] = {**last, "seq": max((row.get("seq", 0.0) for row in stored_apart), default=0.0)}
    lines.update(doc.get("history", {}))
    return sorted(lines.values(), key=lambda line: line.get("seq", 0.0))


NEXT_ROUND_RESET = {"stars": None, "comment": "", "done": True, "hours": None, "volunteer_id": None,
                    "volunteer_name": "", "assignment_id": None, "assignment_code": ""}


def next_round(doc: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {**NEXT_ROUND_RESET, "round": doc.get("round", 0) + 1, "round_at": at.isoformat(),
            "reopened_assignment": doc.get("assignment_id")}


def behind(status: str) -> list[str]:
    return [s for s, rank in RANK.items() if rank < RANK[status]]


def plain_follow(status: str, event: Envelope[Any], note: str, assignment_id: str | None = None,
                 **changes: Any) -> tuple[dict[str, Any], Move]:
    """The move follow() makes on a request of the first round still behind `status`, with the filter that
    selects such a request: the usual case, saved in one command without reading the request first."""
    earlier = behind(status)
    expect = {"round": 0, "status": earlier[0] if len(earlier) == 1 else {"$in": earlier}}
    if assignment_id:
        changes["assignment_id"] = assignment_id
    return expect, Move(status, event.id, event.time, note, changes)


def moves_on(doc: dict[str, Any], status: str, at: datetime) -> bool:
    current = doc["status"]
    if RANK[status] > RANK[current]:
        return True
    # Before anyone has the work, the latest fact wins: offered again after a decline, unmatched after all fell out.
    stage_at = when(doc.get("stage_at")) or datetime.fromisoformat(doc["created_at"])
    return RANK[status] == RANK[current] <= RANK["accepted"] and at > stage_at


def follow(doc: dict[str, Any], status: str, event: Envelope[Any], note: str,
           assignment_id: str | None = None, **changes: Any) -> Move | None:
    """What an event from the matcher does to a request: move it on, or nothing when it is late or repeated."""
    at = event.time
    if doc["status"] == "reopened" and assignment_id != doc.get("assignment_id") \
            and at > (when(doc.get("stage_at")) or at):
        # Newer than the reopen and not about the work rated: the next round, which overtook
        # request.redispatched (they come through separate consumers). The new round starts here.
        return Move(status, event.id, at, note, {**next_round(doc, at), "assignment_id": assignment_id, **changes})
    if (started := when(doc.get("round_at"))) and at < started:
        return None  # a late word of the round before
    if not moves_on(doc, status, at):
        return None
    if assignment_id:
        changes["assignment_id"] = assignment_id
    return Move(status, event.id, at, note, changes)


def redispatch(doc: dict[str, Any], event: Envelope[Any]) -> Move:
    data = event.data
    note = f"sent out again by {data.operator}: {data.reason}"
    if doc["status"] == "reopened":
        return Move("submitted", event.id, event.time, note, next_round(doc, event.time))
    return Move(doc["status"], event.id, event.time, note, note_only=True)  # the new round already began


def check_rating(doc: dict[str, Any], stars: int, done: bool = True) -> str:
    """Returns 'rate' to record it, 'repeat' when this exact rating is already recorded."""
    if doc["status"] in ("rated", "reopened", "closed") and doc.get("stars") is not None:
        if doc.get("stars") == stars and doc.get("done", True) == done:
            return "repeat"
        raise ApiError("already_rated", "this request was already rated", {"stars": doc.get("stars")})
    if doc["status"] != "completed":
        raise ApiError(
            "not_completed", "a request can be rated once its service is completed", {"status": doc["status"]}
        )
    return "rate"


def rate(doc: dict[str, Any], call: RateRequest, now: datetime) -> Move | None:
    if check_rating(doc, call.stars, call.done) == "repeat":
        return None
    return rating(call, now, doc.get("round", 0))


def plain_rate(call: RateRequest, now: datetime) -> tuple[dict[str, Any], Move]:
    """The rating of a completed request of the first round, with the filter that selects such a request: the
    usual case, saved in one command without reading the request first."""
    return {"status": "completed", "round": 0}, rating(call, now, 0)


def rating(call: RateRequest, now: datetime, round_: int) -> Move:
    outcome = rating_outcome(call.stars, call.done)
    return Move(outcome, f"rated:{round_}", now, rating_note(call.stars, call.done, call.comment),
                {"stars": call.stars, "comment": call.comment, "done": call.done,
                 **({"reopened_at": now.isoformat()} if outcome == "reopened" else {})})


def rating_outcome(stars: int, done: bool) -> str:
    # One or two stars, or "not done", must not silently count the hours: an operator looks first.
    return "reopened" if stars <= 2 or not done else "rated"


def rating_note(stars: int, done: bool, comment: str) -> str:
    said = f"{stars} stars" + ("" if done else ", not done") + (f": {comment}" if comment else "")
    return f"reopened for an operator's review: {said}" if rating_outcome(stars, done) == "reopened" else said


def round_id(kind: str, doc: dict[str, Any]) -> str:
    # The first round keeps the ids it always had; each later round's rating is a fact of its own.
    n = doc.get("round", 0)
    return derived_id(kind, doc["_id"]) if n == 0 else derived_id(kind, doc["_id"], str(n))


def rating_events(doc: dict[str, Any], now: datetime) -> list[Envelope[Any]]:
    events = [rated_event(doc, doc["stars"], doc.get("comment", ""), now)]
    if rating_outcome(doc["stars"], doc.get("done", True)) == "reopened":
        events.append(new_event(
            RequestReopened(request_id=doc["_id"], volunteer_id=doc["volunteer_id"], stars=doc["stars"],
                            reason=rating_note(doc["stars"], doc.get("done", True), doc.get("comment", ""))),
            source=SOURCE, district=doc["district"], subject=doc["_id"], correlationid=doc["_id"],
            event_id=round_id("request.reopened", doc), time=now,
        ))
    return events


def rated_event(doc: dict[str, Any], stars: int, comment: str, now: datetime) -> Envelope[Any]:
    return new_event(
        RequestRated(request_id=doc["_id"], volunteer_id=doc["volunteer_id"], stars=stars, comment=comment,
                     done=doc.get("done", True)),
        source=SOURCE,
        district=doc["district"],
        subject=doc["_id"],
        correlationid=doc["_id"],
        event_id=round_id("request.rated", doc),
        time=now,
    )


def cancel(doc: dict[str, Any], reason: str, operator: str, now: datetime) -> Move | None:
    if doc["status"] == "cancelled":
        return None
    if doc["status"] not in CANCELLABLE:
        raise ApiError("not_cancellable", f"a {doc['status']} request cannot be cancelled", {"status": doc["status"]})
    who = f" by {operator}" if operator else ""
    return Move("cancelled", "cancelled", now, f"cancelled{who}: {reason or 'no reason given'}",
                {"cancelled_by": operator or "resident", "cancel_reason": reason})


def cancelled_event(doc: dict[str, Any], reason: str, now: datetime) -> Envelope[Any]:
    return new_event(
        RequestCancelled(request_id=doc["_id"], reason=reason),
        source=SOURCE,
        district=doc["district"],
        subject=doc["_id"],
        correlationid=doc["_id"],
        event_id=derived_id("request.cancelled", doc["_id"]),
        time=now,
    )


def close(doc: dict[str, Any], call: CloseRequest, now: datetime) -> Move | None:
    if doc["status"] == "closed":
        return None
    if doc["status"] != "reopened":
        raise ApiError("not_changeable", f"only a reopened request is closed; this one is {doc['status']}",
                       {"status": doc["status"]})
    return Move("closed", "closed", now, f"closed by {call.operator}: {call.reason}",
                {"closed_by": call.operator, "close_reason": call.reason})


def closed_event(doc: dict[str, Any], now: datetime) -> Envelope[Any]:
    return new_event(
        RequestClosed(request_id=doc["_id"], operator=doc["closed_by"], reason=doc["close_reason"]),
        source=SOURCE, district=doc["district"], subject=doc["_id"], correlationid=doc["_id"],
        event_id=derived_id("request.closed", doc["_id"]), time=now,
    )


# --- volunteers ------------------------------------------------------------------------------------------


PROFILE_FIELDS = ("grids", "skills", "capacity", "team", "attributes", "availability", "away")


def same_person(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


def new_volunteer(call: RegisterVolunteer, menu: Menu, now: datetime, volunteer_id: str,
                  phone_key: str) -> dict[str, Any]:
    menu.check_skills(call.skills)
    return {
        "_id": volunteer_id,
        "name": call.name,
        "phone": call.phone,
        "phone_key": phone_key,
        "district": call.district,
        "grids": sorted(set(call.grids)),
        "skills": sorted(set(call.skills)),
        "capacity": call.capacity,
        "team": call.team,
        "attributes": sorted(set(call.attributes)),
        "availability": [w.model_dump() for w in call.availability],
        "away": [p.model_dump(mode="json") for p in call.away],
        "active": True,
        "revision": 0,
        "updated_at": now.isoformat(),
    }


def check_phone(stored: dict[str, Any], call: RegisterVolunteer) -> None:
    """A phone is one person: the same phone under another name is somebody else, or a change of name."""
    if not same_person(stored["name"], call.name):
        raise ApiError(
            "phone_registered",
            f"this phone is already registered in {call.district} under another name; to change that volunteer's "
            "profile or name, call linli.api.intake.update_volunteer with their volunteer_id",
            {"volunteer_id": stored["_id"]},
        )


def rejoined(stored: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """A volunteer who left and registers again: the new profile, a new revision."""
    return {**fresh, "_id": stored["_id"], "revision": stored.get("revision", 0) + 1, "left_reason": ""}


def updated_volunteer(stored: dict[str, Any], call: UpdateVolunteer, menu: Menu, places: Places,
                      now: datetime) -> dict[str, Any]:
    """The profile with the fields the call names replaced; the same profile when nothing changes."""
    if not stored.get("active", True):
        raise ApiError("volunteer_left", "this volunteer has left; register again to come back",
                       {"volunteer_id": stored["_id"]})
    changes: dict[str, Any] = {}
    if call.grids is not None:
        check_places(places, stored["district"], call.grids)
        changes["grids"] = sorted(set(call.grids))
    if call.skills is not None:
        menu.check_skills(call.skills)
        changes["skills"] = sorted(set(call.skills))
    if call.attributes is not None:
        changes["attributes"] = sorted(set(call.attributes))
    if call.availability is not None:
        changes["availability"] = [w.model_dump() for w in call.availability]
    if call.away is not None:
        changes["away"] = [p.model_dump(mode="json") for p in call.away]
    for name in ("capacity", "team", "name"):
        if getattr(call, name) is not None:
            changes[name] = getattr(call, name)
    if all(stored.get(k) == v for k, v in changes.items()):
        return stored
    return {**stored, **changes, "revision": stored.get("revision", 0) + 1, "updated_at": now.isoformat()}


def left_volunteer(stored: dict[str, Any], reason: str, now: datetime) -> dict[str, Any]:
    if not stored.get("active", True):
        return stored
    return {**stored, "active": False, "left_reason": reason, "left_at": now.isoformat(),
            "revision": stored.get("revision", 0) + 1, "updated_at": now.isoformat()}


def registered_event(doc: dict[str, Any], now: datetime) -> Envelope[Any]:
    profile = {k: doc[k] for k in PROFILE_FIELDS}
    return new_event(
        VolunteerRegistered(volunteer_id=doc["_id"], district=doc["district"], **profile),
        source=SOURCE,
        district=doc["district"],
        subject=doc["_id"],
        correlationid=doc["_id"],
        # One event per revision of the profile: registering or updating again to the same profile is a repeat.
        event_id=derived_id("volunteer.registered", doc["_id"], str(doc.get("revision", 0)),
                            fingerprint({"district": doc["district"], **profile})),
        time=now,
    )


def left_event(doc: dict[str, Any], now: datetime) -> Envelope[Any]:
    return new_event(
        VolunteerLeft(volunteer_id=doc["_id"], district=doc["district"], reason=doc.get("left_reason", "")),
        source=SOURCE, district=doc["district"], subject=doc["_id"], correlationid=doc["_id"],
        event_id=derived_id("volunteer.left", doc["_id"], str(doc.get("revision", 0))), time=now,
    )


def profile_view(doc: dict[str, Any]) -> VolunteerProfile:
    return VolunteerProfile(volunteer_id=doc["_id"], name=doc["name"], district=doc["district"],
                            active=doc.get("active", True), **{k: doc[k] for k in PROFILE_FIELDS})


# --- what the accepted volunteer is told --------------------------------------------------------------------


def details_view(assignment: dict[str, Any], volunteer_id: str, request: dict[str, Any], places: Places,
                 menu: Menu, ttl: float, now: datetime) -> AssignmentDetails:
    if assignment["volunteer_id"] != volunteer_id:
        raise ApiError("not_your_assignment", "only the volunteer who accepted this work is given its details",
                       {"assignment_id": assignment["_id"]})
    done = when(assignment.get("completed_at"))
    until = done + timedelta(seconds=ttl) if done else None
    if until is not None and until < now:
        raise ApiError("details_expired", "the work is done and its details are no longer given out",
                       {"assignment_id": assignment["_id"], "access_until": until.isoformat()})
    if request["status"] == "cancelled" or assignment.get("withdrawn_at"):
        raise ApiError("details_expired", "the request was cancelled or the work given to someone else",
                       {"assignment_id": assignment["_id"]})
    return AssignmentDetails(
        request_id=request["_id"], code=request.get("code", ""), assignment_id=assignment["_id"],
        district=request["district"], grid=request["grid"],
        place=places.place_name(request["district"], request["grid"]),
        service=request["service"], service_name=menu.name_of(request["service"]), urgency=request["urgency"],
        description=request.get("description", ""),
        window_start=when(request.get("window_start")), window_end=when(request.get("window_end")),
        resident_name=request["resident"]["name"], resident_phone=request["resident"]["phone"],
        address=request["resident"].get("address", ""), access_until=until,
    )


# --- standing pairings -----------------------------------------------------------------------------------


def pairing_event(district: str, pairing_id: str, resident_ref: str, volunteer_id: str, kind: str,
                  now: datetime) -> Envelope[Any]:
    return new_event(
        PairingCreated(pairing_id=pairing_id, district=district, resident_ref=resident_ref,
                       volunteer_id=volunteer_id, kind=kind),
        source=SOURCE, district=district, subject=volunteer_id, correlationid=pairing_id,
        event_id=derived_id("pairing.created", pairing_id, str(now.timestamp())), time=now,
    )


def pairing_ended_event(pairing: dict[str, Any], reason: str, now: datetime) -> Envelope[Any]:
    return new_event(
        PairingEnded(pairing_id=pairing["_id"], resident_ref=pairing["resident_ref"],
                     volunteer_id=pairing["volunteer_id"], reason=reason),
        source=SOURCE, district=pairing["district"], subject=pairing["volunteer_id"], correlationid=pairing["_id"],
        event_id=derived_id("pairing.ended", pairing["_id"], str(pairing.get("started", ""))), time=now,
    )
