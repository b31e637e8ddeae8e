"""Who may sign in, and the token each gets: operators by password, kiosks by their device secret,
volunteers by a one-time code that the notifier sends to their phone."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contracts import ApiError, Envelope, new_event
from contracts.calls import (
    CodeQuery,
    CodeRequest,
    CodeSent,
    CodeSignIn,
    CodeText,
    DeviceCredential,
    DeviceSignIn,
    Operator,
    PutDevice,
    PutOperator,
    SignedIn,
    SignIn,
    TokenKey,
)
from contracts.events import CodeRequested, VolunteerLeft, VolunteerRegistered
from services.common import auth
from services.common.auth import Actor
from services.common.bus import Outbox
from services.identity import handlers
from services.identity.config import IdentitySettings
from services.identity.store import IdentityStore

log = logging.getLogger("linli.identity")

# The volunteer id registered with (phone, district), or None; asked of intake, which alone holds phones.
FindByPhone = Callable[[str, str], Awaitable[str | None]]


async def nobody_by_phone(phone: str, district: str) -> str | None:
    return None


class Identity:
    def __init__(self, store: IdentityStore, outbox: Outbox, settings: IdentitySettings,
                 clock: Callable[[], float], find_by_phone: FindByPhone = nobody_by_phone) -> None:
        self.store = store
        self.find_by_phone = find_by_phone
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.hasher = PasswordHasher()
        # Verifying against a real hash when the user is unknown takes as long as a wrong password.
        self.decoy = self.hasher.hash(handlers.new_secret())
        self.key = auth.load_private(auth.new_private_pem())
        self.public = auth.public_pem(self.key)
        self.key_id = auth.key_id(self.public)

    async def start(self) -> None:
        await self.store.ensure_indexes()
        self.key = auth.load_private(await self.store.signing_key(auth.new_private_pem()))
        self.public = auth.public_pem(self.key)
        self.key_id = auth.key_id(self.public)
        if self.settings.admin_password_file:
            password = Path(self.settings.admin_password_file).read_text().strip()
            await self.store.add_operator_once("admin", {
                "hash": self.hasher.hash(password), "role": "administrator", "district": auth.EVERY_DISTRICT,
                "active": True, "by": "IDENTITY_ADMIN_PASSWORD_FILE",
            })

    def token_key(self) -> TokenKey:
        return TokenKey(public_key=self.public, key_id=self.key_id)

    def signed_in(self, sub: str, role: str, district: str, ttl: float, grid: str = "") -> SignedIn:
        token, expires = auth.issue(self.key, self.key_id, sub, role, district, ttl, grid=grid, now=self.clock())
        return SignedIn(token=token, expires_at=datetime.fromtimestamp(expires, UTC), sub=sub, role=role,
                        district=district, grid=grid)

    def password_matches(self, doc: dict[str, Any] | None, password: str) -> bool:
        try:
            return bool(self.hasher.verify(doc["hash"] if doc else self.decoy, password)) and doc is not None
        except (VerificationError, InvalidHashError):
            return False

    async def login(self, call: SignIn) -> SignedIn:
        operator = await self.store.operator(call.user)
        if not self.password_matches(operator, call.password) or not operator or not operator["active"]:
            raise handlers.wrong_sign_in()
        return self.signed_in(call.user, operator["role"], operator["district"], self.settings.operator_ttl)

    async def device_login(self, call: DeviceSignIn) -> SignedIn:
        device = await self.store.device(call.device_id)
        if not self.password_matches(device, call.secret) or not device:
            raise handlers.wrong_sign_in()
        return self.signed_in(call.device_id, "kiosk", device["district"], self.settings.kiosk_ttl,
                              grid=device["grid"])

    async def put_operator(self, call: PutOperator, actor: Actor) -> Operator:
        auth.allow(actor, ["administrator"], None if call.district == auth.EVERY_DISTRICT else call.district)
        if call.district == auth.EVERY_DISTRICT and not actor.open and actor.district != auth.EVERY_DISTRICT:
            raise auth.forbidden(actor, "only an administrator of every district may make one")
        doc = await self.store.put_operator(call.user, {
            "hash": self.hasher.hash(call.password), "role": call.role, "district": call.district,
            "active": call.active, "by": actor.sub,
        })
        return Operator(user=call.user, role=doc["role"], district=doc["district"], active=doc["active"])

    async def put_device(self, call: PutDevice, actor: Actor) -> DeviceCredential:
        auth.allow(actor, ["administrator"], call.district)
        secret = handlers.new_secret()
        await self.store.put_device(call.device_id, {
            "hash": self.hasher.hash(secret), "district": call.district, "grid": call.grid, "by": actor.sub,
        })
        return DeviceCredential(device_id=call.device_id, district=call.district, grid=call.grid, secret=secret)

    async def request_code(self, call: CodeRequest) -> CodeSent:
        if call.phone:
            # Whatever the reason (no such phone, another district, left), the same answer as an unknown id.
            found = await self.find_by_phone(call.phone, call.district)
            volunteer = await self.store.volunteer(found) if found else None
            if not found or not volunteer or not volunteer["active"]:
                raise ApiError("not_found", "no active volunteer with this phone in this district")
            call = call.model_copy(update={"volunteer_id": found})
        volunteer = await self.store.volunteer(call.volunteer_id)
        if not volunteer or not volunteer["active"]:
            raise ApiError("not_found", "no active volunteer with this id", {"volunteer_id": call.volunteer_id})
        now = self.clock()
        if await self.store.codes_since(call.volunteer_id, now - 3600) >= self.settings.codes_per_hour:
            raise ApiError("too_many", "too many codes asked for in the last hour; wait and try again")
        code_ref, code = uuid.uuid4().hex, handlers.new_code()
        expires = now + self.settings.code_ttl
        event = new_event(CodeRequested(
            volunteer_id=call.volunteer_id, district=volunteer["district"], code_ref=code_ref,
            expires_at=datetime.fromtimestamp(expires, UTC),
        ), source="linli/identity", district=volunteer["district"], subject=call.volunteer_id, correlationid=code_ref)
        await self.store.add_code({
            "_id": code_ref, "volunteer_id": call.volunteer_id, "district": volunteer["district"], "text": code,
            "digest": handlers.code_digest(code_ref, code), "created": now, "expires": expires, "tries": 0,
            "used": False,
        })
        await self.outbox.send([event])
        return CodeSent(code_ref=code_ref, expires_at=event.data.expires_at)

    async def code_text(self, call: CodeQuery) -> CodeText:
        doc = await self.store.take_code_text(call.code_ref)
        if doc is None:
            raise ApiError("not_found", "no code waiting to be sent under this reference")
        return CodeText(volunteer_id=doc["volunteer_id"], district=doc["district"], code=doc["text"],
                        expires_at=datetime.fromtimestamp(doc["expires"], UTC))

    async def verify_code(self, call: CodeSignIn) -> SignedIn:
        doc = await self.store.count_try(call.code_ref)
        if refusal := handlers.code_refusal(doc, call.volunteer_id, self.clock(), self.settings.code_tries):
            raise refusal
        assert doc is not None
        if doc["digest"] != handlers.code_digest(call.code_ref, call.code):
            raise ApiError("unauthenticated", "the code is wrong", {"tries_left": self.settings.code_tries - doc["tries"]})
        if not await self.store.use_code(call.code_ref):
            raise ApiError("unauthenticated", "this code was used already; ask for a new one")
        return self.signed_in(doc["volunteer_id"], "volunteer", doc["district"], self.settings.volunteer_ttl)

    async def registered(self, event: Envelope[VolunteerRegistered]) -> None:
        await self.store.put_volunteer(event.data.volunteer_id, event.data.district, True)

    async def left(self, event: Envelope[VolunteerLeft]) -> None:
        await self.store.put_volunteer(event.data.volunteer_id, event.data.district, False)
