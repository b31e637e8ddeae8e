"""The notifier's flow: prepare each notification an event calls for, send it once, publish the outcome.

A notification is claimed by one handling at a time; a handling that dies leaves a claim that lapses,
and the next delivery of the event resumes where it stopped, counting the attempts already made.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from faststream.nats.annotations import NatsMessage

from contracts import Envelope
from contracts.events import CodeRequested
from services.common.places import Places
from services.common.runtime import cancel_and_wait
from services.notifier import handlers
from services.notifier.channels import post_webhook, to_console
from services.notifier.config import NotifierSettings
from services.notifier.directory import Directory
from services.notifier.messages import Messages
from services.notifier.store import NotifierStore

log = logging.getLogger("linli.notifier")


class ClaimLost(RuntimeError):
    pass


def redelivered(message: NatsMessage) -> bool:
    raw = message.raw_message
    return (raw.reply or "").startswith("$JS.ACK.") and (raw.metadata.num_delivered or 1) > 1


@asynccontextmanager
async def heartbeat(message: NatsMessage, every: float) -> AsyncIterator[None]:
    # Sending with retries can outlast ack_wait; without this JetStream would hand the event to
    # another consumer while this one is still sending it.
    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await message.in_progress()
            except Exception as exc:
                log.warning("could not extend the ack deadline: %r", exc)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        await cancel_and_wait([task])


class Dispatcher:
    def __init__(
        self,
        store: NotifierStore,
        publish: Callable[[Envelope[Any]], Awaitable[None]],
        directory: Directory,
        settings: NotifierSettings,
        messages: Messages,
        places: Places,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.publish = publish
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self.messages = messages
        self.places = places
        self.secret = settings.webhook_secret.encode()

    async def notify(self, event: Envelope[Any], message: NatsMessage) -> None:
        owner = uuid.uuid4().hex  # per handling, so two deliveries of one event never both hold the claim
        async with heartbeat(message, self.settings.bus.ack_wait / 3):
            docs = await self.prepare(event, owner, redelivered(message))
            for doc in docs:
                if doc["status"] == "pending":
                    try:
                        doc = await self.deliver(doc, owner)
                    except Exception:
                        for held in docs:
                            await self.store.release(held["_id"], owner)
                        raise
                # Published straight from the stored notification, no outbox: a crash before this leaves the event
                # unacknowledged, and its redelivery finds the notification final and publishes again (the
                # derived event id lets JetStream drop a repeat).
                await self.publish(handlers.outcome_event(doc))

    async def prepare(self, event: Envelope[Any], owner: str, again: bool) -> list[dict[str, Any]]:
        """The notifications `event` calls for, stored in one command without looking first (their ids derive
        from the event and the recipient, so a repeat finds them taken); those still to send claimed by `owner`.

        A console line, or a person nobody can reach, has its outcome known before anything is stored: that
        notification is written once, already final, and logged once it is stored. A redelivery, which may
        follow a handling that died in between, logs it again: twice, never not."""
        now = self.clock()
        composed = [await self.compose(event, to) for to in handlers.routes(event)]
        fresh = [
            self.settled(doc, owner, now) if not doc["reachable"] or not self.settings.webhook_url
            else {**doc, "owner": owner, "claimed_until": now + self.settings.claim_seconds}
            for doc in composed
        ]
        stored = await self.store.create(fresh)
        for doc in stored:
            ours = doc["owner"] == owner
            if doc["status"] in handlers.FINAL:
                if ours or (again and doc["channel"] == "console"):
                    to_console(doc)
            elif not ours and not await self.store.claim(doc["_id"], owner, now, now + self.settings.claim_seconds):
                for held in stored:
                    await self.store.release(held["_id"], owner)
                raise ClaimLost(f"notification {doc['_id']} is being sent by another consumer; trying again later")
        return stored

    async def compose(self, event: Envelope[Any], to: handlers.Route) -> dict[str, Any]:
        lang = self.settings.language
        contacts = {f"{kind}:{id}": await self.directory.contact(kind, id) for kind, id in handlers.lookups(to)}
        services = await self.directory.service_names(lang) if handlers.names_a_service(event) else {}
        code = await self.directory.sign_in_code(event.data.code_ref) if isinstance(event.data, CodeRequested) else ""
        facts = handlers.Facts(contacts, services, self.places, lang, code)
        recipient = facts.contact(*to.lookup) if to.lookup else None
        now = datetime.fromtimestamp(self.clock(), UTC)
        body = handlers.text(event, to, facts, self.messages)
        return handlers.new_notification(event, to, recipient, body, self.settings.channel, now, lang)

    def settled(self, doc: dict[str, Any], owner: str, now: float) -> dict[str, Any]:
        if doc["reachable"]:
            status, outcome, channel, error = "delivered", "delivered", "console", ""
        else:
            status, outcome, channel, error = "failed", "no_contact", doc["channel"], self.unknown(doc)
        return {**doc, "status": status, "channel": channel, "error": error, "attempts": 1, "finished": now,
                "attempt": {"n": 1, "at": now, "outcome": outcome}, "owner": owner, "claimed_until": 0.0}

    @staticmethod
    def unknown(doc: dict[str, Any]) -> str:
        return f"intake knows no contact for {doc['recipient']}"

    async def deliver(self, doc: dict[str, Any], owner: str) -> dict[str, Any]:
        to_console(doc)
        if not doc["reachable"]:
            return await self.settle_at_once(doc, owner, doc["channel"], "no_contact", self.unknown(doc))
        if not self.settings.webhook_url:
            return await self.settle_at_once(doc, owner, "console", "delivered", "")
        return await self.by_webhook(doc, owner, self.settings.webhook_url)

    async def finish(
        self, doc: dict[str, Any], owner: str, status: str, channel: str, error: str = ""
    ) -> dict[str, Any]:
        if not await self.store.finish(doc["_id"], owner, status, channel, error, self.clock()):
            raise ClaimLost(f"notification {doc['_id']} was taken over while it was being sent")
        return {**doc, "status": status, "channel": channel, "error": error}

    async def attempt(self, doc: dict[str, Any], owner: str, n: int) -> None:
        if not await self.store.begin_attempt(doc["_id"], owner, n, self.clock() + self.settings.claim_seconds):
            raise ClaimLost(f"notification {doc['_id']} was taken over while it was being sent")
        doc["attempts"] = n

    async def settle_at_once(
        self, doc: dict[str, Any], owner: str, channel: str, outcome: str, error: str
    ) -> dict[str, Any]:
        n = doc["attempts"] + 1
        await self.attempt(doc, owner, n)
        await self.store.record_attempt(doc["_id"], n, channel, self.clock(), outcome, None, error)
        return await self.finish(doc, owner, "delivered" if outcome == "delivered" else "failed", channel, error)

    async def by_webhook(self, doc: dict[str, Any], owner: str, url: str) -> dict[str, Any]:
        settings = self.settings
        error = "the last attempt was interrupted"
        async with httpx.AsyncClient(timeout=settings.webhook_timeout) as client:
            for n in range(doc["attempts"] + 1, settings.webhook_attempts + 1):
                await self.attempt(doc, owner, n)
                outcome = await post_webhook(client, url, self.secret, doc)
                verdict = "delivered" if outcome.delivered else "failed"
                await self.store.record_attempt(
                    doc["_id"], n, "webhook", self.clock(), verdict, outcome.status, outcome.error
                )
                if outcome.delivered:
                    return await self.finish(doc, owner, "delivered", "webhook")
                error = outcome.error
                if not handlers.retryable(outcome.status) or n == settings.webhook_attempts:
                    break
                log.warning("webhook attempt %d for %s failed (%s), trying again", n, doc["_id"], error)
                await asyncio.sleep(handlers.backoff(n, settings.webhook_backoff, settings.webhook_backoff_cap))
        log.error(
            "notification %s to %s FAILED after %d attempt(s): %s", doc["_id"], doc["recipient"], doc["attempts"], error
        )
        return await self.finish(doc, owner, "failed", "webhook", error)
