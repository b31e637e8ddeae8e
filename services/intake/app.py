import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from contracts import API, ApiError, Envelope
from contracts.calls import (
    CancelRequest,
    Catalog,
    CatalogQuery,
    Contact,
    ContactQuery,
    EndPairing,
    PairResident,
    Pairing,
    RateRequest,
    RegisterReply,
    RegisterVolunteer,
    RequestStatus,
    StatusQuery,
    SubmitReply,
    SubmitRequest,
)
from contracts.events import AssignmentAccepted, AssignmentCompleted, RequestUnmatched
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.intake import handlers
from services.intake.config import IntakeSettings
from services.intake.store import IntakeStore

log = logging.getLogger("linli.intake")


def status_view(doc: dict[str, Any], history: list[dict[str, Any]]) -> RequestStatus:
    return RequestStatus(
        request_id=doc["_id"],
        status=doc["status"],
        district=doc["district"],
        grid=doc["grid"],
        service=doc["service"],
        urgency=doc["urgency"],
        volunteer_id=doc.get("volunteer_id"),
        hours=Decimal(doc["hours"]) if doc.get("hours") else None,
        stars=doc.get("stars"),
        created_at=doc["created_at"],
        history=history,
    )


def build(settings: IntakeSettings | None = None) -> Service:
    settings = settings or IntakeSettings()
    service = Service.create("intake", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    store = IntakeStore(service.db)
    menu = handlers.Menu.load(settings.catalog_path)
    service.on_start.append(store.ensure_indexes)

    async def announce(doc: dict[str, Any]) -> None:
        await outbox.send([handlers.created_event(doc)])
        await store.mark_announced(doc["_id"])

    async def view(doc: dict[str, Any]) -> RequestStatus:
        return status_view(doc, await store.history(doc["_id"]))

    async def existing(request_id: str) -> dict[str, Any]:
        doc = await store.request(request_id)
        if doc is None:
            raise ApiError("not_found", "no request with this id", {"request_id": request_id})
        return doc

    @on_call(broker, API.INTAKE_CATALOG, "intake")
    @api_call(CatalogQuery)
    async def catalog(call: CatalogQuery) -> Catalog:
        return menu.catalog

    @on_call(broker, API.INTAKE_SUBMIT, "intake")
    @api_call(SubmitRequest)
    async def submit(call: SubmitRequest) -> SubmitReply:
        handlers.check_needs(call.needs)
        doc, _ = handlers.new_request(call, menu, datetime.now(UTC))
        if stored := await store.add_request(doc):
            handlers.same_submission(stored, call)
            doc = stored
        if not doc["announced"]:
            await announce(doc)
        return SubmitReply(request_id=doc["_id"], status=doc["status"])

    @on_call(broker, API.INTAKE_REGISTER_VOLUNTEER, "intake")
    @api_call(RegisterVolunteer)
    async def register_volunteer(call: RegisterVolunteer) -> RegisterReply:
        doc, event = handlers.new_volunteer(call, menu, datetime.now(UTC))
        await store.save_volunteer(doc)
        await outbox.send([event])
        return RegisterReply(volunteer_id=doc["_id"])

    @on_call(broker, API.INTAKE_STATUS, "intake")
    @api_call(StatusQuery)
    async def status(call: StatusQuery) -> RequestStatus:
        return await view(await existing(call.request_id))

    @on_call(broker, API.INTAKE_RATE, "intake")
    @api_call(RateRequest)
    async def rate(call: RateRequest) -> RequestStatus:
        doc = await existing(call.request_id)
        now = datetime.now(UTC)
        if handlers.check_rating(doc, call.stars, call.done) == "rate":
            if not await store.advance(
                doc["_id"], handlers.rating_outcome(call.stars, call.done), now.isoformat(),
                handlers.rating_note(call.stars, call.done, call.comment),
                stars=call.stars, comment=call.comment, done=call.done,
            ):
                doc = await existing(call.request_id)
                handlers.check_rating(doc, call.stars, call.done)  # a concurrent rating won; say why, or repeat it
        doc = await existing(call.request_id)
        await outbox.send(handlers.rating_events(doc, now))
        return await view(doc)

    @on_call(broker, API.INTAKE_CANCEL, "intake")
    @api_call(CancelRequest)
    async def cancel(call: CancelRequest) -> RequestStatus:
        doc = await existing(call.request_id)
        now = datetime.now(UTC)
        if doc["status"] != "cancelled":
            handlers.check_cancel(doc)
            who = f" by {call.operator}" if call.operator else ""
            if not await store.advance(
                doc["_id"], "cancelled", now.isoformat(), f"cancelled{who}: {call.reason or 'no reason given'}",
                below=handlers.RANK["completed"], cancelled_by=call.operator or "resident",
            ):
                handlers.check_cancel(await existing(call.request_id))
        doc = await existing(call.request_id)
        await outbox.send([handlers.cancelled_event(doc, call.reason, now)])
        return await view(doc)

    @on_call(broker, API.INTAKE_PAIR, "intake")
    @api_call(PairResident)
    async def pair(call: PairResident) -> Pairing:
        volunteer = await store.volunteer(call.volunteer_id)
        if volunteer is None or volunteer["district"] != call.district:
            raise ApiError("unknown_volunteer", "no volunteer with this id in the district", {"volunteer_id": call.volunteer_id})
        resident_ref = handlers.resident_ref_for(call.district, call.resident_phone)
        pairing_id = "pr-" + handlers.derived_id("pairing", call.district, resident_ref, call.volunteer_id)
        existing = await store.pairing(pairing_id)
        if existing and existing["active"]:
            return Pairing(pairing_id=pairing_id, volunteer_id=call.volunteer_id, kind=existing["kind"], active=True)
        now = datetime.now(UTC)
        await store.save_pairing({"_id": pairing_id, "district": call.district, "resident_ref": resident_ref,
                                  "volunteer_id": call.volunteer_id, "kind": call.kind, "active": True,
                                  "started": now.timestamp()})
        await outbox.send([handlers.pairing_event(call.district, pairing_id, resident_ref, call.volunteer_id,
                                                  call.kind, now)])
        return Pairing(pairing_id=pairing_id, volunteer_id=call.volunteer_id, kind=call.kind, active=True)

    @on_call(broker, API.INTAKE_UNPAIR, "intake")
    @api_call(EndPairing)
    async def unpair(call: EndPairing) -> Pairing:
        pairing = await store.pairing(call.pairing_id)
        if pairing is None:
            raise ApiError("not_found", "no pairing with this id", {"pairing_id": call.pairing_id})
        await store.end_pairing(call.pairing_id)
        await outbox.send([handlers.pairing_ended_event(pairing, call.reason, datetime.now(UTC))])
        return Pairing(pairing_id=pairing["_id"], volunteer_id=pairing["volunteer_id"], kind=pairing["kind"],
                       active=False)

    @on_call(broker, API.INTAKE_CONTACT, "intake")
    @api_call(ContactQuery)
    async def contact(call: ContactQuery) -> Contact:
        if call.kind == "volunteer":
            volunteer = await store.volunteer(call.id)
            if volunteer:
                return Contact(name=volunteer["name"], phone=volunteer["phone"])
        else:
            request = await store.request(call.id)
            if request:
                return Contact(name=request["resident"]["name"], phone=request["resident"]["phone"])
        raise ApiError("not_found", f"no {call.kind} with this id", {"id": call.id})

    @on_event(broker, settings.bus, "intake", "assignment.accepted")
    async def accepted(event: Envelope[AssignmentAccepted]) -> None:
        async with inbox.once("intake-accepted", event) as first:  # repeats are recognised by event id
            if first:
                await store.advance(
                    event.data.request_id, "accepted", event.time.isoformat(), "a volunteer is coming",
                    volunteer_id=event.data.volunteer_id,
                )

    @on_event(broker, settings.bus, "intake", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        async with inbox.once("intake-completed", event) as first:
            if first:
                await store.advance(
                    event.data.request_id, "completed", event.time.isoformat(), f"done in {event.data.hours} h",
                    volunteer_id=event.data.volunteer_id, hours=str(event.data.hours),
                )

    @on_event(broker, settings.bus, "intake", "request.unmatched")
    async def unmatched(event: Envelope[RequestUnmatched]) -> None:
        async with inbox.once("intake-unmatched", event) as first:
            if first:
                await store.advance(
                    event.data.request_id, "unmatched", event.time.isoformat(),
                    "no volunteer found yet; an operator will follow up",
                )

    async def announce_forgotten() -> None:
        while True:
            for doc in await store.unannounced(settings.announce_after):
                log.warning("announcing request %s that was stored but not yet published", doc["_id"])
                await announce(doc)
            await asyncio.sleep(settings.announce_after)

    service.loops.append(announce_forgotten)
    return service
