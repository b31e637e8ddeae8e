import json
import time
from collections.abc import Callable

from contracts import API, ApiError, Envelope
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
    TokenKeyQuery,
)
from contracts.events import VolunteerLeft, VolunteerRegistered
from services.common.auth import Actor
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.identity.config import IdentitySettings
from services.identity.signin import Identity
from services.identity.store import IdentityStore


def build(settings: IdentitySettings | None = None, clock: Callable[[], float] | None = None) -> Service:
    settings = settings or IdentitySettings()
    service = Service.create("identity", settings.bus)
    broker, inbox, gate = service.broker, service.inbox, service.gate

    async def find_by_phone(phone: str, district: str) -> str | None:
        try:
            reply = await broker.request(json.dumps({"phone": phone, "district": district}).encode(),
                                         API.INTAKE_FIND_VOLUNTEER, timeout=settings.intake_timeout)
            answer = json.loads(reply.body)
        except Exception as exc:  # no intake running, or too slow: the volunteer asks again in a moment
            raise ApiError("unavailable", "volunteers cannot be found by phone right now; try again") from exc
        if "error" in answer:
            if answer["error"].get("code") in ("not_found", "invalid_request"):
                return None
            raise ApiError("unavailable", "volunteers cannot be found by phone right now; try again")
        return str(answer["volunteer_id"])

    identity = Identity(IdentityStore(service.db), service.outbox, settings, clock or time.time, find_by_phone)

    async def start() -> None:
        await identity.start()
        gate.trust(identity.key_id, identity.public)  # its own tokens, without asking itself over the bus

    service.on_start.append(start)

    @on_call(broker, API.IDENTITY_PUBLIC_KEY, "identity")
    @api_call(TokenKeyQuery)
    async def public_key(call: TokenKeyQuery) -> TokenKey:
        return identity.token_key()

    @on_call(broker, API.IDENTITY_LOGIN, "identity")
    @api_call(SignIn)
    async def login(call: SignIn) -> SignedIn:
        return await identity.login(call)

    @on_call(broker, API.IDENTITY_DEVICE_LOGIN, "identity")
    @api_call(DeviceSignIn)
    async def device_login(call: DeviceSignIn) -> SignedIn:
        return await identity.device_login(call)

    @on_call(broker, API.IDENTITY_CODE_REQUEST, "identity")
    @api_call(CodeRequest)
    async def code_request(call: CodeRequest) -> CodeSent:
        return await identity.request_code(call)  # a new code each time, within codes_per_hour

    @on_call(broker, API.IDENTITY_CODE_VERIFY, "identity")
    @api_call(CodeSignIn)
    async def code_verify(call: CodeSignIn) -> SignedIn:
        return await identity.verify_code(call)  # a code signs in once

    # Only the notifier's NATS user may publish on this subject (linli/permissions.py); the text is
    # handed out once.
    @on_call(broker, API.IDENTITY_CODE, "identity")
    @api_call(CodeQuery)
    async def code(call: CodeQuery) -> CodeText:
        return await identity.code_text(call)

    @on_call(broker, API.IDENTITY_OPERATOR_PUT, "identity")
    @api_call(PutOperator, gate)
    async def operator_put(call: PutOperator, actor: Actor) -> Operator:
        return await identity.put_operator(call, actor)  # keyed on the user name

    @on_call(broker, API.IDENTITY_DEVICE_PUT, "identity")
    @api_call(PutDevice, gate)
    async def device_put(call: PutDevice, actor: Actor) -> DeviceCredential:
        return await identity.put_device(call, actor)  # keyed on the device id; a new secret each time

    @on_event(broker, settings.bus, "identity", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("identity-volunteers", event) as first:
            if first:
                await identity.registered(event)  # keyed on the volunteer id

    @on_event(broker, settings.bus, "identity", "volunteer.left")
    async def volunteer_left(event: Envelope[VolunteerLeft]) -> None:
        async with inbox.once("identity-left", event) as first:
            if first:
                await identity.left(event)

    return service
