"""The feed's flow: each internal event it follows is republished once on linli.pub.>, stripped and re-keyed.

A repeat of an internal event (a redelivery, or its service's outbox sending it again) gives the same public
id, which is the Nats-Msg-Id: LINLI_PUBLIC drops it within its duplicate window. Only an internal event older
than that window needs the feed's own record of what it published, so only then is the record read. Every
event's record is stored before the event is acknowledged, in one command for all the events of a short
while: a crash before it leaves them unacknowledged, and their redelivery is a repeat like any other."""

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from contracts import Envelope
from services.feed import handlers
from services.feed.store import FeedStore

Publish = Callable[[bytes, str, str], Awaitable[None]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Records:
    """Ids stored together: each caller waits until the command that stores its id has succeeded."""

    def __init__(self, store: FeedStore, every: float) -> None:
        self.store, self.every = store, every
        self.pending: list[str] = []
        self.stored: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # held, so none is collected while it waits

    async def add(self, key: str) -> None:
        self.pending.append(key)
        if self.stored is None:
            self.stored = asyncio.get_running_loop().create_future()
            task = asyncio.get_running_loop().create_task(self.store_after(self.stored))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await asyncio.shield(self.stored)

    async def store_after(self, stored: asyncio.Future[None]) -> None:
        await asyncio.sleep(self.every)
        keys, self.pending, self.stored = self.pending, [], None
        try:
            await self.store.record(keys)
        except Exception as exc:  # every waiting handler fails, so its event is redelivered
            stored.set_exception(exc)
            stored.exception()  # retrieved here too, in case every waiter has gone
        else:
            stored.set_result(None)


class Feed:
    def __init__(self, store: FeedStore, publish: Publish, window: float, margin: float = 60.0,
                 record_every: float = 1.0, clock: Clock = utc_now) -> None:
        self.store = store
        self.publish = publish
        self.window, self.margin, self.clock = window, margin, clock
        self.records = Records(store, record_every)
        self.rekey: handlers.Rekey | None = None

    async def start(self) -> None:
        self.rekey = handlers.Rekey(await self.store.secret(secrets.token_bytes(32)))

    async def republish(self, consumer: str, event: Envelope[Any]) -> None:
        assert self.rekey is not None, "the feed republishes only after start"
        key = f"{consumer}:{event.id}"
        # Old enough that LINLI_PUBLIC may have forgotten an earlier copy: the record decides.
        if not handlers.within_public_window(event.time, self.clock(), self.window, self.margin):
            if await self.store.was_published(key):
                return
        public = handlers.public_event(event, self.rekey)
        await self.publish(public.model_dump_json().encode(), handlers.subject_of(public), public.id)
        await self.records.add(key)
