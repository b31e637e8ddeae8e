"""Dead letters: events a consumer gave up on, kept where an operator can inspect, replay or discard them.

JetStream keeps such a message in the stream and publishes an advisory with its sequence: after
max_deliver failed attempts (MAX_DELIVERIES) or when a poison event was terminated (MSG_TERMINATED).
A letter that can never be handled (not JSON, not an envelope of its subject's type) is not replayed:
an operator discards it, saying who and why, and it moves to `dead_letters_discarded`.
"""

import json
import logging
import time
from typing import Any, Literal

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field, model_validator
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts import ApiError
from contracts.subjects import STREAM
from contracts.wire import BodyRefused, event_type_of, read_event
from services.common import auth
from services.common.auth import Actor
from services.common.bus import api_call, on_call
from services.common.gate import Gate

log = logging.getLogger("linli.deadletters")

ADVISORIES = {
    "max_deliveries": f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.*",
    "terminated": f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{STREAM}.*",
}


class DeadLetterCall(BaseModel):
    action: Literal["list", "replay", "discard"] = "list"
    id: str | None = Field(default=None, max_length=200, description="The dead letter to replay or discard.")
    limit: int = Field(default=50, ge=1, le=500)
    discarded: bool = Field(default=False, description="list: the discarded letters instead of the open ones.")
    operator: str = Field(default="", max_length=80, description="Who replays or discards; required to discard.")
    reason: str = Field(default="", max_length=500, description="Why; required to discard.")

    @model_validator(mode="after")
    def says_what_and_who(self) -> "DeadLetterCall":
        if self.action != "list" and not self.id:
            raise ValueError(f"{self.action} needs the id of a dead letter")
        if self.action == "discard" and not (self.operator.strip() and self.reason.strip()):
            raise ValueError("discarding a dead letter needs an operator and a reason")
        return self


def replay_problem(subject: str, body: bytes) -> str:
    """Why replaying this message could never work, or "" when it could."""
    if not subject:
        return "the message is no longer in the stream"
    try:
        read_event(event_type_of(subject), body)
    except BodyRefused as exc:
        return (f"{exc.code}: {exc.message}" + (f" {exc.details}" if exc.details else ""))[:1000]
    return ""


def wire(broker: NatsBroker, db: AsyncDatabase[dict[str, Any]], service: str, gate: Gate) -> None:
    letters = db["dead_letters"]
    discarded = db["dead_letters_discarded"]

    async def record(advisory: dict[str, Any], reason: str) -> None:
        consumer = advisory.get("consumer", "")
        if not consumer.startswith(f"{service}-"):
            return
        seq = int(advisory["stream_seq"])
        key = f"{consumer}:{seq}"
        try:
            msg = await broker.config.connection_state.stream.get_msg(STREAM, seq)  # type: ignore[attr-defined]
            subject, raw = msg.subject, msg.data or b""
        except NotFoundError:
            subject, raw = "", b""
        body = raw.decode(errors="replace")
        problem = replay_problem(subject, raw)
        await letters.replace_one(
            {"_id": key},
            {"_id": key, "consumer": consumer, "stream_seq": seq, "subject": subject, "body": body,
             "reason": reason, "deliveries": advisory.get("deliveries"), "at": time.time(), "replays": 0,
             "replayable": not problem, "problem": problem},
            upsert=True,
        )
        log.error("dead letter %s (%s) on %s: %s", key, reason, subject, body[:300])

    def recorder(reason: str) -> Any:
        async def on_advisory(message: NatsMessage) -> None:
            await record(json.loads(message.body), reason)

        return on_advisory

    for reason, subject in ADVISORIES.items():
        broker.subscriber(subject, queue=f"{service}-deadletters", include_in_schema=False)(recorder(reason))

    async def replay(call: DeadLetterCall, letter: dict[str, Any]) -> dict[str, Any]:
        if problem := replay_problem(letter["subject"], letter["body"].encode()):
            raise ApiError("not_replayable", "this dead letter can never be handled; discard it instead",
                           {"id": letter["_id"], "problem": problem})
        replays = letter["replays"] + 1
        event_id = json.loads(letter["body"])["id"]
        await broker.publish(
            letter["body"].encode(), letter["subject"],
            headers={"Nats-Msg-Id": f"{event_id}:replay:{replays}", "content-type": "application/json"},
            stream=STREAM,
        )
        await letters.update_one({"_id": letter["_id"]}, {"$set": {
            "replays": replays, "replayed_at": time.time(), "replayed_by": call.operator, "replay_reason": call.reason,
        }})
        return {"replayed": letter["_id"], "replays": replays}

    async def discard(call: DeadLetterCall, letter: dict[str, Any]) -> dict[str, Any]:
        record = {**letter, "discarded_by": call.operator, "discard_reason": call.reason, "discarded_at": time.time()}
        try:
            await discarded.insert_one(record)
        except DuplicateKeyError:
            record = await discarded.find_one({"_id": letter["_id"]}) or record  # discarded by an earlier attempt
        await letters.delete_one({"_id": letter["_id"]})
        return {"discarded": letter["_id"], "operator": record["discarded_by"], "reason": record["discard_reason"]}

    @on_call(broker, f"linli.api.{service}.dead_letters", service)
    @api_call(DeadLetterCall, gate)
    async def dead_letters(call: DeadLetterCall, actor: Actor) -> dict[str, Any]:
        auth.allow(actor, ["administrator"])  # a letter's body may hold anyone's personal data
        if not actor.open:
            call = call.model_copy(update={"operator": actor.sub})
        if call.action == "list":
            source = discarded if call.discarded else letters
            rows = await source.find({}).sort("at", -1).limit(call.limit).to_list()
            return {"dead_letters": rows}
        letter = await letters.find_one({"_id": call.id})
        if letter is None and call.action == "discard" and (gone := await discarded.find_one({"_id": call.id})):
            return {"discarded": gone["_id"], "operator": gone["discarded_by"], "reason": gone["discard_reason"]}
        if letter is None:
            raise ApiError("not_found", "no dead letter with this id", {"id": call.id})
        return await (replay if call.action == "replay" else discard)(call, letter)
