import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from contracts import API, ApiError, Envelope
from contracts.calls import (
    AssignmentReply,
    Assignments,
    AssignmentsQuery,
    AssignmentView,
    Complete,
    Explanation,
    ExplainQuery,
    OperatorAssign,
    OperatorReassign,
    Respond,
)
from contracts.events import (
    PairingCreated,
    PairingEnded,
    RequestCancelled,
    RequestCreated,
    RequestRated,
    VolunteerRegistered,
)
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.matcher import handlers, scoring
from services.matcher.config import MatcherSettings
from services.matcher.store import MatcherStore

log = logging.getLogger("linli.matcher")
MAX_OFFERS_PER_ROUND = 10  # bounds what a dead replica's round can have reserved


def build(settings: MatcherSettings | None = None) -> Service:
    settings = settings or MatcherSettings()
    service = Service.create("matcher", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    store = MatcherStore(service.db)
    rules = scoring.Rules.load(settings.rules_path)
    places = scoring.Places.load(settings.places_path)
    zone = ZoneInfo(settings.timezone)
    service.on_start.append(store.ensure_indexes)

    async def place(request_id: str) -> None:
        """Offer an open request to the next stage's best free candidates, or hand it to an operator."""
        request = await store.claim(request_id, settings.lease)
        if request is None:
            return  # not open: another replica has it, or it is offered, done or cancelled
        await choose_and_offer(request)

    async def choose_and_offer(request: dict[str, Any]) -> None:
        placing = {"state": "placing", "round": request["round"]}
        progress = {"stage": request.get("stage", 0), "stage_rounds": request.get("stage_rounds", 0),
                    "pairing_pending": request.get("pairing_pending", True)}
        left_out: Counter[str] = Counter()
        while True:
            if progress["pairing_pending"]:
                progress["pairing_pending"] = False
                pool = await store.volunteers_by_id(await store.paired_volunteers(request.get("resident_ref", "")))
                stage = scoring.Stage("pairing", scoring.TIERS, len(pool), rules.pairing_ttl_factor)
                need_skill = False
            else:
                stage = scoring.stage_for(rules, request["urgency"], progress["stage"])
                if stage is None:
                    break
                if progress["stage_rounds"] >= stage.rounds:
                    progress.update(stage=progress["stage"] + 1, stage_rounds=0)
                    continue
                grids = places.grids_within(request["district"], request["grid"], stage.tiers)
                pool = await store.volunteers_near(request["district"], request["service"], request["category"], grids)
                need_skill = True
            ids = [v["_id"] for v in pool]
            free = await store.free_slots(pool)
            histories = await store.histories(request.get("resident_ref", ""), ids)
            ranked, out = scoring.rank(request, pool, free, histories, places, rules, time.time(), zone, need_skill)
            left_out.update(out)
            chosen = []
            for rank_, candidate in enumerate(ranked, start=1):
                if len(chosen) == stage.offer_to:
                    break
                assignment_id = handlers.assignment_id_for(request["_id"], request["round"], len(chosen))
                if await store.reserve(candidate.volunteer_id, assignment_id):
                    chosen.append((assignment_id, candidate.explanation(rank_, stage.name, len(ranked), rules.version)))
            if chosen:
                if stage.name != "pairing":
                    progress["stage_rounds"] += 1
                await offer(request, stage, chosen, progress, dict(+left_out))
                return
            if stage.name != "pairing":
                progress.update(stage=progress["stage"] + 1, stage_rounds=0)
        left_out = +left_out  # drop zero counts
        reason = scoring.unmatched_reason(left_out, len(request.get("tried", [])))
        if await store.move_request(request["_id"], placing, state="unmatched", reason=reason,
                                    not_considered=dict(left_out), announced=False, settled_at=time.time(),
                                    **progress):
            log.info("request %s unmatched: %s", request["_id"], reason)
            await announce_unmatched(request["_id"])

    async def announce_unmatched(request_id: str) -> None:
        # Sent from the stored request, so the sweep can send it again after a crash.
        request = await store.request(request_id)
        if request and request["state"] == "unmatched":
            await outbox.send([handlers.unmatched(request, request["reason"])])
            await store.move_request(request_id, {"state": "unmatched", "round": request["round"]}, announced=True)

    async def offer(
        request: dict[str, Any], stage: scoring.Stage, chosen: list[tuple[str, dict[str, Any]]],
        progress: dict[str, Any], left_out: dict[str, int], by: str = "matcher", accepted: bool = False,
    ) -> None:
        now = time.time()
        assignments = [
            {"_id": assignment_id, "request_id": request["_id"], "volunteer_id": explanation["volunteer_id"],
             "district": request["district"], "service": request["service"], "grid": request["grid"],
             "urgency": request["urgency"], "state": "accepted" if accepted else "offered", "round": request["round"],
             "stage": stage.name, "explanation": explanation, "by": by, "created": now,
             "expires": now + settings.offer_ttl * stage.ttl_factor, "announced": False}
            for assignment_id, explanation in chosen
        ]
        for assignment in assignments:
            await store.add_assignment(assignment)
        placing = {"state": "placing", "round": request["round"]}
        state = {"state": "assigned", "assignment_id": assignments[0]["_id"]} if accepted else {"state": "offered"}
        if not await store.move_request(request["_id"], placing, **state, not_considered=left_out, **progress):
            # Our lease lapsed and another replica reopened the request: these offers never happened.
            for assignment in assignments:
                await store.move_assignment(assignment["_id"], assignment["state"], "withdrawn")
            await store.release_all([a["_id"] for a in assignments])
            return
        for assignment in assignments:
            events = [handlers.offered(request, assignment)]
            if accepted:
                events.append(handlers.accepted(request, assignment))
            await outbox.send(events)
            await store.mark_announced(assignment["_id"])
            await store.note_work(assignment["volunteer_id"], 0.5, rules.half_life_days)

    async def withdraw(assignment: dict[str, Any], reason: str, by: str) -> None:
        if await store.move_assignment(assignment["_id"], assignment["state"], "withdrawn", reason=reason, withdrawn_by=by):
            await store.release(assignment["_id"])
            request = await store.request(assignment["request_id"]) or {}
            await outbox.send([handlers.withdrawn(request, assignment, reason, by)])

    async def offer_ended(assignment: dict[str, Any], why: str) -> None:
        """After a decline or a lapsed offer: free the slot; when the round has no live offer left, go on."""
        await store.release(assignment["_id"])
        await store.note_why(assignment["request_id"], assignment["volunteer_id"], why)
        offers = await store.round_offers(assignment["request_id"], assignment["round"])
        if any(a["state"] in ("offered", "accepted") for a in offers):
            return
        request = await store.request(assignment["request_id"])
        if request is None:
            return
        tried = sorted({*request.get("tried", []), *(a["volunteer_id"] for a in offers)})
        if await store.move_request(
            request["_id"], {"state": "offered", "round": assignment["round"]},
            state="open", tried=tried, opened=time.time(),
        ):
            await place(request["_id"])

    @on_event(broker, settings.bus, "matcher", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("matcher-volunteer-registered", event) as first:  # repeats: by event id
            if first:
                data = event.data
                known = await store.volunteers_by_id([data.volunteer_id])
                kept = {k: known[0][k] for k in ("recent_work", "recent_at", "stars_sum", "stars_n") if known and k in known[0]}
                await store.save_volunteer(
                    {"_id": data.volunteer_id, "district": data.district, "grids": data.grids,
                     "skills": data.skills, "capacity": data.capacity, "team": data.team,
                     "attributes": data.attributes, "availability": [w.model_dump() for w in data.availability],
                     "away": [p.model_dump(mode="json") for p in data.away], "updated": time.time(), **kept}
                )

    @on_event(broker, settings.bus, "matcher", "request.created", workers=settings.workers)
    async def request_created(event: Envelope[RequestCreated]) -> None:
        data = event.data
        # Repeats are recognised by the request id: the insert is a no-op and place() finds it taken.
        await store.add_request(
            {"_id": data.request_id, "district": data.district, "grid": data.grid, "service": data.service,
             "category": data.category, "urgency": data.urgency, "resident_ref": data.resident_ref,
             "needs": data.needs, "window_start": data.window_start.isoformat() if data.window_start else None,
             "state": "open", "round": 0, "tried": [], "why": {}, "stage": 0, "stage_rounds": 0,
             "pairing_pending": True, "cause": event.id, "opened": time.time(), "created": time.time()}
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
        for assignment in await store.of_request(request["_id"]):
            if assignment["state"] in ("offered", "accepted"):
                await withdraw(assignment, "the request was cancelled", "resident")

    @on_event(broker, settings.bus, "matcher", "request.rated")
    async def request_rated(event: Envelope[RequestRated]) -> None:
        request = await store.request(event.data.request_id) or {}
        await store.note_rating(
            event.data.request_id, request.get("resident_ref", ""), event.data.volunteer_id, event.data.stars
        )

    @on_event(broker, settings.bus, "matcher", "pairing.created")
    async def pairing_created(event: Envelope[PairingCreated]) -> None:
        data = event.data
        await store.save_pairing({"_id": data.pairing_id, "resident_ref": data.resident_ref,
                                  "volunteer_id": data.volunteer_id, "kind": data.kind,
                                  "district": data.district, "active": True})

    @on_event(broker, settings.bus, "matcher", "pairing.ended")
    async def pairing_ended(event: Envelope[PairingEnded]) -> None:
        await store.end_pairing(event.data.pairing_id)

    @on_call(broker, API.MATCHER_RESPOND, "matcher")
    @api_call(Respond)
    async def respond(call: Respond) -> AssignmentReply:
        assignment = handlers.check_responder(await store.assignment(call.assignment_id), call.volunteer_id)
        now = time.time()
        if assignment["state"] == "offered" and assignment["expires"] > now:
            if call.accept:
                return await accept(assignment)
            if await store.move_assignment(assignment["_id"], "offered", "declined", reason=call.reason):
                request = await store.request(assignment["request_id"]) or {}
                await outbox.send([handlers.declined(request, assignment, call.reason)])
                await offer_ended(assignment, f"declined: {call.reason}" if call.reason else "declined")
                return reply(assignment, "declined")
            assignment = await store.assignment(call.assignment_id) or assignment
        handlers.refuse_response(assignment, call.accept, now)
        if call.accept and assignment["state"] == "accepted":  # a repeat: the first may have died before its event
            await outbox.send([handlers.accepted(await store.request(assignment["request_id"]) or {}, assignment)])
        return reply(assignment, assignment["state"])

    async def accept(assignment: dict[str, Any]) -> AssignmentReply:
        # The request is the arbiter: of several offers in one round, exactly one can take it.
        won = await store.move_request(
            assignment["request_id"], {"state": "offered", "round": assignment["round"]},
            state="assigned", assignment_id=assignment["_id"],
        )
        if not won:
            request = await store.request(assignment["request_id"]) or {}
            if request.get("assignment_id") != assignment["_id"]:
                raise ApiError("taken", "another volunteer accepted this request first", {"state": request.get("state")})
        if not await store.move_assignment(assignment["_id"], "offered", "accepted"):
            current = await store.assignment(assignment["_id"]) or assignment
            if current["state"] != "accepted":
                # It lapsed or was withdrawn in the same instant: give the request back to its round.
                await store.move_request(assignment["request_id"], {"state": "assigned", "assignment_id": assignment["_id"]},
                                         state="offered")
                await offer_ended(current, "did not answer in time")
                handlers.refuse_response(current, True, time.time())
        request = await store.request(assignment["request_id"]) or {}
        for sibling in await store.round_offers(assignment["request_id"], assignment["round"]):
            if sibling["_id"] != assignment["_id"] and sibling["state"] == "offered":
                await withdraw(sibling, handlers.TAKEN, "matcher")
        await outbox.send([handlers.accepted(request, assignment)])
        return reply(assignment, "accepted")

    def reply(assignment: dict[str, Any], status: str) -> AssignmentReply:
        return AssignmentReply(assignment_id=assignment["_id"], request_id=assignment["request_id"], status=status)

    @on_call(broker, API.MATCHER_COMPLETE, "matcher")
    @api_call(Complete)
    async def complete(call: Complete) -> AssignmentReply:
        assignment = handlers.check_responder(await store.assignment(call.assignment_id), call.volunteer_id)
        first = await store.move_assignment(
            assignment["_id"], "accepted", "completed", hours=str(call.hours), note=call.note, completed_at=time.time()
        )
        if not first:
            assignment = await store.assignment(call.assignment_id) or assignment
            handlers.refuse_completion(assignment, call.hours)
        assignment = await store.assignment(call.assignment_id) or assignment
        request = await store.request(assignment["request_id"]) or {}
        await store.release(assignment["_id"])
        await store.move_request(request["_id"], {"state": "assigned"}, state="completed")
        await outbox.send(handlers.completed(request, assignment))
        if first:
            await store.note_work(assignment["volunteer_id"], float(call.hours), rules.half_life_days)
        return reply(assignment, "completed")

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

    @on_call(broker, API.MATCHER_EXPLAIN, "matcher")
    @api_call(ExplainQuery)
    async def explain(call: ExplainQuery) -> Explanation:
        request = await store.request(call.request_id)
        if request is None or "urgency" not in request:
            raise ApiError("not_found", "the matcher has no request with this id", {"request_id": call.request_id})
        offers = [
            {"assignment_id": a["_id"], "volunteer_id": a["volunteer_id"], "state": a["state"], "stage": a.get("stage"),
             "round": a["round"], "by": a.get("by", "matcher"), "explanation": a.get("explanation", {})}
            for a in await store.of_request(call.request_id)
        ]
        actions = [{k: v for k, v in a.items() if k != "_id"} for a in await store.actions_on(call.request_id)]
        return Explanation(
            request_id=request["_id"], state=request["state"], urgency=request["urgency"], offers=offers,
            fell_out=[{"volunteer_id": v, "why": w} for v, w in sorted(request.get("why", {}).items())],
            not_considered=request.get("not_considered", {}), operator_actions=actions,
        )

    async def take_for_operator(request_id: str, operator: str, reason: str, action: str) -> dict[str, Any]:
        request = await store.request(request_id)
        if request is None or "urgency" not in request:
            raise ApiError("not_found", "the matcher has no request with this id", {"request_id": request_id})
        if request["state"] in ("completed", "cancelled", "placing"):
            raise ApiError("not_changeable", f"a {request['state']} request cannot be changed now",
                           {"state": request["state"]})
        taken = await store.take(request, settings.lease)
        if taken is None:
            raise ApiError("conflict", "the request changed while you were acting on it; look again and retry")
        await store.record_action({"_id": f"{request_id}:{taken['round']}", "request_id": request_id,
                                   "action": action, "operator": operator, "reason": reason, "at": time.time()})
        for assignment in await store.of_request(request_id):
            if assignment["state"] in ("offered", "accepted"):
                await store.note_why(request_id, assignment["volunteer_id"], f"{action} by {operator}: {reason}")
                await withdraw(assignment, f"{action} by {operator}: {reason}", operator)
        return taken

    async def hand_to(request: dict[str, Any], volunteer_id: str, operator: str, reason: str,
                      confirmed: bool) -> AssignmentReply:
        volunteers = await store.volunteers_by_id([volunteer_id])
        if not volunteers or volunteers[0]["district"] != request["district"]:
            await store.move_request(request["_id"], {"state": "placing", "round": request["round"]},
                                     state="open", opened=time.time())
            raise ApiError("unknown_volunteer", "no volunteer with this id in the request's district")
        assignment_id = handlers.assignment_id_for(request["_id"], request["round"])
        if not await store.reserve(volunteer_id, assignment_id):
            await store.move_request(request["_id"], {"state": "placing", "round": request["round"]},
                                     state="open", opened=time.time())
            raise ApiError("at_capacity", "this volunteer has no free capacity; the request is matched again",
                           {"volunteer_id": volunteer_id})
        stage = scoring.Stage("operator", scoring.TIERS)
        explanation = {"volunteer_id": volunteer_id, "stage": "operator", "operator": operator, "reason": reason}
        progress = {k: request.get(k) for k in ("stage", "stage_rounds", "pairing_pending")}
        await offer(request, stage, [(assignment_id, explanation)], progress, {}, by=operator, accepted=confirmed)
        return AssignmentReply(assignment_id=assignment_id, request_id=request["_id"],
                               status="accepted" if confirmed else "offered")

    @on_call(broker, API.MATCHER_ASSIGN, "matcher")
    @api_call(OperatorAssign)
    async def assign(call: OperatorAssign) -> AssignmentReply:
        request = await take_for_operator(call.request_id, call.operator, call.reason, "assigned by hand")
        return await hand_to(request, call.volunteer_id, call.operator, call.reason, call.confirmed)

    @on_call(broker, API.MATCHER_REASSIGN, "matcher")
    @api_call(OperatorReassign)
    async def reassign(call: OperatorReassign) -> AssignmentReply:
        request = await take_for_operator(call.request_id, call.operator, call.reason, "reassigned")
        if call.volunteer_id:
            return await hand_to(request, call.volunteer_id, call.operator, call.reason, False)
        tried = sorted({*request.get("tried", []), *request.get("why", {}).keys()})
        await store.move_request(request["_id"], {"state": "placing", "round": request["round"]},
                                 state="open", tried=tried, opened=time.time())
        await place(request["_id"])
        latest = (await store.request(request["_id"])) or request
        return AssignmentReply(assignment_id=latest.get("assignment_id") or "", request_id=request["_id"],
                               status="offered" if latest["state"] == "offered" else "withdrawn")

    async def sweep() -> None:
        """Timers that survive restarts: every replica sweeps, and compare-and-set lets one act."""
        for assignment in await store.lapsed_offers():
            if await store.move_assignment(assignment["_id"], "offered", "expired"):
                log.info("offer %s to %s lapsed", assignment["_id"], assignment["volunteer_id"])
                request = await store.request(assignment["request_id"]) or {}
                await outbox.send([handlers.expired(request, assignment)])
                await offer_ended(assignment, "did not answer in time")
        for request in await store.stale_placements():
            # A replica died while placing: undo what it did in that round and start the round again.
            orphans = [handlers.assignment_id_for(request["_id"], request["round"], i) for i in range(MAX_OFFERS_PER_ROUND)]
            for assignment in await store.round_offers(request["_id"], request["round"]):
                await store.move_assignment(assignment["_id"], assignment["state"], "withdrawn",
                                            reason="placing replica died")
            await store.release_all(orphans)
            if await store.move_request(
                request["_id"], {"state": "placing", "round": request["round"]}, state="open", opened=time.time()
            ):
                log.warning("request %s was left mid-placement; placing it again", request["_id"])
        for request in await store.waiting(older_than=max(2 * settings.sweep_interval, 2.0)):
            await place(request["_id"])
        for request in await store.unannounced_unmatched(older_than=5.0):
            await announce_unmatched(request["_id"])
        for assignment in await store.unannounced_offers(older_than=5.0):
            request = await store.request(assignment["request_id"]) or {}
            if request.get("state") == "placing" and request.get("round") == assignment["round"]:
                continue  # its placer may still be alive; if not, the lease repair above withdraws it
            if request.get("round") == assignment["round"] and assignment["state"] in ("offered", "accepted"):
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
