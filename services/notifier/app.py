import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from faststream.nats.annotations import NatsMessage

from contracts import API, Envelope
from contracts.calls import Catalog
from contracts.events import (
    AssignmentAccepted,
    AssignmentWithdrawn,
    PointsEarned,
    RequestReopened,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.common.bus import on_event
from services.common.runtime import Service, cancel_and_wait
from services.notifier import handlers
from services.notifier.channels import post_webhook, to_console
from services.notifier.config import NotifierSettings
from services.notifier.store import NotifierStore

log = logging.getLogger("linli.notifier")


class ClaimLost(RuntimeError):
    pass


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


def build(settings: NotifierSettings | None = None) -> Service:
    settings = settings or NotifierSettings()
    if settings.webhook_url and not settings.webhook_secret:
        raise ValueError("NOTIFIER_WEBHOOK_SECRET must be set when NOTIFIER_WEBHOOK_URL is")
    service = Service.create("notifier", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    store = NotifierStore(service.db)
    zone = ZoneInfo(settings.timezone)
    secret = settings.webhook_secret.encode()
    labels: dict[str, str] = {}
    service.on_start.append(store.ensure_indexes)

    async def ask_intake(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await broker.request(json.dumps(payload).encode(), subject, timeout=settings.contact_timeout)
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    async def contact(kind: handlers.ContactKind, id: str) -> dict[str, str] | None:
        key = f"{kind}:{id}"
        cached = await store.contact(key)
        if cached and time.time() - cached["fetched"] < settings.contact_max_age:
            return cached
        try:
            reply = await ask_intake(API.INTAKE_CONTACT, {"kind": kind, "id": id})
        except Exception as exc:
            if cached is None:
                raise  # the event is redelivered later, when intake may answer
            log.warning("intake did not answer for %s, using the contact cached earlier: %r", key, exc)
            return cached
        if "error" in reply:
            if reply["error"].get("code") == "not_found":
                return None
            raise RuntimeError(f"intake refused the contact lookup for {key}: {reply['error']}")
        await store.save_contact(key, reply["name"], reply["phone"], time.time())
        return {"name": reply["name"], "phone": reply["phone"]}

    async def service_labels() -> dict[str, str]:
        if not labels:
            try:
                catalog = Catalog.model_validate(await ask_intake(API.INTAKE_CATALOG, {}))
                labels.update({item.id: item.name for category in catalog.categories for item in category.items})
            except Exception as exc:  # a readable name is a nicety; the offer goes out with the id
                log.warning("service catalogue unavailable, offers show service ids: %r", exc)
        return labels

    async def prepare(event: Envelope[Any], owner: str) -> dict[str, Any]:
        """The notification for `event`, claimed by `owner` when it still has to be sent."""
        to = handlers.route(event)
        notification_id = handlers.notification_id(event.id, to.kind)
        doc = await store.notification(notification_id)
        if doc is None:
            person = await contact(*to.lookup) if to.lookup else None
            names = await service_labels() if to.kind == "offer" else {}
            text = handlers.text(event, person["name"] if person else "", names, zone)
            doc = handlers.new_notification(event, to, person, text, settings.channel, datetime.now(UTC))
            if await store.create(doc, owner, time.time() + settings.claim_seconds):
                return doc
            doc = await store.notification(notification_id)
            assert doc is not None
        now = time.time()
        if doc["status"] in handlers.FINAL or await store.claim(doc["_id"], owner, now, now + settings.claim_seconds):
            return doc
        raise ClaimLost(f"notification {doc['_id']} is being sent by another consumer; trying again later")

    async def finish(doc: dict[str, Any], owner: str, status: str, channel: str, error: str = "") -> dict[str, Any]:
        if not await store.finish(doc["_id"], owner, status, channel, error, time.time()):
            raise ClaimLost(f"notification {doc['_id']} was taken over while it was being sent")
        return {**doc, "status": status, "channel": channel, "error": error}

    async def attempt(doc: dict[str, Any], owner: str, n: int) -> None:
        if not await store.begin_attempt(doc["_id"], owner, n, time.time() + settings.claim_seconds):
            raise ClaimLost(f"notification {doc['_id']} was taken over while it was being sent")
        doc["attempts"] = n

    async def settle_at_once(doc: dict[str, Any], owner: str, channel: str, outcome: str, error: str) -> dict[str, Any]:
        n = doc["attempts"] + 1
        await attempt(doc, owner, n)
        await store.record_attempt(doc["_id"], n, channel, time.time(), outcome, None, error)
        return await finish(doc, owner, "delivered" if outcome == "delivered" else "failed", channel, error)

    async def by_webhook(doc: dict[str, Any], owner: str, url: str) -> dict[str, Any]:
        error = "the last attempt was interrupted"
        async with httpx.AsyncClient(timeout=settings.webhook_timeout) as client:
            for n in range(doc["attempts"] + 1, settings.webhook_attempts + 1):
                await attempt(doc, owner, n)
                outcome = await post_webhook(client, url, secret, doc)
                verdict = "delivered" if outcome.delivered else "failed"
                await store.record_attempt(
                    doc["_id"], n, "webhook", time.time(), verdict, outcome.status, outcome.error
                )
                if outcome.delivered:
                    return await finish(doc, owner, "delivered", "webhook")
                error = outcome.error
                if not handlers.retryable(outcome.status) or n == settings.webhook_attempts:
                    break
                log.warning("webhook attempt %d for %s failed (%s), trying again", n, doc["_id"], error)
                await asyncio.sleep(handlers.backoff(n, settings.webhook_backoff, settings.webhook_backoff_cap))
        log.error(
            "notification %s to %s FAILED after %d attempt(s): %s", doc["_id"], doc["recipient"], doc["attempts"], error
        )
        return await finish(doc, owner, "failed", "webhook", error)

    async def deliver(doc: dict[str, Any], owner: str) -> dict[str, Any]:
        to_console(doc)
        if not doc["reachable"]:
            unknown = f"intake knows no contact for {doc['recipient']}"
            return await settle_at_once(doc, owner, doc["channel"], "no_contact", unknown)
        if not settings.webhook_url:
            return await settle_at_once(doc, owner, "console", "delivered", "")
        return await by_webhook(doc, owner, settings.webhook_url)

    async def notify(event: Envelope[Any], message: NatsMessage) -> None:
        owner = uuid.uuid4().hex  # per handling, so two deliveries of one event never both hold the claim
        async with heartbeat(message, settings.bus.ack_wait / 3):
            doc = await prepare(event, owner)
            if doc["status"] == "pending":
                try:
                    doc = await deliver(doc, owner)
                except Exception:
                    await store.release(doc["_id"], owner)
                    raise
            # Also after a crash between recording the outcome and publishing it; the derived id dedupes.
            await outbox.send([handlers.outcome_event(doc)])

    @on_event(broker, settings.bus, "notifier", "volunteer.assigned")
    async def offered(event: Envelope[VolunteerAssigned], message: NatsMessage) -> None:
        async with inbox.once("notifier-offer", event) as first:  # repeats are recognised by event id
            if first:
                await notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.accepted")
    async def accepted(event: Envelope[AssignmentAccepted], message: NatsMessage) -> None:
        async with inbox.once("notifier-accepted", event) as first:
            if first:
                await notify(event, message)

    @on_event(broker, settings.bus, "notifier", "assignment.withdrawn")
    async def withdrawn(event: Envelope[AssignmentWithdrawn], message: NatsMessage) -> None:
        async with inbox.once("notifier-withdrawn", event) as first:
            if first:
                await notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.reopened")
    async def reopened(event: Envelope[RequestReopened], message: NatsMessage) -> None:
        async with inbox.once("notifier-reopened", event) as first:
            if first:
                await notify(event, message)

    @on_event(broker, settings.bus, "notifier", "request.unmatched")
    async def unmatched(event: Envelope[RequestUnmatched], message: NatsMessage) -> None:
        async with inbox.once("notifier-unmatched", event) as first:
            if first:
                await notify(event, message)

    @on_event(broker, settings.bus, "notifier", "points.earned")
    async def points(event: Envelope[PointsEarned], message: NatsMessage) -> None:
        async with inbox.once("notifier-points", event) as first:
            if first:
                await notify(event, message)

    return service
