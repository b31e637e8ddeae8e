import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from contracts import API, ApiError, Envelope
from contracts.calls import AssignmentReply, Assignments, AssignmentsQuery, AssignmentView, Complete, Respond
from contracts.events import RequestCancelled, RequestCreated, VolunteerRegistered
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.matcher import handlers
from services.matcher.config import MatcherSettings
from services.matcher.store import MatcherStore

log = logging.getLogger("linli.matcher")


def build(settings: MatcherSettings | None = None) -> Service:
    settings = settings or MatcherSettings()
    service = Service.create("matcher", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    store = MatcherStore(service.db)
    service.on_start.append(store.ensure_indexes)

    async def place(request_id: str) -> None:
        """Offer an open request to the best free candidate, or hand it to an operator."""
        request = await store.claim(request_id, settings.lease)
        if request is None:
            return  # not open: another replica has it, or it is already offered, done or cancelled
        placing = {"state": "placing", "round": request["round"]}
        volunteers = await store.skilled_volunteers(request["district"], request["service"], request["category"])
        free = await store.free_slots([v["_id"] for v in volunteers])
        assignment_id = handlers.assignment_id_for(request_id, request["round"])
        for candidate in handlers.rank(request, volunteers, free):
            if await store.reserve(candidate.volunteer_id, assignment_id):
                await offer(request, candidate.volunteer_id, assignment_id)
                return
        reason = handlers.unmatched_reason(request, volunteers, await store.free_slots([v["_id"] for v in volunteers]))
        if await store.move_request(request_id, placing, state="unmatched", reason=reason):
            log.info("request %s unmatched: %s", request_id, reason)
            await outbox.send([handlers.unmatched(request, reason)])

    async def offer(request: dict[str, Any], volunteer_id: str, assignment_id: str) -> None:
        now = time.time()
        assignment = {
            "_id": assignment_id,
            "request_id": request["_id"],
            "volunteer_id": volunteer_id,
            "district": request["district"],
            "service": request["service"],
            "grid": request["grid"],
            "urgency": request["urgency"],
            "state": "offered",
            "round": request["round"],
            "created": now,
            "expires": now + settings.offer_ttl,
            "announced": False,
        }
        await store.add_assignment(assignment)
        placing = {"state": "placing", "round": request["round"]}
        if not await store.move_request(request["_id"], placing, state="offered", assignment_id=assignment_id):
            # Our lease lapsed and another replica reopened the request: this offer never happened.
            await store.move_assignment(assignment_id, "offered", "withdrawn")
            await store.release(assignment_id)
            return
        await outbox.send([handlers.offered(request, assignment)])
        await store.mark_announced(assignment_id)

    async def reopen(assignment: dict[str, Any]) -> None:
        """After a decline or a lapsed offer: free the slot, remember who was tried, try the next one."""
        await store.release(assignment["_id"])
        request = await store.request(assignment["request_id"])
        if request is None:
            return
        tried = sorted({*request.get("tried", []), assignment["volunteer_id"]})
        if await store.move_request(
            request["_id"], {"state": "offered", "assignment_id": assignment["_id"]},
            state="open", tried=tried, opened=time.time(),
        ):
            await place(request["_id"])

    @on_event(broker, settings.bus, "matcher", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("matcher-volunteer-registered", event) as first:  # repeats: by event id
            if first:
                data = event.data
                await store.save_volunteer(
                    {"_id": data.volunteer_id, "district": data.district, "grids": data.grids,
                     "skills": data.skills, "capacity": data.capacity, "team": data.team, "updated": time.time()}
                )

    @on_event(broker, settings.bus, "matcher", "request.created", workers=settings.workers)
    async def request_created(event: Envelope[RequestCreated]) -> None:
        data = event.data
        # Repeats are recognised by the request id: the insert is a no-op and place() finds it taken.
        await store.add_request(
            {"_id": data.request_id, "district": data.district, "grid": data.grid, "service": data.service,
             "category": data.category, "urgency": data.urgency, "resident_ref": data.resident_ref,
             "state": "open", "round": 0, "tried": [],
             "cause": event.id, "opened": time.time(), "created": time.time()}
        )
        await place(data.request_id)

    @on_event(broker, settings.bus, "matcher", "request.cancelled")
    async def request_cancelled(event: Envelope[RequestCancelled]) -> None:
        request = await store.request(event.data.request_id)
        if request is None:
            # Cancelled before its request.created reached us: a tombstone makes that event a no-op.
            await store.add_request({"_id": event.data.request_id, "state": "cancelled", "round": 0})
            return
        if request["state"] in {"cancelled", "completed"}:
            return
        if request["state"] == "placing":
            raise RuntimeError(f"request {request['_id']} is being placed; cancel it once that settles")
        if not await store.move_request(request["_id"], {"state": request["state"]}, state="cancelled"):
            raise RuntimeError(f"request {request['_id']} changed while cancelling; retrying")
        if assignment_id := request.get("assignment_id"):
            for state in ("offered", "accepted"):
                if await store.move_assignment(assignment_id, state, "withdrawn", reason="request cancelled"):
                    await store.release(assignment_id)

    @on_call(broker, API.MATCHER_RESPOND, "matcher")
    @api_call(Respond)
    async def respond(call: Respond) -> AssignmentReply:
        assignment = handlers.check_responder(await store.assignment(call.assignment_id), call.volunteer_id)
        now = time.time()
        if assignment["state"] == "offered" and assignment["expires"] > now:
            new_state = "accepted" if call.accept else "declined"
            if await store.move_assignment(assignment["_id"], "offered", new_state, reason=call.reason):
                request = await store.request(assignment["request_id"]) or {}
                if call.accept:
                    await store.move_request(
                        request["_id"], {"state": "offered", "assignment_id": assignment["_id"]}, state="assigned"
                    )
                    await outbox.send([handlers.accepted(request, assignment)])
                else:
                    await outbox.send([handlers.declined(request, assignment, call.reason)])
                    await reopen(assignment)
                return AssignmentReply(assignment_id=assignment["_id"], request_id=request["_id"], status=new_state)
            assignment = await store.assignment(call.assignment_id) or assignment
        handlers.refuse_response(assignment, call.accept, now)
        return AssignmentReply(
            assignment_id=assignment["_id"], request_id=assignment["request_id"], status=assignment["state"]
        )

    @on_call(broker, API.MATCHER_COMPLETE, "matcher")
    @api_call(Complete)
    async def complete(call: Complete) -> AssignmentReply:
        assignment = handlers.check_responder(await store.assignment(call.assignment_id), call.volunteer_id)
        if not await store.move_assignment(
            assignment["_id"], "accepted", "completed", hours=str(call.hours), note=call.note,
            completed_at=time.time(),
        ):
            assignment = await store.assignment(call.assignment_id) or assignment
            handlers.refuse_completion(assignment, call.hours)
        assignment = await store.assignment(call.assignment_id) or assignment
        request = await store.request(assignment["request_id"]) or {}
        await store.release(assignment["_id"])
        await store.move_request(request["_id"], {"state": "assigned"}, state="completed")
        await outbox.send(handlers.completed(request, assignment))
        return AssignmentReply(assignment_id=assignment["_id"], request_id=request["_id"], status="completed")

    @on_call(broker, API.MATCHER_ASSIGNMENTS, "matcher")
    @api_call(AssignmentsQuery)
    async def assignments(call: AssignmentsQuery) -> Assignments:
        rows = await store.open_assignments(call.volunteer_id)
        return Assignments(
            volunteer_id=call.volunteer_id,
            assignments=[
                AssignmentView(
                    assignment_id=a["_id"], request_id=a["request_id"], status=a["state"], service=a["service"],
                    grid=a["grid"], urgency=a["urgency"], expires_at=datetime.fromtimestamp(a["expires"], UTC),
                )
                for a in rows
            ],
        )

    async def sweep() -> None:
        """Timers that survive restarts: every replica sweeps, and compare-and-set lets one act."""
        for assignment in await store.lapsed_offers():
            if await store.move_assignment(assignment["_id"], "offered", "expired"):
                log.info("offer %s to %s lapsed", assignment["_id"], assignment["volunteer_id"])
                request = await store.request(assignment["request_id"]) or {}
                await outbox.send([handlers.expired(request, assignment)])
                await reopen(assignment)
        for request in await store.stale_placements():
            # A replica died while placing: undo what it did in that round and start the round again.
            orphan = handlers.assignment_id_for(request["_id"], request["round"])
            await store.move_assignment(orphan, "offered", "withdrawn", reason="placing replica died")
            await store.release(orphan)
            if await store.move_request(
                request["_id"], {"state": "placing", "round": request["round"]}, state="open", opened=time.time()
            ):
                log.warning("request %s was left mid-placement; placing it again", request["_id"])
        for request in await store.waiting(older_than=max(2 * settings.sweep_interval, 2.0)):
            await place(request["_id"])
        for assignment in await store.unannounced_offers(older_than=5.0):
            request = await store.request(assignment["request_id"]) or {}
            if request.get("state") == "placing" and request.get("round") == assignment["round"]:
                continue  # its placer may still be alive; if not, the lease repair above withdraws it
            if request.get("assignment_id") == assignment["_id"] and assignment["state"] == "offered":
                await outbox.send([handlers.offered(request, assignment)])
            await store.mark_announced(assignment["_id"])

    async def sweep_forever() -> None:
        while True:
            try:
                await sweep()
            except Exception:
                log.exception("sweep failed; trying again")
            await asyncio.sleep(settings.sweep_interval)

    service.loops.append(sweep_forever)
    return service
