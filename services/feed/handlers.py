"""What the public feed says about an internal event: no names, phones, addresses or free text, and every id
or pseudonym replaced by a public reference under the feed's own secret. Plain functions, no I/O."""

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from contracts import Envelope
from contracts.public import (
    PUBLIC_TYPES,
    PublicData,
    PublicEnvelope,
    PublicHoursLogged,
    PublicPointsRedeemed,
    PublicRequestAssigned,
    PublicRequestCompleted,
    PublicRequestCreated,
    PublicRequestRated,
    public_dataschema,
)
from contracts.subjects import public_subject


class Rekey:
    """Public references: the same internal id always gives the same one, and none is reversible."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def ref(self, kind: str, internal: str) -> str:
        digest = hmac.new(self.secret, f"{kind}/{internal}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:26]}"

    def optional(self, kind: str, internal: str) -> str:
        return self.ref(kind, internal) if internal else ""


def request_created(d: Any, rekey: Rekey) -> PublicData:
    return PublicRequestCreated(
        request=rekey.ref("rq", d.request_id), resident=rekey.optional("re", d.resident_ref), grid=d.grid,
        service=d.service, category=d.category, urgency=d.urgency, channel=d.channel,
        window_start=d.window_start, window_end=d.window_end)


def request_assigned(d: Any, rekey: Rekey) -> PublicData:
    return PublicRequestAssigned(request=rekey.ref("rq", d.request_id), volunteer=rekey.ref("vo", d.volunteer_id),
                                 service=d.service)


def request_completed(d: Any, rekey: Rekey) -> PublicData:
    return PublicRequestCompleted(request=rekey.ref("rq", d.request_id), volunteer=rekey.ref("vo", d.volunteer_id),
                                  hours=d.hours)


def request_rated(d: Any, rekey: Rekey) -> PublicData:
    return PublicRequestRated(request=rekey.ref("rq", d.request_id), volunteer=rekey.ref("vo", d.volunteer_id),
                              stars=d.stars, done=d.done)


def hours_logged(d: Any, rekey: Rekey) -> PublicData:
    return PublicHoursLogged(
        request=rekey.ref("rq", d.request_id), volunteer=rekey.ref("vo", d.volunteer_id),
        resident=rekey.optional("re", d.resident_ref), hours=d.hours, category=d.category, service=d.service,
        grid=d.grid, urgency=d.urgency, completed_at=d.completed_at)


def points_redeemed(d: Any, rekey: Rekey) -> PublicData:
    return PublicPointsRedeemed(redemption=rekey.ref("rd", d.redemption_id), volunteer=rekey.ref("vo", d.volunteer_id),
                                item_id=d.item_id, quantity=d.quantity, points=d.points)


# Each public type, built from its internal event by a function that names every field it keeps.
BUILDERS: dict[str, Callable[[Any, Rekey], PublicData]] = {
    "request.created": request_created,
    "request.assigned": request_assigned,
    "request.completed": request_completed,
    "request.rated": request_rated,
    "hours.logged": hours_logged,
    "points.redeemed": points_redeemed,
}
PUBLIC_TYPE_OF = {internal: public for public, (internal, _) in PUBLIC_TYPES.items()}


def public_event(event: Envelope[Any], rekey: Rekey) -> PublicEnvelope[Any]:
    public_type = PUBLIC_TYPE_OF[event.short_type]
    data = BUILDERS[public_type](event.data, rekey)
    subject = getattr(data, "request", None) or getattr(data, "redemption")
    return PublicEnvelope[Any](
        # From the internal event's id: a redelivery or a second replica publishes the same public event.
        id=rekey.ref("ev", event.id), type=f"linli.pub.{public_type}", time=event.time, subject=subject,
        dataschema=public_dataschema(public_type), district=event.district, data=data)


def subject_of(public: PublicEnvelope[Any]) -> str:
    return public_subject(public.type.removeprefix("linli.pub."), public.district)


def within_public_window(made: datetime, now: datetime, window: float, margin: float) -> bool:
    """Whether every earlier copy of the public event made from an internal event made at `made` is still in
    LINLI_PUBLIC's duplicate window at `now`: none can have been published before the internal event was made.
    `margin` covers the difference between the clocks of the service that made it, the feed and the server."""
    made = made if made.tzinfo else made.replace(tzinfo=UTC)
    return (now - made).total_seconds() < window - margin
