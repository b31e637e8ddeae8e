import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from faststream import BaseMiddleware
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, StorageType
from pydantic import BaseModel, ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from contracts import ApiError, Envelope, event_subject
from contracts.subjects import STREAM, STREAM_SUBJECTS, owner_of
from contracts.wire import BodyRefused, read_call, read_event
from services.common.config import BusSettings, nats_user

if TYPE_CHECKING:
    from services.common.gate import Gate

log = logging.getLogger("linli.bus")
M = TypeVar("M", bound=BaseModel)


def event_stream(settings: BusSettings) -> JStream:
    return JStream(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        # JetStream drops a re-published event whose Nats-Msg-Id it saw within this window.
        duplicate_window=settings.duplicate_window,
    )


class Poison(Exception):
    """An event body that no delivery can ever handle: not JSON, too large or too deep, or not a valid
    envelope of the consumer's event type."""


def event_decoder(event_type: str, owner: str | None = None) -> Callable[[StreamMessage[Any]], Any]:
    """Reads an event body whatever its headers say, so a body that cannot be an event is poison on its
    first delivery rather than a decoding error retried like a failure.

    With an owner, an event whose source is another service is poison too. On a server with users
    (linli/permissions.py) only the owner can publish on the type's subject at all; this also refuses
    an envelope the owner's connection carries for someone else."""

    def decode(message: StreamMessage[Any]) -> Any:
        try:
            event = read_event(event_type, message.body)
        except BodyRefused as exc:
            raise Poison(f"{exc.code}: {exc.message} {exc.details or ''}"[:1000]) from exc
        if owner and event.source != f"linli/{owner}":
            raise Poison(f"not_owner: {event_type} events come from linli/{owner}, not from {event.source[:100]!r}")
        return json.loads(message.body)

    return decode


def call_body(message: StreamMessage[Any]) -> Any:
    """Hands a call's bytes on undecoded: api_call validates them and answers whatever they are."""
    return message.body


class RetryLater(BaseMiddleware):
    """Turns a failed event handler into a delayed redelivery, and a poison event into a dead letter.

    A plain nak is redelivered at once; the delay grows with each delivery so a dependency that is
    down is not hammered. After max_deliver the server stops and publishes the advisory that the
    dead-letter recorder stores. A poison event is terminated on its first delivery, so a flood of them
    holds no ack-pending slot and no event behind them waits.
    """

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        if not (msg.raw_message.reply or "").startswith("$JS.ACK."):
            return await call_next(msg)  # a core NATS call, answered by its own error handling
        metadata = msg.raw_message.metadata
        try:
            return await call_next(msg)
        except HandlerException:
            raise
        except Exception as exc:
            if isinstance(exc, Poison) or (isinstance(exc, ValidationError) and malformed_event(exc)):
                log.error(
                    "malformed event on %s (correlation %s), sent to dead letters: %s",
                    msg.raw_message.subject, msg.correlation_id, exc,
                )
                raise RejectMessage() from exc
            delivered = metadata.num_delivered or 1
            delay = min(self.base_delay * 2 ** (delivered - 1), 60.0)
            log.warning(
                "handler failed on %s (delivery %s), retrying in %.1fs: %r",
                msg.raw_message.subject, delivered, delay, exc,
            )
            raise NackMessage(delay=delay) from exc

    base_delay = 0.5


def malformed_event(exc: ValidationError) -> bool:
    """The message itself failed validation, as opposed to a model built inside the handler.

    Every event handler names its parameter `event`, so FastStream's argument validation reports
    locations under it; a bug that builds a bad model elsewhere is retried like any failure.
    """
    return all(err["loc"][:1] == ("event",) for err in exc.errors())


def make_broker(settings: BusSettings, service: str) -> NatsBroker:
    retry = type("RetryLater", (RetryLater,), {"base_delay": settings.retry_base_delay})
    return NatsBroker(
        settings.nats_url,
        name=f"linli-{service}",
        middlewares=[retry],
        inbox_prefix=settings.inbox_prefix,
        max_reconnect_attempts=-1,
        graceful_timeout=10.0,
    )


def consumer_name(service: str, event_type: str) -> str:
    """The durable JetStream consumer through which every replica of `service` reads `event_type`."""
    return f"{service}-{event_type.replace('.', '-')}"


async def settled(connection: NatsClient) -> None:
    """Returns once the server has read everything this connection sent before the call, so a
    subscription just made is one that any client's next message finds.

    `flush()` alone does not promise that: nats-py (2.16) writes its PING straight to the socket, ahead of
    commands such as a SUB still queued for its flusher task, and the PONG can come back before the
    server has the SUB (about 1 start in 300 here, and then a call made right after answers "no
    responders"). Handing the queue to the flusher first, and waiting until it is written, restores
    the order."""
    await connection._flush_pending(force_flush=True)  # noqa: SLF001 - the queued commands, written
    await connection.flush()


def on_event(
    broker: NatsBroker, settings: BusSettings, service: str, event_type: str, *, workers: int = 1
) -> Any:
    """A durable pull consumer shared by every replica of `service`, with explicit acks."""
    return broker.subscriber(
        event_subject(event_type, "*"),
        stream=event_stream(settings),
        durable=consumer_name(service, event_type),
        pull_sub=PullSub(batch_size=max(8, workers * 2), timeout=2.0),
        # Pulled messages arrive in the user's own inbox, the only one its permissions let it read.
        inbox_prefix=f"{settings.inbox_prefix}.".encode(),
        config=ConsumerConfig(
            ack_wait=settings.ack_wait,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.max_ack_pending,
        ),
        # Behind an open server (a single service under test) anyone may publish, so only a signed-in
        # connection holds events to their owner.
        decoder=event_decoder(event_type, owner_of(event_type) if nats_user(settings.nats_url) else None),
        ack_policy=AckPolicy.ACK,
        max_workers=workers if workers > 1 else None,
        title=f"{service}:{event_type}",
    )


def on_call(broker: NatsBroker, subject: str, service: str, workers: int = 8) -> Any:
    # Calls are answered concurrently: each waits on database round trips, not on the CPU.
    return broker.subscriber(subject, queue=service, title=subject, max_workers=workers, decoder=call_body)


def api_call(
    model: type[M], gate: "Gate | None" = None,
) -> Callable[[Callable[..., Awaitable[BaseModel | dict[str, Any]]]], Callable[[StreamMessage[Any]], Awaitable[dict[str, Any]]]]:
    """Validate a call's JSON body strictly; answer a bad call or a refused one with the error shape, never raise.

    With a `gate` the call is privileged: the handler also gets the Actor its token names (a missing or
    bad token is `unauthenticated` before the body is read), and its outcome goes to the audit trail."""

    def decorate(
        handler: Callable[..., Awaitable[BaseModel | dict[str, Any]]],
    ) -> Callable[[StreamMessage[Any]], Awaitable[dict[str, Any]]]:
        @wraps(handler)
        async def answer(message: NatsMessage) -> dict[str, Any]:
            actor = call = None
            try:
                if gate is not None:
                    actor = await gate.actor(message.headers)
                call = read_call(model, message.body)
                result = await (handler(call) if gate is None else handler(call, actor))
            except BodyRefused as exc:
                return ApiError(exc.code, exc.message, exc.details).reply()
            except ApiError as exc:
                if gate is not None and actor is not None:
                    await gate.record(actor, message.raw_message.subject, call, exc.code)
                return exc.reply()
            except Exception:
                log.exception("call %s failed", model.__name__)
                return ApiError("internal", "the service could not complete the call; try again").reply()
            if gate is not None and actor is not None:
                await gate.record(actor, message.raw_message.subject, call, "ok")
            return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

        answer.__annotations__ = {"message": NatsMessage, "return": dict}
        del answer.__wrapped__
        return answer

    return decorate


def outbox_entry(event: Envelope[Any], created: float = 0.0) -> dict[str, Any]:
    """An event as the outbox keeps it: published under its id, which JetStream de-duplicates."""
    return {"_id": event.id, "subject": event_subject(event.short_type, event.district),
            "body": event.model_dump_json(), "created": created}


class Outbox:
    """Persist, then publish. What a crash leaves unpublished is re-sent by the relay.

    A published entry is deleted later, with the others published meanwhile, in one command: by the relay
    before it looks for what is left (so it never re-sends what it knows was published) and when the service
    stops. An entry whose deletion a crash lost is published again under the same Nats-Msg-Id, which
    JetStream drops within its duplicate window and every consumer ignores after it."""

    def __init__(self, db: AsyncDatabase[Any], broker: NatsBroker) -> None:
        self.entries = db["outbox"]
        self.broker = broker
        self.published: list[str] = []

    async def ensure_indexes(self) -> None:
        await self.entries.create_index("created")

    async def store(self, events: Sequence[Envelope[Any]]) -> list[dict[str, Any]]:
        now = time.time()
        entries = [outbox_entry(event, now + offset * 1e-6) for offset, event in enumerate(events)]
        if len(entries) > 1:
            try:
                await self.entries.insert_many(entries, ordered=False)
                return entries
            except BulkWriteError:
                pass  # some were stored by an earlier attempt at the same step: store the rest one by one
        for entry in entries:
            try:
                await self.entries.insert_one(entry)
            except DuplicateKeyError:
                pass  # stored by an earlier attempt at the same step
        return entries

    async def send(self, events: Sequence[Envelope[Any]]) -> None:
        for entry in await self.store(events):
            await self.publish(entry)

    async def publish(self, entry: dict[str, Any]) -> None:
        """Publishes a stored entry; the relay deletes it afterwards."""
        await self._send(entry)
        self.published.append(entry["_id"])

    async def publish_own(self, events: Sequence[Envelope[Any]]) -> None:
        """Publishes events whose own stored document stands for their outbox entry (the service clears its
        flag, and its sweep publishes again what a crash left flagged): nothing here for the relay to delete."""
        for event in events:
            await self._send(outbox_entry(event))

    async def _send(self, entry: dict[str, Any]) -> None:
        await self.broker.publish(
            entry["body"].encode(),
            entry["subject"],
            headers={"Nats-Msg-Id": entry["_id"], "content-type": "application/json"},
            stream=STREAM,
        )

    async def forget_published(self) -> None:
        """Deletes the entries published since the last call, in one command."""
        done, self.published = self.published, []
        if done:
            try:
                await self.entries.delete_many({"_id": {"$in": done}})
            except Exception:
                self.published = done + self.published
                raise

    async def relay_pending(self, older_than: float = 2.0) -> int:
        await self.forget_published()
        cutoff = time.time() - older_than
        sent = 0
        async for entry in self.entries.find({"created": {"$lt": cutoff}}).sort("created", 1).limit(500):
            await self.publish(entry)
            sent += 1
        await self.forget_published()
        return sent

    async def relay_forever(self, interval: float) -> None:
        while True:
            try:
                if sent := await self.relay_pending():
                    log.info("outbox relay re-published %d event(s)", sent)
            except Exception as exc:
                log.warning("outbox relay failed, will retry: %r", exc)
            await asyncio.sleep(interval)


class Inbox:
    """Which events each consumer has already handled; written after the handler's effects."""

    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self.seen = db["processed"]

    @asynccontextmanager
    async def once(self, consumer: str, event: Envelope[Any]) -> AsyncIterator[bool]:
        key = f"{consumer}:{event.id}"
        first = await self.seen.find_one({"_id": key}) is None
        yield first
        if first:
            try:
                await self.seen.insert_one({"_id": key, "at": time.time(), "type": event.type})
            except DuplicateKeyError:
                pass


def envelope_json(event: Envelope[Any]) -> bytes:
    return json.dumps(event.model_dump(mode="json"), ensure_ascii=False).encode()
