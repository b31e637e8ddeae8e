import json
import time
from typing import Any

from faststream.nats.annotations import NatsMessage

from contracts import Envelope, event_subject
from contracts.care import ContactOverdue, Escalated
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentExpired,
    AssignmentWithdrawn,
    CodeRequested,
    PointsEarned,
    RequestClosed,
    RequestRedispatched,
    RequestReopened,
    RequestUnmatched,
    VolunteerAssigned,
)
from contracts.subjects import STREAM
from services.common.bus import envelope_json, on_event
from services.common.places import Places
from services.common.runtime import Service
from services.notifier.config import NotifierSettings
from services.notifier.directory import Directory
from services.notifier.dispatch import Dispatcher
from services.notifier.messages import LANGUAGES, Messages
from services.notifier.store import NotifierStore


def build(settings: NotifierSettings | None = None) -> Service:
    settings = settings or NotifierSettings()
    if settings.webhook_url and not settings.webhook_secret:
        raise ValueError("NOTIFIER_WEBHOOK_SECRET must be set when NOTIFIER_WEBHOOK_URL is")
    if settings.language not in LANGUAGES:
        raise ValueError(f"NOTIFIER_LANGUAGE must be one of {', '.join(LANGUAGES)}, not {settings.language!r}")
    service = Service.create("notifier", settings.bus)
    broker = service.broker
    store = NotifierStore(service.db)
    service.on_start.append(store.ensure_indexes)

    async def ask_intake(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await broker.request(json.dumps(payload).encode(), subject, timeout=settings.contact_timeout)
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    directory = Directory(ask_intake, store, settings, time.time)
    async def publish(event: Envelope[Any]) -> None:
        subject = event_subject(event.short_type, event.district)
        headers = {"Nats-Msg-Id": event.id, "content-type": "application/json"}
        await broker.publish(envelope_json(event), subject, headers=headers, stream=STREAM)

    dispatcher = Dispatcher(
        store, publish, directory, settings, Messages.load(), Places.load(settings.places), time.time
    )

    # No inbox: a repeat is recognised by the notification, whose id derives from the event id and the
    # recipient; one already final is not sent again, and its outcome event, published again under the same
    # derived id, is dropped by JetStream or by its consumers.
    @on_event(broker, settings.bus, "notifier", "volunteer.assigned")
    async def offered(event: Envelope[VolunteerAssigned], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.accepted")
    async def accepted(event: Envelope[AssignmentAccepted], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.withdrawn")
    async def withdrawn(event: Envelope[AssignmentWithdrawn], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.expired")
    async def lapsed(event: Envelope[AssignmentExpired], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.redispatched")
    async def redispatched(event: Envelope[RequestRedispatched], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.closed")
    async def closed(event: Envelope[RequestClosed], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.reopened")
    async def reopened(event: Envelope[RequestReopened], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.unmatched")
    async def unmatched(event: Envelope[RequestUnmatched], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "points.earned")
    async def points(event: Envelope[PointsEarned], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "identity.code_requested")
    async def sign_in_code(event: Envelope[CodeRequested], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "care.escalated")
    async def care_escalated(event: Envelope[Escalated], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    @on_event(broker, settings.bus, "notifier", "care.contact.overdue")
    async def care_quiet(event: Envelope[ContactOverdue], message: NatsMessage) -> None:
        await dispatcher.notify(event, message)

    return service
