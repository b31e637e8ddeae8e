"""Intake's decisions: plain functions over plain data, no I/O."""

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from contracts import ApiError, Envelope, new_event
from contracts.calls import Catalog, CatalogItem, RegisterVolunteer, SubmitRequest
from contracts.envelope import derived_id
from contracts.events import (
    PairingCreated,
    PairingEnded,
    RequestCancelled,
    RequestCreated,
    RequestRated,
    RequestReopened,
    VolunteerRegistered,
)

SOURCE = "linli/intake"

# How far along a request is, as the resident sees it. Events can arrive out of order or twice;
# a status only ever moves to a higher rank, so a late or repeated event changes nothing.
# A rating closes a completed request either way: rated, or reopened for an operator when it went badly.
RANK = {"submitted": 0, "unmatched": 1, "accepted": 1, "completed": 2, "rated": 3, "reopened": 3, "cancelled": 4}
CANCELLABLE = {"submitted", "unmatched", "accepted"}
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


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def request_id_for(district: str, idempotency_key: str) -> str:
    return "r-" + derived_id("request", district, idempotency_key)


def volunteer_id_for(district: str, phone: str) -> str:
    digits = "".join(ch for ch in phone if ch.isdigit())
    return "v-" + derived_id("volunteer", district, digits)


def resident_ref_for(district: str, phone: str) -> str:
    digits = "".join(ch for ch in phone if ch.isdigit())
    return "p-" + derived_id("resident", district, digits)


def new_request(call: SubmitRequest, menu: Menu, now: datetime) -> tuple[dict[str, Any], Envelope[Any]]:
    category = menu.category_of(call.service)
    request_id = request_id_for(call.district, call.idempotency_key)
    doc = {
        "_id": request_id,
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
        "resident_ref": resident_ref_for(call.district, call.resident.phone),
        "needs": sorted(set(call.needs)),
        "status": "submitted",
        "rank": RANK["submitted"],
        "created_at": now.isoformat(),
        "created": now.timestamp(),
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


def new_volunteer(call: RegisterVolunteer, menu: Menu, now: datetime) -> tuple[dict[str, Any], Envelope[Any]]:
    menu.check_skills(call.skills)
    volunteer_id = volunteer_id_for(call.district, call.phone)
    profile = {
        "district": call.district,
        "grids": sorted(set(call.grids)),
        "skills": sorted(set(call.skills)),
        "capacity": call.capacity,
        "team": call.team,
        "attributes": sorted(set(call.attributes)),
        "availability": [w.model_dump() for w in call.availability],
        "away": [p.model_dump(mode="json") for p in call.away],
    }
    doc = {"_id": volunteer_id, "name": call.name, "phone": call.phone, **profile, "updated_at": now.isoformat()}
    event = new_event(
        VolunteerRegistered(volunteer_id=volunteer_id, **profile),
        source=SOURCE,
        district=call.district,
        subject=volunteer_id,
        correlationid=volunteer_id,
        # The same profile registered twice is one event; a changed profile is a new one.
        event_id=derived_id("volunteer.registered", volunteer_id, fingerprint(profile)),
        time=now,
    )
    return doc, event


def check_needs(needs: list[str]) -> None:
    unknown = [n for n in needs if n not in KNOWN_NEEDS and not n.startswith("dialect:")]
    if unknown:
        raise ApiError("unknown_need", f"needs must be among {', '.join(KNOWN_NEEDS)} or dialect:<name>",
                       {"unknown": unknown})


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


def check_rating(doc: dict[str, Any], stars: int, done: bool = True) -> str:
    """Returns 'rate' to record it, 'repeat' when this exact rating is already recorded."""
    if doc["status"] in ("rated", "reopened"):
        if doc.get("stars") == stars and doc.get("done", True) == done:
            return "repeat"
        raise ApiError("already_rated", "this request was already rated", {"stars": doc.get("stars")})
    if doc["status"] != "completed":
        raise ApiError(
            "not_completed", "a request can be rated once its service is completed", {"status": doc["status"]}
        )
    return "rate"


def rating_outcome(stars: int, done: bool) -> str:
    # One or two stars, or "not done", must not silently count the hours: an operator looks first.
    return "reopened" if stars <= 2 or not done else "rated"


def rating_note(stars: int, done: bool, comment: str) -> str:
    said = f"{stars} stars" + ("" if done else ", not done") + (f": {comment}" if comment else "")
    return f"reopened for an operator's review: {said}" if rating_outcome(stars, done) == "reopened" else said


def rating_events(doc: dict[str, Any], now: datetime) -> list[Envelope[Any]]:
    events = [rated_event(doc, doc["stars"], doc.get("comment", ""), now)]
    if doc["status"] == "reopened":
        events.append(new_event(
            RequestReopened(request_id=doc["_id"], volunteer_id=doc["volunteer_id"], stars=doc["stars"],
                            reason=rating_note(doc["stars"], doc.get("done", True), doc.get("comment", ""))),
            source=SOURCE, district=doc["district"], subject=doc["_id"], correlationid=doc["_id"],
            event_id=derived_id("request.reopened", doc["_id"]), time=now,
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
        event_id=derived_id("request.rated", doc["_id"]),
        time=now,
    )


def check_cancel(doc: dict[str, Any]) -> None:
    if doc["status"] not in CANCELLABLE:
        raise ApiError("not_cancellable", f"a {doc['status']} request cannot be cancelled", {"status": doc["status"]})


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
