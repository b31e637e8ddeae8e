from faststream.nats import JStream
from nats.js.api import StorageType

from contracts import Envelope
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    HoursLogged,
    PointsRedeemed,
    RequestCreated,
    RequestRated,
)
from contracts.public import PUBLIC_STREAM, PUBLIC_STREAM_SUBJECTS
from services.common.bus import on_event
from services.common.runtime import Service
from services.feed.config import FeedSettings
from services.feed.relay import Feed
from services.feed.store import FeedStore


def build(settings: FeedSettings | None = None) -> Service:
    settings = settings or FeedSettings()
    service = Service.create("feed", settings.bus)
    broker, inbox = service.broker, service.inbox
    # Declared here so the broker creates the stream at start: district systems replay it from the beginning.
    broker.publisher(PUBLIC_STREAM_SUBJECTS[0], stream=JStream(
        name=PUBLIC_STREAM, subjects=list(PUBLIC_STREAM_SUBJECTS), storage=StorageType.FILE,
        num_replicas=settings.bus.stream_replicas, duplicate_window=settings.bus.duplicate_window))

    async def publish(body: bytes, subject: str, event_id: str) -> None:
        await broker.publish(body, subject, headers={"Nats-Msg-Id": event_id, "content-type": "application/json"},
                             stream=PUBLIC_STREAM)

    feed = Feed(FeedStore(service.db), publish)
    service.on_start.append(feed.start)

    # Each consumer recognises a repeat by the event id (the inbox), and LINLI_PUBLIC by the public id.
    @on_event(broker, settings.bus, "feed", "request.created")
    async def created(event: Envelope[RequestCreated]) -> None:
        async with inbox.once("feed-created", event) as first:
            if first:
                await feed.republish(event)

    @on_event(broker, settings.bus, "feed", "assignment.accepted")
    async def assigned(event: Envelope[AssignmentAccepted]) -> None:
        async with inbox.once("feed-assigned", event) as first:
            if first:
                await feed.republish(event)

    @on_event(broker, settings.bus, "feed", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        async with inbox.once("feed-completed", event) as first:
            if first:
                await feed.republish(event)

    @on_event(broker, settings.bus, "feed", "request.rated")
    async def rated(event: Envelope[RequestRated]) -> None:
        async with inbox.once("feed-rated", event) as first:
            if first:
                await feed.republish(event)

    @on_event(broker, settings.bus, "feed", "hours.logged")
    async def hours(event: Envelope[HoursLogged]) -> None:
        async with inbox.once("feed-hours", event) as first:
            if first:
                await feed.republish(event)

    @on_event(broker, settings.bus, "feed", "points.redeemed")
    async def redeemed(event: Envelope[PointsRedeemed]) -> None:
        async with inbox.once("feed-redeemed", event) as first:
            if first:
                await feed.republish(event)

    return service
