"""Each service's door: the actor a call's token names, and the audit trail of every privileged call.

The public key that verifies tokens comes from LINLI_TOKEN_KEY (a PEM file) or, when that is not set,
from `linli.api.identity.public_key` the first time a token signed by an unknown key id arrives; it is
kept for the life of the process. With LINLI_AUTH=off no token is read and every call is allowed, as
before (the tests of the rest of the system run that way).

The audit trail is append-only: this module only ever inserts into the `audit` collection, and
`linli.api.<service>.audit` lists it, to administrators only.
"""

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase

from contracts import ApiError
from services.common import auth
from services.common.auth import Actor
from services.common.config import BusSettings

log = logging.getLogger("linli.gate")

FetchKey = Callable[[], Awaitable[tuple[str, str]]]
# What an audit entry never keeps of a call: secrets, and a resident's or volunteer's personal data.
UNRECORDED = {"password", "secret", "code", "resident", "resident_phone", "phone", "name", "address",
              "description", "note", "comment", "statement", "signature", "public_key"}


class AuditQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)
    sub: str = Field(default="", max_length=80, description="Only this actor's actions.")
    subject: str = Field(default="", max_length=120, description="Only calls on this subject.")


class Gate:
    def __init__(self, service: str, settings: BusSettings, db: AsyncDatabase[dict[str, Any]],
                 fetch_key: FetchKey | None = None) -> None:
        self.service = service
        self.required = settings.auth != "off"
        self.key_file = settings.token_key
        self.fetch_key = fetch_key
        self.keys: dict[str, str] = {}
        self.entries = db["audit"]

    def trust(self, key_id: str, public_pem: str) -> None:
        """A key known without asking: the identity service's own."""
        self.keys[key_id] = public_pem

    async def actor(self, headers: dict[str, Any] | None) -> Actor:
        if not self.required:
            return auth.OPEN
        token = auth.bearer(headers)
        if not token:
            raise auth.unauthenticated()
        return auth.verify(await self.public_key(auth.key_id_of(token)), token)

    async def public_key(self, key_id: str) -> str:
        if key_id not in self.keys:
            await self.load_key()
        if key_id not in self.keys:
            raise auth.unauthenticated("the token is signed by a key this system does not know")
        return self.keys[key_id]

    async def load_key(self) -> None:
        try:
            if self.key_file:
                pem = Path(self.key_file).read_text()
                self.keys[auth.key_id(pem)] = pem
            elif self.fetch_key is not None:
                key_id, pem = await self.fetch_key()
                self.keys[key_id] = pem
        except Exception as exc:  # no responder, a timeout, an unreadable file or reply: all mean "not now"
            log.warning("%s: could not load the token key: %r", self.service, exc)
            raise ApiError("unavailable", "tokens cannot be checked right now; try again") from exc

    async def record(self, actor: Actor, subject: str, call: BaseModel | None, outcome: str) -> None:
        """One privileged action: who, from which token, what, when, and how it ended. With LINLI_AUTH=off
        nobody is known, and nothing is recorded."""
        if not self.required:
            return
        what = {k: v for k, v in (call.model_dump(mode="json") if call else {}).items() if k not in UNRECORDED}
        try:
            await self.entries.insert_one({
                "_id": uuid.uuid4().hex, "at": time.time(), "service": self.service, "subject": subject,
                "actor": actor.record(), "call": json.loads(json.dumps(what, default=str)), "outcome": outcome,
            })
        except Exception:
            log.exception("%s: could not append to the audit trail: %s by %s", self.service, subject, actor.sub)

    async def audit(self, query: AuditQuery, actor: Actor) -> dict[str, Any]:
        auth.allow(actor, ["administrator"])
        found: dict[str, Any] = {}
        if not actor.open and actor.district != auth.EVERY_DISTRICT:
            found["actor.district"] = actor.district
        if query.sub:
            found["actor.sub"] = query.sub
        if query.subject:
            found["subject"] = query.subject
        rows = await self.entries.find(found).sort("at", -1).limit(query.limit).to_list()
        return {"entries": rows}
