"""Dead letters: events a consumer gave up on, kept where an operator can inspect and replay them.

JetStream keeps such a message in the stream and publishes an advisory with its sequence: after
max_deliver failed attempts (MAX_DELIVERIES) or when a malformed event was terminated (MSG_TERMINATED).
"""

import json
import logging
import time
from typing import Any, Literal

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.js.errors import NotFoundError
from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

from contracts import ApiError
from contracts.subjects import STREAM
from services.common.bus import api_call, on_call

log = logging.getLogger("linli.deadletters")

ADVISORIES = {
    "max_deliveries": f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.*",
    "terminated": f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{STREAM}.*",
}


class DeadLetterCall(BaseModel):
    action: Literal["list", "replay"] = "list"
    id: str | None = Field(default=None, description="The dead letter to replay.")
    limit: int = Field(default=50, ge=1, le=500)


def wire(broker: NatsBroker, db: AsyncDatabase[dict[str, Any]], service: str) -> None:
    letters = db["dead_letters"]

    async def record(advisory: dict[str, Any], reason: str) -> None:
        consumer = advisory.get("consumer", "")
        if not consumer.startswith(f"{service}-"):
            return
        seq = int(advisory["stream_seq"])
        key = f"{consumer}:{seq}"
        try:
            msg = await broker.config.connection_state.stream.get_msg(STREAM, seq)  # type: ignore[attr-defined]
            subject, body = msg.subject, (msg.data or b"").decode(errors="replace")
        except NotFoundError:
            subject, body = "", ""
        await letters.replace_one(
            {"_id": key},
            {"_id": key, "consumer": consumer, "stream_seq": seq, "subject": subject, "body": body,
             "reason": reason, "deliveries": advisory.get("deliveries"), "at": time.time(), "replays": 0},
            upsert=True,
        )
        log.error("dead letter %s (%s) on %s: %s", key, reason, subject, body[:300])

    def recorder(reason: str) -> Any:
        async def on_advisory(message: NatsMessage) -> None:
            await record(json.loads(message.body), reason)

        return on_advisory

    for reason, subject in ADVISORIES.items():
        broker.subscriber(subject, queue=f"{service}-deadletters", include_in_schema=False)(recorder(reason))

    @on_call(broker, f"linli.api.{service}.dead_letters", service)
    @api_call(DeadLetterCall)
    async def dead_letters(call: DeadLetterCall) -> dict[str, Any]:
        if call.action == "list":
            rows = await letters.find({}).sort("at", -1).limit(call.limit).to_list()
            return {"dead_letters": rows}
        letter = await letters.find_one({"_id": call.id})
        if letter is None or not letter["subject"]:
            raise ApiError("not_found", "no replayable dead letter with this id", {"id": call.id})
        replays = letter["replays"] + 1
        event_id = json.loads(letter["body"]).get("id", letter["_id"]) if letter["body"].startswith("{") else letter["_id"]
        await broker.publish(
            letter["body"].encode(), letter["subject"],
            headers={"Nats-Msg-Id": f"{event_id}:replay:{replays}", "content-type": "application/json"},
            stream=STREAM,
        )
        await letters.update_one({"_id": letter["_id"]}, {"$set": {"replays": replays, "replayed_at": time.time()}})
        return {"replayed": letter["_id"], "replays": replays}
