from dataclasses import replace

from contracts import API, Envelope
from contracts.calls import (
    AssignmentReply,
    Assignments,
    AssignmentsQuery,
    Complete,
    Explanation,
    ExplainQuery,
    OperatorAssign,
    OperatorReassign,
    Respond,
    VolunteerList,
    VolunteersQuery,
)
from contracts.events import (
    PairingCreated,
    PairingEnded,
    RequestCancelled,
    RequestClosed,
    RequestCreated,
    RequestRated,
    VolunteerLeft,
    VolunteerRegistered,
)
from contracts.subjects import STREAM
from services.common import auth
from services.common.auth import Actor, signed_by
from services.common.bus import api_call, consumer_name, on_call, on_event
from services.common.places import Places
from services.common.runtime import Service
from services.matcher import scoring
from services.matcher.config import MatcherSettings
from services.matcher.dispatch import Dispatch
from services.matcher.roster import SharedRoster
from services.matcher.store import MatcherStore


DISPATCHERS = ["dispatcher"]  # and administrators, who hold every operator role


def build(settings: MatcherSettings | None = None) -> Service:
    settings = settings or MatcherSettings()
    service = Service.create("matcher", settings.bus)
    broker, inbox, gate = service.broker, service.inbox, service.gate
    store = MatcherStore(service.db)
    roster = SharedRoster(store)
    dispatch = Dispatch(store, service.outbox, settings, scoring.Rules.load(settings.rules_path),
                        Places.load(settings.places_path), roster=roster)
    service.on_start.append(dispatch.start)
    service.loops.append(roster.settle)
    service.loops.append(dispatch.sweep_forever)

    async def hand_over_sooner() -> None:
        # The server keeps the ack wait a consumer was created with: one made with another (an older version
        # made it with LINLI_ACK_WAIT) is edited to this one.
        js = service.broker.connection.jetstream()
        info = await js.consumer_info(STREAM, consumer_name("matcher", "request.created"))
        if info.config.ack_wait != settings.ack_wait:
            await js.add_consumer(STREAM, info.config.evolve(ack_wait=settings.ack_wait))

    service.loops.append(hand_over_sooner)

    @on_event(broker, settings.bus, "matcher", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("matcher-volunteer-registered", event) as first:  # repeats: by event id
            if first:
                await dispatch.volunteer_registered(event.data, event.time.timestamp())

    @on_event(broker, replace(settings.bus, ack_wait=settings.ack_wait), "matcher", "request.created",
              workers=settings.workers)
    async def request_created(event: Envelope[RequestCreated]) -> None:
        await dispatch.request_created(event)  # repeats: the request id is the key, and placing is a CAS

    @on_event(broker, settings.bus, "matcher", "request.cancelled")
    async def request_cancelled(event: Envelope[RequestCancelled]) -> None:
        await dispatch.request_cancelled(event.data.request_id)  # a cancelled request stays cancelled

    @on_event(broker, settings.bus, "matcher", "request.rated")
    async def request_rated(event: Envelope[RequestRated]) -> None:
        await dispatch.request_rated(event.data)  # repeats: one rating per request and volunteer

    @on_event(broker, settings.bus, "matcher", "request.closed")
    async def request_closed(event: Envelope[RequestClosed]) -> None:
        await dispatch.request_closed(event.data.request_id)  # a closed request stays closed

    @on_event(broker, settings.bus, "matcher", "volunteer.left")
    async def volunteer_left(event: Envelope[VolunteerLeft]) -> None:
        # Leaving twice: the offers are withdrawn already. The event's time tells a later comeback from a stale one.
        await dispatch.volunteer_left(event.data.volunteer_id, event.time.timestamp())

    @on_event(broker, settings.bus, "matcher", "pairing.created")
    async def pairing_created(event: Envelope[PairingCreated]) -> None:
        await dispatch.pairing_created(event.data)  # an upsert keyed on the pairing id

    @on_event(broker, settings.bus, "matcher", "pairing.ended")
    async def pairing_ended(event: Envelope[PairingEnded]) -> None:
        await dispatch.pairing_ended(event.data.pairing_id)  # ending twice ends it once

    @on_call(broker, API.MATCHER_RESPOND, "matcher")
    @api_call(Respond, gate)
    async def respond(call: Respond, actor: Actor) -> AssignmentReply:
        # Read once (or remembered, if this replica made the offer): the district it authorizes in, and the
        # offer the answer is judged on.
        assignment = await dispatch.assignment_of(call.assignment_id, remembered_too=True)
        auth.allow_self_or(actor, call.volunteer_id, DISPATCHERS, assignment.get("district") if assignment else None)
        return await dispatch.respond(call, assignment)

    @on_call(broker, API.MATCHER_COMPLETE, "matcher")
    @api_call(Complete, gate)
    async def complete(call: Complete, actor: Actor) -> AssignmentReply:
        # The volunteer themself needs no district to be allowed: the completion's compare-and-set, which
        # names them, then goes first, and the assignment is read only to explain a refusal.
        assignment = None if auth.is_self(actor, call.volunteer_id) else await dispatch.assignment_of(call.assignment_id)
        auth.allow_self_or(actor, call.volunteer_id, DISPATCHERS, assignment.get("district") if assignment else None)
        return await dispatch.complete(call, assignment)

    @on_call(broker, API.MATCHER_ASSIGNMENTS, "matcher")
    @api_call(AssignmentsQuery)
    async def assignments(call: AssignmentsQuery) -> Assignments:
        return await dispatch.assignments(call)

    @on_call(broker, API.MATCHER_VOLUNTEERS, "matcher")
    @api_call(VolunteersQuery, gate)
    async def volunteers(call: VolunteersQuery, actor: Actor) -> VolunteerList:
        auth.allow(actor, DISPATCHERS, call.district)
        return await dispatch.volunteers(call)

    @on_call(broker, API.MATCHER_EXPLAIN, "matcher")
    @api_call(ExplainQuery, gate)
    async def explain(call: ExplainQuery, actor: Actor) -> Explanation:
        auth.allow(actor, DISPATCHERS, await dispatch.request_district(call.request_id))
        return await dispatch.explain(call)

    @on_call(broker, API.MATCHER_ASSIGN, "matcher")
    @api_call(OperatorAssign, gate)
    async def assign(call: OperatorAssign, actor: Actor) -> AssignmentReply:
        auth.allow(actor, DISPATCHERS, await dispatch.request_district(call.request_id))
        return await dispatch.assign(signed_by(call, actor))

    @on_call(broker, API.MATCHER_REASSIGN, "matcher")
    @api_call(OperatorReassign, gate)
    async def reassign(call: OperatorReassign, actor: Actor) -> AssignmentReply:
        auth.allow(actor, DISPATCHERS, await dispatch.request_district(call.request_id))
        return await dispatch.reassign(signed_by(call, actor))

    return service
