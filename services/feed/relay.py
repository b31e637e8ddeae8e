"""The feed's flow: each internal event it follows is republished once on linli.pub.>, stripped and re-keyed."""

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import Envelope
from services.feed import handlers
from services.feed.store import FeedStore

Publish = Callable[[bytes, str, str], Awaitable[None]]


class Feed:
    def __init__(self, store: FeedStore, publish: Publish) -> None:
        self.store = store
        self.publish = publish
        self.rekey: handlers.Rekey | None = None

    async def start(self) -> None:
        self.rekey = handlers.Rekey(await self.store.secret(secrets.token_bytes(32)))

    async def republish(self, event: Envelope[Any]) -> None:
        assert self.rekey is not None, "the feed republishes only after start"
        public = handlers.public_event(event, self.rekey)
        # The public id is the Nats-Msg-Id: LINLI_PUBLIC drops a second copy of a redelivered event.
        await self.publish(public.model_dump_json().encode(), handlers.subject_of(public), public.id)
