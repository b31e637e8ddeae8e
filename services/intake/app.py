from contracts import API, Envelope
from contracts.calls import (
    AssignmentDetails,
    CancelRequest,
    Catalog,
    CatalogQuery,
    CloseRequest,
    Contact,
    ContactQuery,
    DetailsQuery,
    EndPairing,
    FindVolunteer,
    LeaveVolunteer,
    PairResident,
    Pairing,
    Places,
    PlacesQuery,
    RateRequest,
    RegisterReply,
    RegisterVolunteer,
    RequestList,
    RequestsQuery,
    RequestStatus,
    StatusQuery,
    SubmitReply,
    SubmitRequest,
    UpdateVolunteer,
    VolunteerFound,
    VolunteerProfile,
)
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentWithdrawn,
    RequestRedispatched,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.common import places
from services.common import auth
from services.common.auth import Actor, signed_by
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.intake.config import IntakeSettings
from services.intake.desk import Desk
from services.intake.handlers import Menu
from services.intake.store import IntakeStore


DISPATCHERS = ["dispatcher"]  # and administrators, who hold every operator role


def build(settings: IntakeSettings | None = None) -> Service:
    settings = settings or IntakeSettings()
    service = Service.create("intake", settings.bus)
    broker, gate = service.broker, service.gate
    desk = Desk(IntakeStore(service.db), service.outbox, settings, Menu.load(settings.catalog_path),
                places.Places.load(settings.places_path))
    service.on_start.append(desk.start)
    service.loops.append(desk.announce_forgotten)
    service.loops.append(desk.upgrade_pairings)

    @on_call(broker, API.INTAKE_CATALOG, "intake")
    @api_call(CatalogQuery)
    async def catalog(call: CatalogQuery) -> Catalog:
        return desk.menu.catalog

    @on_call(broker, API.INTAKE_PLACES, "intake")
    @api_call(PlacesQuery)
    async def place_list(call: PlacesQuery) -> Places:
        return desk.place_list(call.district)

    @on_call(broker, API.INTAKE_SUBMIT, "intake")
    @api_call(SubmitRequest, gate)
    async def submit(call: SubmitRequest, actor: Actor) -> SubmitReply:
        auth.allow_kiosk_or(actor, call.district, call.grid, DISPATCHERS)  # an operator takes hotline calls
        return await desk.submit(call)  # keyed on the idempotency key

    @on_call(broker, API.INTAKE_STATUS, "intake")
    @api_call(StatusQuery)
    async def status(call: StatusQuery) -> RequestStatus:
        return await desk.status(call.request_id, call.phone_last4)

    @on_call(broker, API.INTAKE_RATE, "intake")
    @api_call(RateRequest)
    async def rate(call: RateRequest) -> RequestStatus:
        return await desk.rate(call)  # once per completion; the same rating again is a repeat

    @on_call(broker, API.INTAKE_CANCEL, "intake")
    @api_call(CancelRequest)
    async def cancel(call: CancelRequest) -> RequestStatus:
        return await desk.cancel(call)

    @on_call(broker, API.INTAKE_CLOSE, "intake")
    @api_call(CloseRequest, gate)
    async def close(call: CloseRequest, actor: Actor) -> RequestStatus:
        auth.allow(actor, DISPATCHERS, await desk.request_district(call.request_id))
        return await desk.close(signed_by(call, actor))

    @on_call(broker, API.INTAKE_REQUESTS, "intake")
    @api_call(RequestsQuery, gate)
    async def requests(call: RequestsQuery, actor: Actor) -> RequestList:
        if call.district is None and not auth.covers(actor, "") and not actor.open:
            call = call.model_copy(update={"district": actor.district})  # an operator lists their own district
        auth.allow(actor, DISPATCHERS + ["committee"], call.district)
        return await desk.requests(call)

    @on_call(broker, API.INTAKE_REGISTER_VOLUNTEER, "intake")
    @api_call(RegisterVolunteer)
    async def register_volunteer(call: RegisterVolunteer) -> RegisterReply:
        return await desk.register(call)  # keyed on district and phone

    @on_call(broker, API.INTAKE_UPDATE_VOLUNTEER, "intake")
    @api_call(UpdateVolunteer, gate)
    async def update_volunteer(call: UpdateVolunteer, actor: Actor) -> VolunteerProfile:
        auth.allow_self_or(actor, call.volunteer_id, DISPATCHERS, await desk.volunteer_district(call.volunteer_id))
        return await desk.update_volunteer(call)

    @on_call(broker, API.INTAKE_LEAVE, "intake")
    @api_call(LeaveVolunteer, gate)
    async def leave(call: LeaveVolunteer, actor: Actor) -> VolunteerProfile:
        auth.allow_self_or(actor, call.volunteer_id, DISPATCHERS, await desk.volunteer_district(call.volunteer_id))
        return await desk.leave(call)

    @on_call(broker, API.INTAKE_PAIR, "intake")
    @api_call(PairResident, gate)
    async def pair(call: PairResident, actor: Actor) -> Pairing:
        auth.allow(actor, DISPATCHERS, call.district)
        return await desk.pair(call)

    @on_call(broker, API.INTAKE_UNPAIR, "intake")
    @api_call(EndPairing, gate)
    async def unpair(call: EndPairing, actor: Actor) -> Pairing:
        auth.allow(actor, DISPATCHERS, await desk.pairing_district(call.pairing_id))
        return await desk.unpair(call)

    @on_call(broker, API.INTAKE_CONTACT, "intake")
    @api_call(ContactQuery)
    async def contact(call: ContactQuery) -> Contact:
        return await desk.contact(call)

    # Only identity's NATS user may call this (linli/permissions.py): a phone number is a volunteer's
    # name at sign-in, never a way for anyone else to find them.
    @on_call(broker, API.INTAKE_FIND_VOLUNTEER, "intake")
    @api_call(FindVolunteer)
    async def find_volunteer(call: FindVolunteer) -> VolunteerFound:
        return await desk.find_volunteer(call)

    @on_call(broker, API.INTAKE_DETAILS, "intake")
    @api_call(DetailsQuery, gate)
    async def details(call: DetailsQuery, actor: Actor) -> AssignmentDetails:
        auth.allow_self_or(actor, call.volunteer_id, [], None)  # the accepted volunteer, nobody else
        return await desk.details(call)

    # No inbox: each change is keyed on the event. A request moves only forward, writing the event's history
    # line in the same command, so a repeated event finds it moved on and changes nothing; an assignment's
    # record is a $set of what the event says, the same again for a repeat.
    @on_event(broker, settings.bus, "intake", "volunteer.assigned")
    async def offered(event: Envelope[VolunteerAssigned]) -> None:
        await desk.offered(event)

    @on_event(broker, settings.bus, "intake", "assignment.accepted")
    async def accepted(event: Envelope[AssignmentAccepted]) -> None:
        await desk.accepted(event)

    @on_event(broker, settings.bus, "intake", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        await desk.completed(event)

    @on_event(broker, settings.bus, "intake", "assignment.withdrawn")
    async def withdrawn(event: Envelope[AssignmentWithdrawn]) -> None:
        await desk.withdrawn(event)

    @on_event(broker, settings.bus, "intake", "request.unmatched")
    async def unmatched(event: Envelope[RequestUnmatched]) -> None:
        await desk.unmatched(event)

    @on_event(broker, settings.bus, "intake", "request.redispatched")
    async def redispatched(event: Envelope[RequestRedispatched]) -> None:
        await desk.redispatched(event)  # its history line, keyed on the event id, is written once

    return service
