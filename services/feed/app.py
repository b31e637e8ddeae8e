from collections.abc import Callable

from faststream.nats import JStream
from nats.js.api import StorageType
from pymongo.asynchronous.database import AsyncDatabase

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
from services.feed.store import Doc, FeedStore


def build(settings: FeedSettings | None = None,
          store: Callable[[AsyncDatabase[Doc]], FeedStore] = FeedStore) -> Service:
    settings = settings or FeedSettings()
    service = Service.create("feed", settings.bus)
    broker = service.broker
    window = settings.bus.duplicate_window
    # Declared here so the broker creates the stream at start: district systems replay it from the beginning.
    broker.publisher(PUBLIC_STREAM_SUBJECTS[0], stream=JStream(
        name=PUBLIC_STREAM, subjects=list(PUBLIC_STREAM_SUBJECTS), storage=StorageType.FILE,
        num_replicas=settings.bus.stream_replicas, duplicate_window=window))

    async def publish(body: bytes, subject: str, event_id: str) -> None:
        await broker.publish(body, subject, headers={"Nats-Msg-Id": event_id, "content-type": "application/json"},
                             stream=PUBLIC_STREAM)

    feed = Feed(store(service.db), publish, window, settings.clock_margin, settings.record_every)
    service.on_start.append(feed.start)
    workers = settings.workers

    # A repeat gives the same public id, which LINLI_PUBLIC drops; past its window, the feed's record does.
    @on_event(broker, settings.bus, "feed", "request.created", workers=workers)
    async def created(event: Envelope[RequestCreated]) -> None:
        await feed.republish("feed-created", event)

    @on_event(broker, settings.bus, "feed", "assignment.accepted", workers=workers)
    async def assigned(event: Envelope[AssignmentAccepted]) -> None:
        await feed.republish("feed-assigned", event)

    @on_event(broker, settings.bus, "feed", "assignment.completed", workers=workers)
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        await feed.republish("feed-completed", event)

    @on_event(broker, settings.bus, "feed", "request.rated", workers=workers)
    async def rated(event: Envelope[RequestRated]) -> None:
        await feed.republish("feed-rated", event)

    @on_event(broker, settings.bus, "feed", "hours.logged", workers=workers)
    async def hours(event: Envelope[HoursLogged]) -> None:
        await feed.republish("feed-hours", event)

    @on_event(broker, settings.bus, "feed", "points.redeemed", workers=workers)
    async def redeemed(event: Envelope[PointsRedeemed]) -> None:
        await feed.republish("feed-redeemed", event)

    return service
