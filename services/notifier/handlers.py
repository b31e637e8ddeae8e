"""Notifier's decisions: who is told what, when to try again. Plain functions over plain data, no I/O."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from contracts import Envelope, new_event
from contracts.care import ContactOverdue, Escalated
from contracts.envelope import derived_id
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentExpired,
    AssignmentWithdrawn,
    CodeRequested,
    NotificationDelivered,
    NotificationFailed,
    PointsEarned,
    RequestClosed,
    RequestRedispatched,
    RequestReopened,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.common.codes import short_code
from services.common.places import Places, format_local, format_window
from services.notifier.messages import Messages

SOURCE = "linli/notifier"
FINAL = {"delivered", "failed"}
ContactKind = Literal["volunteer", "resident"]
Lookup = tuple[ContactKind, str]
Contact = Mapping[str, str]


@dataclass(frozen=True)
class Route:
    kind: str
    recipient: str
    lookup: Lookup | None
    # Other people the text names: their contacts are looked up too, never sent to.
    about: tuple[Lookup, ...] = ()


def routes(event: Envelope[Any]) -> list[Route]:
    """Who is told about `event`, one notification each."""
    match event.data:
        case VolunteerAssigned(volunteer_id=volunteer):
            return [Route("offer", f"volunteer:{volunteer}", ("volunteer", volunteer))]
        case AssignmentAccepted(request_id=request, volunteer_id=volunteer):
            # The resident's address and phone go to the volunteer who accepted, and to no one else.
            return [
                Route("accepted_details", f"volunteer:{volunteer}", ("volunteer", volunteer), (("resident", request),)),
                Route("volunteer_coming", f"resident:{request}", ("resident", request), (("volunteer", volunteer),)),
            ]
        case AssignmentWithdrawn(volunteer_id=volunteer):
            return [Route("offer_withdrawn", f"volunteer:{volunteer}", ("volunteer", volunteer))]
        case AssignmentExpired(volunteer_id=volunteer):
            return [Route("offer_lapsed", f"volunteer:{volunteer}", ("volunteer", volunteer))]
        case AssignmentCompleted(request_id=request, volunteer_id=volunteer):
            return [Route("please_rate", f"resident:{request}", ("resident", request), (("volunteer", volunteer),))]
        case RequestUnmatched():
            return [Route("unmatched", "operators", None)]
        case RequestReopened(volunteer_id=volunteer):
            return [Route("reopened", "operators", None, (("volunteer", volunteer),))]
        case RequestRedispatched():
            return [Route("redispatched", "operators", None)]
        case RequestClosed():
            return [Route("closed", "operators", None)]
        case PointsEarned(volunteer_id=volunteer):
            return [Route("points_earned", f"volunteer:{volunteer}", ("volunteer", volunteer))]
        case CodeRequested(volunteer_id=volunteer):
            return [Route("sign_in_code", f"volunteer:{volunteer}", ("volunteer", volunteer))]
        case Escalated(level=level, recipients=people):
            # Care keeps its people's phones: the text goes to person:<id>, for the district's gateway to reach.
            kind = f"care_{level}"
            return [Route(f"{kind}:{person}" if len(people) > 1 else kind, person, None) for person in people]
        case ContactOverdue(director=director):
            return [Route("care_quiet", director, None)]
    raise ValueError(f"the notifier has nothing to say about {event.type}")


def route(event: Envelope[Any]) -> Route:
    return routes(event)[0]


def names_a_service(event: Envelope[Any]) -> bool:
    return isinstance(event.data, VolunteerAssigned | AssignmentAccepted)


def lookups(to: Route) -> list[Lookup]:
    return ([to.lookup] if to.lookup else []) + [about for about in to.about if about != to.lookup]


@dataclass(frozen=True)
class Facts:
    """What a text is made of besides its event, already looked up."""

    contacts: Mapping[str, Contact | None]  # "volunteer:<id>" / "resident:<request id>"; None: intake knows none
    services: Mapping[str, str]  # service id -> its name in the reader's language
    places: Places
    lang: str = "zh"
    code: str = ""  # a one-time sign-in code, fetched from identity; "" when it could not be had

    def contact(self, kind: ContactKind, id: str) -> Contact | None:
        return self.contacts.get(f"{kind}:{id}")


def number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def code_of(code: str, full_id: str) -> str:
    # An event from before codes were issued: the code its owner would derive first.
    return code or short_code(full_id)


def text(event: Envelope[Any], to: Route, facts: Facts, messages: Messages) -> str:
    """The text `to` reads about `event`, in the reader's language and the district's clock."""
    lang, places = facts.lang, facts.places
    district = getattr(event.data, "district", "") or event.district
    zone = places.zone(district)

    def say(key: str, **values: Any) -> str:
        return messages.render(lang, key, **values)

    def name_of(lookup: Lookup | None) -> str:
        found = facts.contact(*lookup) if lookup else None
        return found["name"] if found else ""

    def greeting() -> str:
        name = name_of(to.lookup)
        return say("greeting", name=name) if name else say("greeting.anonymous")

    def service(service_id: str) -> str:
        return facts.services.get(service_id) or say("service.unknown")

    def volunteer(volunteer_id: str) -> str:
        name = name_of(("volunteer", volunteer_id))
        return say("volunteer.named", name=name) if name else say("volunteer.someone")

    def operators(key: str, **values: Any) -> str:
        request_code = code_of(getattr(event.data, "request_code", ""), event.data.request_id)
        return say(key, district=places.district_name(district, lang), request_code=request_code, **values)

    match event.data:
        case VolunteerAssigned() as offer:
            return say(
                "offer",
                greeting=greeting(),
                service=service(offer.service),
                place=places.place_name(district, offer.grid, lang),
                near=say("offer.near", near=say(f"near.{offer.place}")) if offer.place else "",
                window=format_window(offer.window_start, offer.window_end, zone, lang),
                urgency=say(f"urgency.{offer.urgency}"),
                description=say("offer.description", description=offer.description) if offer.description else "",
                deadline=format_local(offer.expires_at, zone, lang),
                code=code_of(offer.code, offer.assignment_id),
            )
        case AssignmentAccepted() as accepted if to.kind == "accepted_details":
            resident = facts.contact("resident", accepted.request_id) or {}
            address = resident.get("address", "")
            return say(
                "accepted.volunteer",
                greeting=greeting(),
                code=code_of(accepted.code, accepted.assignment_id),
                service=service(accepted.service),
                resident=resident.get("name", ""),
                phone=resident.get("phone", ""),
                address=say("accepted.address", address=address) if address else "",
                window=format_window(accepted.window_start, accepted.window_end, zone, lang),
            )
        case AssignmentAccepted() as accepted:
            return say(
                "accepted.resident",
                greeting=greeting(),
                volunteer=volunteer(accepted.volunteer_id),
                request_code=code_of(accepted.request_code, accepted.request_id),
                window=format_window(accepted.window_start, accepted.window_end, zone, lang),
            )
        case AssignmentWithdrawn() as withdrawn:
            why = {"matcher": "taken", "resident": "cancelled"}.get(withdrawn.by, "operator")
            return say(f"withdrawn.{why}", greeting=greeting(), code=code_of(withdrawn.code, withdrawn.assignment_id))
        case AssignmentExpired() as lapsed:
            return say("lapsed", greeting=greeting(), code=code_of(lapsed.code, lapsed.assignment_id))
        case AssignmentCompleted() as completed:
            return say(
                "completed.resident",
                greeting=greeting(),
                volunteer=volunteer(completed.volunteer_id),
                request_code=code_of(completed.request_code, completed.request_id),
            )
        case RequestUnmatched() as unmatched:
            reason = say(f"unmatched.reason.{unmatched.reason_code or 'other'}")
            tried = say("unmatched.tried", count=len(unmatched.tried)) if unmatched.tried else ""
            return operators("unmatched", reason=reason, tried=tried)
        case RequestReopened() as reopened:
            return operators("reopened", stars=reopened.stars, volunteer=volunteer(reopened.volunteer_id))
        case RequestRedispatched() as redispatched:
            return operators("redispatched", operator=redispatched.operator, reason=redispatched.reason)
        case RequestClosed() as closed:
            return operators("closed", operator=closed.operator, reason=closed.reason)
        case Escalated() as step:
            return say(f"care.{step.level}", district=places.district_name(district, lang),
                       plan=short_code(step.plan_id), duty=say(f"care.duty.{step.duty_kind}"),
                       due=format_local(step.due_at, zone, lang),
                       why=say(f"care.alert.{step.alert}"))
        case ContactOverdue() as quiet:
            return say("care.quiet", district=places.district_name(district, lang), plan=short_code(quiet.plan_id),
                       days=quiet.days)
        case PointsEarned() as earned:
            return say(
                "points",
                greeting=greeting(),
                hours=number(earned.hours),
                points=number(earned.points),
                balance=number(earned.balance_points),
            )
        case CodeRequested() as asked:
            if not facts.code:
                return say("sign_in_code.lost", greeting=greeting())
            minutes = max(1, round((asked.expires_at - event.time).total_seconds() / 60))
            return say("sign_in_code", greeting=greeting(), code=facts.code, minutes=minutes)
    raise ValueError(f"the notifier has nothing to say about {event.type}")


def notification_id(event_id: str, kind: str) -> str:
    return derived_id("notification", event_id, kind)


def new_notification(
    event: Envelope[Any], to: Route, contact: Contact | None, body: str, channel: str, now: datetime, lang: str = "zh"
) -> dict[str, Any]:
    return {
        "_id": notification_id(event.id, to.kind),
        "kind": to.kind,
        "recipient": to.recipient,
        # Empty when a person's contact is unknown: nobody can be reached, which is a failure to report.
        "name": contact["name"] if contact else "",
        "phone": contact["phone"] if contact else "",
        "reachable": contact is not None or to.lookup is None,
        "text": body,
        "lang": lang,
        "channel": channel,
        "district": event.district,
        # A sign-in code is about no request; a care event names its plan as its subject.
        "request_id": getattr(event.data, "request_id", "" if isinstance(event.data, CodeRequested) else event.subject),
        "event_id": event.id,
        "created_at": now.isoformat(),
        "created": now.timestamp(),
        "status": "pending",
        "attempts": 0,
        "error": "",
    }


WEBHOOK_FIELDS = (
    "notification_id", "kind", "recipient", "name", "phone", "text", "district", "request_id", "event_id", "created_at"
)


def webhook_payload(doc: dict[str, Any]) -> dict[str, Any]:
    return {name: doc["_id"] if name == "notification_id" else doc[name] for name in WEBHOOK_FIELDS}


def backoff(after_attempt: int, base: float, cap: float) -> float:
    return min(base * 2.0 ** (after_attempt - 1), cap)


def retryable(status: int | None) -> bool:
    """`status` is the HTTP status, or None when no answer came (connection error, timeout)."""
    if status is None or status in (408, 429):
        return True
    return not (200 <= status < 300 or 400 <= status < 500)


def outcome_event(doc: dict[str, Any]) -> Envelope[Any]:
    common = {
        "notification_id": doc["_id"],
        "channel": doc["channel"],
        "recipient": doc["recipient"],
        "kind": doc["kind"],
        "attempts": max(doc["attempts"], 1),
    }
    data = NotificationDelivered(**common) if doc["status"] == "delivered" else NotificationFailed(
        **common, error=doc["error"]
    )
    return new_event(
        data,
        source=SOURCE,
        district=doc["district"],
        subject=doc["request_id"] or doc["recipient"],
        correlationid=doc["request_id"] or doc["event_id"],
        causationid=doc["event_id"],
        event_id=derived_id(f"notification.{doc['status']}", doc["_id"]),
    )
