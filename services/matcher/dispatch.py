"""The matcher's flow: place a request, offer it, take answers, withdraw, complete, hand over to operators, sweep.

Every step that two replicas could race on ends in one compare-and-set in the store; each step may be
repeated by a retry, a redelivery or another replica and changes nothing the second time.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, overload
from zoneinfo import ZoneInfo

from contracts import ApiError, Envelope
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
    VolunteerList,
    VolunteersQuery,
)
from contracts.events import (
    PairingCreated,
    RequestCreated,
    RequestRated,
    VolunteerRegistered,
)
from services.common.bus import Outbox
from services.common.places import Places
from services.matcher import handlers, scoring
from services.matcher.config import MatcherSettings
from services.matcher.roster import SharedRoster
from services.matcher.store import MatcherStore

log = logging.getLogger("linli.matcher")
MAX_OFFERS_PER_ROUND = 10  # bounds what a dead replica's round can have reserved
OFFERED_WORK = 0.5  # hours of recent work an offer counts for, so that offers spread before the work is done
TIDY_GRACE = 3.0  # seconds a live acceptance has to see itself through before the sweep does it
OFFERS_KEPT = 10_000  # offers this replica made that it remembers, the most recent
RESIDENTS_KEPT = 10_000  # requests whose resident is remembered, the most recent
Doc = dict[str, Any]


class Dispatch:
    def __init__(
        self,
        store: MatcherStore,
        outbox: Outbox,
        settings: MatcherSettings,
        rules: scoring.Rules,
        places: Places,
        clock: Callable[[], float] = time.time,
        roster: SharedRoster | None = None,
    ) -> None:
        self.store = store
        self.roster = roster or SharedRoster(store)
        self.outbox = outbox
        self.settings = settings
        self.rules = rules
        self.places = places
        self.clock = clock
        # An offer and an acceptance are their own outbox entries (the assignment stored `announced: false`,
        # the request `tidy: true`): their events are published straight away, and the flags are cleared
        # afterwards, those of a whole pass of the sweep in one write each. A clear that a crash loses only
        # makes a sweep publish the event again under its id, which JetStream and every consumer drop.
        self.announced: list[str] = []  # offers published, still stored `announced: false`
        self.told: list[str] = []  # completions published, still stored `announced: false`
        self.tidied: list[tuple[str, str]] = []  # (request, assignment): acceptances seen through, still `tidy`
        # Whose each recent request is (it never changes), so that a rating needs no read to be recorded.
        self.residents: dict[str, str] = {}
        # The offers this replica made lately, by id and by code, for an acceptance to be tried without reading
        # its offer; only what never changes is trusted of them, the state is the compare-and-sets' to decide.
        self.offers: dict[str, Doc] = {}

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self.roster.load()  # before the first event is taken: ready means ready to rank

    async def publish(self, events: list[Envelope[Any]]) -> None:
        """Publish events whose stored document is their outbox entry: a sweep publishes them again if need be."""
        await self.outbox.publish_own(events)

    async def clear_flags(self) -> None:
        """The flags of the events published since the last call, cleared in one write per collection."""
        announced, self.announced = self.announced, []
        told, self.told = self.told, []
        tidied, self.tidied = self.tidied, []
        try:
            await self.store.mark_all_announced(announced)
            await self.store.mark_all_announced(told, completed=True)
            await self.store.tidy_all(tidied)
        except Exception:
            self.announced, self.told, self.tidied = announced + self.announced, told + self.told, tidied + self.tidied
            raise

    def note_resident(self, request: Doc) -> None:
        if request.get("resident_ref"):
            self.residents[request["_id"]] = request["resident_ref"]
            if len(self.residents) > RESIDENTS_KEPT:
                del self.residents[next(iter(self.residents))]

    def remember_offer(self, assignment: Doc) -> None:
        for key in (assignment["_id"], assignment.get("code")):
            if key:
                self.offers[key] = assignment
        while len(self.offers) > 2 * OFFERS_KEPT:
            del self.offers[next(iter(self.offers))]

    def forget_offer(self, assignment: Doc) -> None:
        for key in (assignment["_id"], assignment.get("code")):
            self.offers.pop(key or "", None)

    def zone(self, district: str) -> ZoneInfo:
        # Availability windows are read on the district's clock; an unlisted district uses the matcher's.
        return self.places.zone(district) if self.places.district(district) else ZoneInfo(self.settings.timezone)

    def week(self, district: str) -> str:
        return handlers.week_of(self.clock(), self.zone(district))

    # --- placing -------------------------------------------------------------------------------------

    async def place(self, request_id: str) -> None:
        """Offer an open request to the next stage's best free candidates, or hand it to an operator."""
        request = await self.store.claim(request_id, self.clock() + self.settings.lease)
        if request is None:
            return  # not open: another replica has it, or it is offered, done or cancelled
        async with self.holding(request):
            await self.choose_and_offer(request)

    @asynccontextmanager
    async def holding(self, request: Doc) -> AsyncIterator[None]:
        """Renews the placing lease while we work, so that only a dead placer's lease lapses, and soon."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.settings.lease / 3)
                if not await self.store.renew(request["_id"], request["round"], self.clock() + self.settings.lease):
                    return  # no longer ours: the final compare-and-set will say so too

        heartbeat = asyncio.create_task(beat())
        try:
            yield
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat

    async def choose_and_offer(self, request: Doc) -> None:
        store = self.store
        placing = {"state": "placing", "round": request["round"]}
        progress = {"stage": request.get("stage", 0), "stage_rounds": request.get("stage_rounds", 0),
                    "pairing_pending": request.get("pairing_pending", True)}
        # Each volunteer counts once, under the rule that last left them out, however many stages looked.
        left_out: dict[str, str] = {}
        # Other replicas' roster changes, the resident's standing volunteers among them.
        await self.roster.catch_up()
        resident = request.get("resident_ref", "") if progress["pairing_pending"] else ""
        pairs = self.roster.memory.paired(resident) if resident else []
        while True:
            paired: list[str] | None
            if progress["pairing_pending"]:
                progress["pairing_pending"] = False
                paired = pairs
                stage = scoring.Stage("pairing", scoring.TIERS, len(paired), self.rules.pairing_ttl_factor)
                grids, need_skill = None, False
            else:
                next_stage = scoring.stage_for(self.rules, request["urgency"], progress["stage"])
                if next_stage is None:
                    break
                stage = next_stage
                if progress["stage_rounds"] >= stage.rounds:
                    progress.update(stage=progress["stage"] + 1, stage_rounds=0)
                    continue
                paired = None
                grids = self.places.grids_within(request["district"], request["grid"], stage.tiers)
                need_skill = True
            chosen = await self.choose(request, stage, paired, grids, need_skill, left_out)
            if chosen:
                if stage.name != "pairing":
                    progress["stage_rounds"] += 1
                await self.offer(request, stage, chosen, progress, dict(Counter(left_out.values())))
                return
            if stage.name != "pairing":
                progress.update(stage=progress["stage"] + 1, stage_rounds=0)
        counts = Counter(left_out.values())
        reason = scoring.unmatched_reason(counts, len(request.get("tried", [])))
        code = scoring.unmatched_code(counts, len(request.get("tried", [])))
        if await store.move_request(request["_id"], placing, state="unmatched", reason=reason, reason_code=code,
                                    not_considered=dict(counts), announced=False, settled_at=self.clock(),
                                    **progress):
            log.info("request %s unmatched: %s", request["_id"], reason)
            await self.announce_unmatched(request["_id"])

    async def choose(
        self, request: Doc, stage: scoring.Stage, paired: list[str] | None, grids: list[str] | None,
        need_skill: bool, left_out: dict[str, str],
    ) -> list[tuple[str, Doc, str]]:
        """Reserve the stage's best candidates, as (assignment, explanation, slot); the slots' compare-and-set
        decides. Volunteers the memory holds full are read again before the stage gives up on them."""
        chosen: list[tuple[str, Doc, str]] = []
        for look in ("memory", "database"):
            ranked, out = await self.ranked(request, paired, grids, need_skill)
            left_out.update(out)
            for rank_, candidate in enumerate(ranked, start=1):
                if len(chosen) == stage.offer_to:
                    break
                if not await self.count_offer(candidate.volunteer_id, request["district"]):
                    left_out[candidate.volunteer_id] = "fatigue"
                    continue
                assignment_id = handlers.assignment_id_for(request["_id"], request["round"], len(chosen))
                if slot := await self.roster.reserve(candidate.volunteer_id, assignment_id):
                    chosen.append((assignment_id, candidate.explanation(rank_, stage.name, len(ranked),
                                                                       self.rules.version), slot))
                else:
                    await self.note_week(candidate.volunteer_id, request["district"], offers=-1,
                                         work=-OFFERED_WORK)  # not offered
            full = [v for v, why in out.items() if why == "at full capacity"]
            if chosen or not full or look == "database":
                return chosen
            # Another replica may have freed them: a refusal for capacity is decided on the slots themselves.
            await self.roster.refresh(full)
        return chosen

    async def count_offer(self, volunteer_id: str, district: str) -> bool:
        """Count the offer about to be made into the volunteer's week, unless a weekly limit is reached, and
        half an hour into their recent work, in the same write. The limits are kept exactly: the memory's week,
        which other replicas' offers do not reach, ranks; the stored one decides, in the write that counts. An
        offer counted but then not made is taken off again; one a replica killed mid-placement counted stays
        counted, which errs on the side of rest."""
        week = self.week(district)
        counts = await self.store.count_offer(volunteer_id, week, self.rules.max_offers_per_week,
                                              self.rules.max_hours_per_week, **self.work(volunteer_id, OFFERED_WORK))
        if counts is None:  # read only to hold the week that refused, so that ranking passes them by
            counts = (await self.store.weeks_of([volunteer_id], week)).get(volunteer_id)
            self.roster.memory.set_week(volunteer_id, week, counts)
            return False
        self.remember(volunteer_id, week, counts)
        return True

    async def ranked(self, request: Doc, paired: list[str] | None, grids: list[str] | None,
                     need_skill: bool) -> tuple[list[scoring.Scored], dict[str, str]]:
        """The pool, its free slots and weeks from the roster in memory; the resident's ratings from the database."""
        memory = self.roster.memory
        if paired is not None:
            pool = memory.by_id(paired)
        else:
            pool = memory.near(request["district"], request["service"], request["category"], grids)
        ids = [v["_id"] for v in pool]
        histories = await self.store.histories(request.get("resident_ref", ""), ids)
        weeks = memory.week_of(ids, self.week(request["district"]))
        return scoring.rank(request, pool, memory.free(ids), histories, self.places, self.rules, self.clock(),
                            self.zone(request["district"]), need_skill, weeks)

    async def announce_unmatched(self, request_id: str) -> None:
        # Sent from the stored request, so the sweep can send it again after a crash.
        request = await self.store.request(request_id)
        if request and request["state"] == "unmatched":
            await self.outbox.send([handlers.unmatched(request, request["reason"])])
            await self.store.move_request(request_id, {"state": "unmatched", "round": request["round"]}, announced=True)

    async def offer(
        self, request: Doc, stage: scoring.Stage, chosen: list[tuple[str, Doc, str]],
        progress: Doc, left_out: dict[str, int], by: str = "matcher", accepted: bool = False,
    ) -> str:
        """Store the offers, then make them the request's round; returns the first offer's code."""
        store = self.store
        now = self.clock()
        assignments = [
            {"_id": assignment_id, "request_id": request["_id"], "volunteer_id": explanation["volunteer_id"],
             "district": request["district"], "service": request["service"], "grid": request["grid"],
             "urgency": request["urgency"], "state": "accepted" if accepted else "offered", "round": request["round"],
             "stage": stage.name, "explanation": explanation, "by": by, "created": now,
             "expires": now + self.settings.offer_ttl * stage.ttl_factor, "announced": False,
             "slot": slot, **handlers.offer_details(request, explanation.get("tier", ""))}
            for assignment_id, explanation, slot in chosen
        ]
        for assignment in assignments:
            assignment["code"] = await store.add_assignment(assignment)
        placing = {"state": "placing", "round": request["round"]}
        state = {"state": "assigned", "assignment_id": assignments[0]["_id"]} if accepted else {"state": "offered"}
        # The round's offers, named on the request: an acceptance withdraws the others without reading them.
        listed = {"round": request["round"], "ids": [a["_id"] for a in assignments]}
        if not await store.move_request(request["_id"], placing, **state, not_considered=left_out, **progress,
                                        round_offers=listed):
            # Our lease lapsed and another replica reopened the request: these offers never happened.
            for assignment in assignments:
                await store.move_assignment(assignment["_id"], assignment["state"], "withdrawn")
                await self.roster.release(assignment["_id"], assignment["slot"])
                await self.note_week(assignment["volunteer_id"], request["district"], offers=-1, work=-OFFERED_WORK)
            return str(assignments[0]["code"])
        for assignment in assignments:
            if accepted:  # an operator's confirmed choice: both events in the outbox, together
                await self.outbox.send([handlers.offered(request, assignment), handlers.accepted(request, assignment)])
                await store.mark_announced(assignment["_id"])
            else:
                await self.publish([handlers.offered(request, assignment)])
                self.announced.append(assignment["_id"])
                self.remember_offer(assignment)
        return str(assignments[0]["code"])

    async def withdraw(self, assignment: Doc, reason: str, by: str, request: Doc | None = None) -> None:
        await self.withdraw_by_id(assignment["_id"], assignment["state"], reason, by, request)

    async def withdraw_by_id(self, assignment_id: str, expect: str, reason: str, by: str,
                             request: Doc | None = None) -> None:
        withdrawn = await self.store.settle_assignment(assignment_id, expect, "withdrawn", reason=reason,
                                                       withdrawn_by=by)
        if withdrawn:
            await self.roster.release(withdrawn["_id"], withdrawn.get("slot"))
            if request is None:
                request = await self.store.request(withdrawn["request_id"]) or {}
            await self.outbox.send([handlers.withdrawn(request, withdrawn, reason, by)])

    async def offer_ended(self, assignment: Doc, why: str) -> None:
        """After a decline or a lapsed offer: free the slot; when the round has no live offer left, go on."""
        store = self.store
        await self.roster.release(assignment["_id"], assignment.get("slot"))
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
            state="open", tried=tried, opened=self.clock(),
        ):
            await self.place(request["_id"])

    async def note_week(self, volunteer_id: str, district: str, offers: int = 0, hours: float = 0.0,
                        work: float = 0.0) -> None:
        """Offers and hours into the volunteer's week, and work into their recent work: one write."""
        week = self.week(district)
        counts = await self.store.note_week(volunteer_id, week, offers, hours, **self.work(volunteer_id, work))
        self.remember(volunteer_id, week, counts)

    def work(self, volunteer_id: str, amount: float) -> dict[str, Any]:
        return {"work": amount, "half_life_days": self.rules.half_life_days,
                "known": self.roster.memory.work_of(volunteer_id)}

    def remember(self, volunteer_id: str, week: str, counts: Doc) -> None:
        self.roster.memory.set_week(volunteer_id, week, counts)
        if counts.get("recent_at") is not None:
            self.roster.memory.note_work(volunteer_id, counts["recent_work"], counts["recent_at"])

    # --- what other services tell us -----------------------------------------------------------------

    async def volunteer_registered(self, data: VolunteerRegistered, at: float) -> None:
        known = await self.store.volunteers_by_id([data.volunteer_id])
        if known and known[0].get("left") and at <= known[0].get("left_at", 0.0):
            return  # a registration from before the volunteer left must not bring them back; a later one does
        kept: Doc = {k: known[0][k] for k in ("recent_work", "recent_at", "stars_sum", "stars_n", "week", "week_offers",
                                         "week_hours") if known and k in known[0]}
        if not known:  # the week and recent work it starts with, so that its first offer is counted in one write
            kept = {"recent_work": 0.0, "recent_at": round(self.clock(), 3), "week": self.week(data.district),
                    "week_offers": 0, "week_hours": 0.0}
        await self.store.save_volunteer(
            {"_id": data.volunteer_id, "district": data.district, "grids": data.grids,
             "skills": data.skills, "capacity": data.capacity, "team": data.team,
             "attributes": data.attributes, "availability": [w.model_dump() for w in data.availability],
             "away": [p.model_dump(mode="json") for p in data.away], "updated": self.clock(), **kept}
        )
        await self.roster.changed(data.volunteer_id)

    async def request_created(self, event: Envelope[RequestCreated]) -> None:
        data = event.data
        now = self.clock()
        # Stored already taken for placing by this replica, as claim() would take it: the insert is the claim.
        # Repeats are recognised by the request id: the insert is a no-op and place() finds it taken.
        request: Doc = (
            {"_id": data.request_id, "district": data.district, "grid": data.grid, "service": data.service,
             "category": data.category, "urgency": data.urgency, "resident_ref": data.resident_ref,
             "needs": data.needs, "window_start": data.window_start.isoformat() if data.window_start else None,
             "window_end": data.window_end.isoformat() if data.window_end else None,
             "code": data.code, "description": data.description,
             "state": "placing", "round": 1, "lease": now + self.settings.lease, "tried": [], "why": {},
             "stage": 0, "stage_rounds": 0, "pairing_pending": True, "cause": event.id, "opened": now, "created": now}
        )
        if not await self.store.add_request(request):
            await self.place(data.request_id)
            return
        self.note_resident(request)
        async with self.holding(request):
            await self.choose_and_offer(request)

    async def request_cancelled(self, request_id: str) -> None:
        request = await self.store.request(request_id)
        if request is None:
            # Cancelled before its request.created reached us: a tombstone makes that event a no-op.
            await self.store.add_request({"_id": request_id, "state": "cancelled", "round": 0})
            return
        if request["state"] in {"cancelled", "completed", "closed"}:
            return
        if request["state"] == "placing":
            raise RuntimeError(f"request {request['_id']} is being placed; cancel it once that settles")
        if not await self.store.move_request(request["_id"], {"state": request["state"]}, state="cancelled"):
            raise RuntimeError(f"request {request['_id']} changed while cancelling; retrying")
        for assignment in await self.store.of_request(request["_id"]):
            if assignment["state"] in ("offered", "accepted"):
                await self.withdraw(assignment, "the request was cancelled", "resident")

    async def request_rated(self, data: RequestRated) -> None:
        reopens = handlers.reopens(data.stars, data.done)
        resident_ref = self.residents.get(data.request_id)
        # Read only to reopen it, or to learn whose it is when this replica did not see it made or completed.
        request = await self.store.request(data.request_id) or {} if reopens or resident_ref is None else {}
        if await self.store.note_rating(data.request_id, request.get("resident_ref", resident_ref or ""),
                                        data.volunteer_id, data.stars):
            self.roster.memory.note_rating(data.volunteer_id, data.stars)
        if request.get("state") == "completed" and reopens:
            # Setting the same marks again is a no-op, so a redelivered rating changes nothing.
            against = sorted({*request.get("reopened_against", []), data.volunteer_id})
            await self.store.move_request(request["_id"], {"state": "completed", "round": request["round"]},
                                          reopened=True, reopened_against=against)

    async def request_closed(self, request_id: str) -> None:
        request = await self.store.request(request_id)
        if request and request.get("state") == "completed":
            await self.store.move_request(request_id, {"state": "completed", "round": request["round"]},
                                          state="closed", reopened=False)

    async def volunteer_left(self, volunteer_id: str, at: float) -> None:
        """No new offers from now on, and the offers still waiting for an answer go to someone else."""
        await self.store.leave(volunteer_id, at)
        await self.roster.changed(volunteer_id)
        for assignment in await self.store.open_assignments(volunteer_id):
            if assignment["state"] == "offered":
                await self.withdraw(assignment, "the volunteer has left", "volunteer")
                await self.offer_ended(assignment, "left")

    async def pairing_created(self, data: PairingCreated) -> None:
        await self.store.save_pairing({"_id": data.pairing_id, "resident_ref": data.resident_ref,
                                       "volunteer_id": data.volunteer_id, "kind": data.kind,
                                       "district": data.district, "active": True})
        await self.roster.pairs_changed(data.resident_ref)  # every replica's memory ranks from pairings

    async def pairing_ended(self, pairing_id: str) -> None:
        if resident_ref := await self.store.end_pairing(pairing_id):
            await self.roster.pairs_changed(resident_ref)

    # --- whose district a call acts in, for the authorization checked before it ---------------------

    async def request_district(self, ref: str) -> str | None:
        request = await self.store.request_by_ref(ref)
        return request.get("district") if request else None

    # --- a volunteer's answers -----------------------------------------------------------------------

    async def assignment_of(self, ref: str, remembered_too: bool = False) -> Doc | None:
        """The assignment, read; or, `remembered_too`, an offer this replica made and has not seen answered
        (marked `remembered`): what never changes of it is true, its state may not be."""
        if remembered_too and (offer := self.offers.get(ref)) is not None:
            return {**offer, "remembered": True}
        return await self.store.assignment_by_ref(ref)

    async def respond(self, call: Respond, found: Doc | None) -> AssignmentReply:
        """The answer to the offer `found` (read by the caller, for the authorization, or remembered since it
        was made): the compare-and-sets decide."""
        store = self.store
        assignment = handlers.check_responder(found, call.volunteer_id)
        now = self.clock()
        if assignment.pop("remembered", False):
            self.forget_offer(assignment)
            if call.accept and assignment["expires"] > now and (accepted := await self.accept(assignment, True)):
                return accepted
            # Not taken unread (a decline, a lapse, or a request changed since): judged on the offer as it is.
            assignment = handlers.check_responder(await store.assignment(assignment["_id"]), call.volunteer_id)
        if assignment["state"] == "offered" and assignment["expires"] > now:
            if call.accept:
                return await self.accept(assignment)
            if await store.move_assignment(assignment["_id"], "offered", "declined", reason=call.reason):
                request = await store.request(assignment["request_id"]) or {}
                await self.outbox.send([handlers.declined(request, assignment, call.reason)])
                await self.offer_ended(assignment, f"declined: {call.reason}" if call.reason else "declined")
                return reply(assignment, "declined")
            assignment = await store.assignment(assignment["_id"]) or assignment
        handlers.refuse_response(assignment, call.accept, now)
        if call.accept and assignment["state"] == "accepted":  # a repeat: the first may have died before its event
            await self.outbox.send([handlers.accepted(await store.request(assignment["request_id"]) or {}, assignment)])
        return reply(assignment, assignment["state"])

    @overload
    async def accept(self, assignment: Doc) -> AssignmentReply: ...
    @overload
    async def accept(self, assignment: Doc, unread: bool) -> AssignmentReply | None: ...

    async def accept(self, assignment: Doc, unread: bool = False) -> AssignmentReply | None:
        """`unread`: the offer as this replica made it, its state unknown; None, having changed nothing, when
        the request does not take it unread."""
        store = self.store
        # The request is the arbiter: of several offers in one round, exactly one can take it.
        # `tidy` stays set until the acceptance is seen through, so the sweep finishes what a crash cut short.
        expect: Doc = {"state": "offered", "round": assignment["round"]}
        if unread:
            # Whatever ended the offer (a decline, a lapse, the volunteer leaving) noted why on the request.
            expect[f"why.{assignment['volunteer_id']}"] = {"$exists": False}
        request = await store.settle_request(
            assignment["request_id"], expect,
            state="assigned", assignment_id=assignment["_id"], tidy=True, tidy_at=self.clock(),
        )
        if request is None and unread:
            return None
        if request is None:  # read only to tell a repeat from a lost race
            request = await store.request(assignment["request_id"]) or {}
            if request.get("assignment_id") != assignment["_id"]:
                raise ApiError("taken", "another volunteer accepted this request first", {"state": request.get("state")})
        if accepted := await store.settle_assignment(assignment["_id"], "offered", "accepted"):
            assignment = accepted
        else:
            current = await store.assignment(assignment["_id"]) or assignment
            if current["state"] != "accepted":
                # It lapsed or was withdrawn in the same instant: give the request back to its round.
                await store.move_request(assignment["request_id"],
                                         {"state": "assigned", "assignment_id": assignment["_id"]},
                                         state="offered", tidy=False)
                await self.offer_ended(current, "did not answer in time")
                handlers.refuse_response(current, True, self.clock())
        await self.see_acceptance_through(request, assignment)
        return reply(assignment, "accepted")

    async def see_acceptance_through(self, request: Doc, assignment: Doc) -> None:
        """Withdraw the round's other offers, announce the acceptance, and clear the request's `tidy` mark."""
        listed = request.get("round_offers") or {}
        if listed.get("round") == assignment["round"]:
            # The request names its round's offers: each sibling is withdrawn by its own compare-and-set, unread.
            for sibling_id in listed.get("ids", []):
                if sibling_id != assignment["_id"]:
                    await self.withdraw_by_id(sibling_id, "offered", handlers.TAKEN, "matcher", request)
        else:  # a request placed before requests named their round's offers
            for sibling in await self.store.round_offers(assignment["request_id"], assignment["round"]):
                if sibling["_id"] != assignment["_id"] and sibling["state"] == "offered":
                    await self.withdraw(sibling, handlers.TAKEN, "matcher", request)
        await self.publish([handlers.accepted(request, assignment)])  # the request, still `tidy`, is its outbox
        self.tidied.append((request["_id"], assignment["_id"]))

    async def complete(self, call: Complete, found: Doc | None = None) -> AssignmentReply:
        """The work done on the assignment: `found` as the caller read it for the authorization, or None when
        it had no need to. Unread, the completion's compare-and-set goes first, by the id and the volunteer;
        the assignment is read only when that did not match: a code, a repeat or a refusal."""
        store = self.store
        # The completed assignment is the outbox entry of its events: `announced` until they are published.
        changes: Doc = {"hours": str(call.hours), "note": call.note, "completed_at": self.clock(), "announced": False}
        done = None
        if found is None:
            done = await store.settle_assignment(call.assignment_id, "accepted", "completed", call.volunteer_id,
                                                 **changes)
        if done is None:
            assignment = handlers.check_responder(found or await store.assignment_by_ref(call.assignment_id),
                                                  call.volunteer_id)
            done = await store.settle_assignment(assignment["_id"], "accepted", "completed", **changes)
        first = done is not None
        if done is None:  # read only to tell a repeat, seen through again below, from a refusal
            assignment = await store.assignment(assignment["_id"]) or assignment
            handlers.refuse_completion(assignment, call.hours)
        else:
            assignment = done
        await self.roster.release(assignment["_id"], assignment.get("slot"))
        request = (await store.settle_request(assignment["request_id"], {"state": "assigned"}, state="completed")
                   or await store.request(assignment["request_id"]) or {"_id": assignment["request_id"]})
        await self.publish(handlers.completed(request, assignment))
        self.told.append(assignment["_id"])
        self.note_resident(request)
        if first:
            await self.note_week(assignment["volunteer_id"], assignment["district"], hours=float(call.hours),
                                 work=float(call.hours))
        return reply(assignment, "completed")

    # --- what people ask -----------------------------------------------------------------------------

    async def assignments(self, call: AssignmentsQuery) -> Assignments:
        if not await self.store.volunteers_by_id([call.volunteer_id]):
            raise ApiError("not_found", "the matcher has no volunteer with this id", {"volunteer_id": call.volunteer_id})
        rows = await (self.store.past_assignments(call.volunteer_id, call.limit) if call.past
                      else self.store.open_assignments(call.volunteer_id))
        return Assignments(
            volunteer_id=call.volunteer_id,
            assignments=[
                AssignmentView(
                    assignment_id=a["_id"], request_id=a["request_id"], status=a["state"], service=a["service"],
                    grid=a["grid"], urgency=a["urgency"], expires_at=datetime.fromtimestamp(a["expires"], UTC),
                    code=a.get("code", ""), request_code=a.get("request_code", ""), district=a["district"],
                    place=a.get("place", ""), description=a.get("description", ""), **handlers.window(a),
                    hours=Decimal(a["hours"]) if a.get("hours") is not None else None,
                )
                for a in rows
            ],
        )

    async def volunteers(self, call: VolunteersQuery) -> VolunteerList:
        page, more = await self.store.listed(call.district, call.grid, call.skill, call.team, call.cursor, call.limit)
        loads = await self.store.loads(page)
        weeks = await self.store.weeks_in(page, self.week(call.district))
        return VolunteerList(
            items=[handlers.volunteer_load(v, loads[v["_id"]], weeks.get(v["_id"], {})) for v in page],
            next_cursor=page[-1]["_id"] if more and page else "",
        )

    async def explain(self, call: ExplainQuery) -> Explanation:
        request = await self.store.request_by_ref(call.request_id)
        if request is None or "urgency" not in request:
            raise ApiError("not_found", "the matcher has no request with this id", {"request_id": call.request_id})
        offers = [
            {"assignment_id": a["_id"], "code": a.get("code", ""), "volunteer_id": a["volunteer_id"],
             "state": a["state"], "stage": a.get("stage"), "round": a["round"], "by": a.get("by", "matcher"),
             "explanation": a.get("explanation", {})}
            for a in await self.store.of_request(request["_id"])
        ]
        actions = [{k: v for k, v in a.items() if k != "_id"} for a in await self.store.actions_on(request["_id"])]
        return Explanation(
            request_id=request["_id"], code=request.get("code", ""), district=request["district"], state=request["state"],
            urgency=request["urgency"], offers=offers, reopened=bool(request.get("reopened")),
            fell_out=[{"volunteer_id": v, "why": w} for v, w in sorted(request.get("why", {}).items())],
            not_considered=request.get("not_considered", {}), operator_actions=actions,
        )

    # --- operators -----------------------------------------------------------------------------------

    async def operable(self, ref: str, reopened_too: bool = False) -> Doc:
        request = await self.store.request_by_ref(ref)
        if request is None or "urgency" not in request:
            raise ApiError("not_found", "the matcher has no request with this id", {"request_id": ref})
        if reopened_too and request["state"] == "completed" and request.get("reopened"):
            return request
        if request["state"] in ("completed", "cancelled", "closed", "placing"):
            raise ApiError("not_changeable", handlers.not_changeable(request["state"], reopened_too),
                           {"state": request["state"]})
        return request

    async def check_volunteer(self, request: Doc, volunteer_id: str) -> None:
        """Every refusal of a named volunteer, decided before anything is written."""
        found = await self.store.volunteers_by_id([volunteer_id])
        volunteer = found[0] if found else None
        held_here = [a["_id"] for a in await self.store.of_request(request["_id"])
                     if a["volunteer_id"] == volunteer_id and a["state"] in ("offered", "accepted")]
        free = (await self.store.free_slots(found)).get(volunteer_id, 0) if volunteer else 0
        handlers.check_named_volunteer(volunteer, request["district"], free + len(held_here))

    async def take_for_operator(self, request: Doc, operator: str, reason: str, action: str) -> Doc:
        store = self.store
        taken = await store.take(request, self.clock() + self.settings.lease)
        if taken is None:
            raise ApiError("conflict", "the request changed while you were acting on it; look again and retry")
        await store.record_action({"_id": f"{request['_id']}:{taken['round']}", "request_id": request["_id"],
                                   "action": action, "operator": operator, "reason": reason, "at": self.clock()})
        for assignment in await store.of_request(request["_id"]):
            if assignment["state"] in ("offered", "accepted"):
                await store.note_why(request["_id"], assignment["volunteer_id"], f"{action} by {operator}: {reason}")
                await self.withdraw(assignment, f"{action} by {operator}: {reason}", operator)
        return taken

    async def hand_to(self, request: Doc, volunteer_id: str, operator: str, reason: str,
                      confirmed: bool) -> AssignmentReply:
        store = self.store
        assignment_id = handlers.assignment_id_for(request["_id"], request["round"])
        if not (slot := await self.roster.reserve(volunteer_id, assignment_id)):
            # Only a placement racing ours since check_volunteer gets here: match the request again.
            await store.move_request(request["_id"], {"state": "placing", "round": request["round"]},
                                     state="open", opened=self.clock())
            raise ApiError("at_capacity", "this volunteer has no free capacity; the request is matched again",
                           {"volunteer_id": volunteer_id})
        # An operator's choice is not limited.
        await self.note_week(volunteer_id, request["district"], offers=1, work=OFFERED_WORK)
        stage = scoring.Stage("operator", scoring.TIERS)
        named = await store.volunteers_by_id([volunteer_id])
        tier = self.places.tier(request["district"], request["grid"], named[0]["grids"] if named else [])
        explanation = {"volunteer_id": volunteer_id, "stage": "operator", "operator": operator, "reason": reason,
                       "tier": tier}
        progress = {k: request.get(k) for k in ("stage", "stage_rounds", "pairing_pending")}
        code = await self.offer(request, stage, [(assignment_id, explanation, slot)], progress, {}, by=operator,
                                accepted=confirmed)
        return AssignmentReply(assignment_id=assignment_id, request_id=request["_id"],
                               status="accepted" if confirmed else "offered", code=code)

    async def assign(self, call: OperatorAssign) -> AssignmentReply:
        request = await self.operable(call.request_id)
        await self.check_volunteer(request, call.volunteer_id)
        taken = await self.take_for_operator(request, call.operator, call.reason, "assigned by hand")
        async with self.holding(taken):
            return await self.hand_to(taken, call.volunteer_id, call.operator, call.reason, call.confirmed)

    async def reassign(self, call: OperatorReassign) -> AssignmentReply:
        request = await self.operable(call.request_id, reopened_too=True)
        if call.volunteer_id:
            await self.check_volunteer(request, call.volunteer_id)
        if request["state"] == "completed":
            return await self.redispatch(request, call)
        taken = await self.take_for_operator(request, call.operator, call.reason, "reassigned")
        if call.volunteer_id:
            async with self.holding(taken):
                return await self.hand_to(taken, call.volunteer_id, call.operator, call.reason, False)
        tried = sorted({*taken.get("tried", []), *taken.get("why", {}).keys()})
        await self.store.move_request(taken["_id"], {"state": "placing", "round": taken["round"]},
                                      state="open", tried=tried, opened=self.clock())
        return await self.match_again(taken)

    async def match_again(self, taken: Doc) -> AssignmentReply:
        """Place the request now and say what came of it: the first new offer, or that it waits for an operator."""
        await self.place(taken["_id"])
        latest = (await self.store.request(taken["_id"])) or taken
        offers = [a for a in await self.store.round_offers(taken["_id"], latest["round"]) if a["state"] == "offered"]
        if latest["state"] == "offered" and offers:
            return reply(offers[0], "offered")
        return AssignmentReply(assignment_id="", request_id=taken["_id"], status="withdrawn")

    async def redispatch(self, request: Doc, call: OperatorReassign) -> AssignmentReply:
        """A reopened request goes out again: the stages from the start, without whom it was reopened against."""
        excluded = [v for v in request.get("reopened_against", []) if v != call.volunteer_id]
        round_ = request["round"] + 1
        redispatch = {"operator": call.operator, "reason": call.reason, "excluded": excluded,
                      "volunteer_id": call.volunteer_id, "round": round_, "announced": False}
        # The request remembers the re-dispatch in the write that takes it, so a crash before the event is
        # sent leaves it for the sweep to send before anything else happens to the request.
        taken = await self.store.take(request, self.clock() + self.settings.lease, reopened=False, tried=excluded,
                                      stage=0, stage_rounds=0, pairing_pending=True, redispatch=redispatch)
        if taken is None:
            raise ApiError("conflict", "the request changed while you were acting on it; look again and retry")
        await self.store.record_action({"_id": f"{request['_id']}:{round_}", "request_id": request["_id"],
                                        "action": "re-dispatched", "operator": call.operator, "reason": call.reason,
                                        "at": self.clock()})
        await self.announce_redispatch(taken)
        if call.volunteer_id:
            async with self.holding(taken):
                return await self.hand_to(taken, call.volunteer_id, call.operator, call.reason, False)
        await self.store.move_request(taken["_id"], {"state": "placing", "round": round_}, state="open",
                                      opened=self.clock())
        return await self.match_again(taken)

    async def announce_redispatch(self, request: Doc) -> None:
        redispatch = request.get("redispatch") or {}
        if redispatch and not redispatch.get("announced"):
            await self.outbox.send([handlers.redispatched(request, redispatch)])
            await self.store.move_request(request["_id"], {"redispatch.round": redispatch["round"]},
                                          **{"redispatch.announced": True})

    # --- timers that survive restarts ----------------------------------------------------------------

    async def sweep(self) -> None:
        """Every replica sweeps, and compare-and-set lets one act."""
        store = self.store
        await self.clear_flags()  # first: what this replica published is not published again
        for assignment in await store.lapsed_offers():
            if await store.move_assignment(assignment["_id"], "offered", "expired"):
                log.info("offer %s to %s lapsed", assignment["_id"], assignment["volunteer_id"])
                request = await store.request(assignment["request_id"]) or {}
                await self.outbox.send([handlers.expired(request, assignment)])
                await self.offer_ended(assignment, "did not answer in time")
        for request in await store.untidy(older_than=TIDY_GRACE):
            await self.finish_acceptance(request)
        now = self.clock()
        for request in await store.stale_placements(now):
            # Its placer stopped renewing the lease: it died. Taking the request back first makes a placer
            # that was only slow fail its own compare-and-set, so nothing it reserved is ever announced.
            placing = {"state": "placing", "round": request["round"], "lease": {"$lt": now}}
            if not await store.move_request(request["_id"], placing, state="open", opened=now):
                continue
            log.warning("request %s was left mid-placement; placing it again", request["_id"])
            await self.announce_redispatch(request)  # before any new offer of a re-dispatch a crash cut short
            for assignment in await store.round_offers(request["_id"], request["round"]):
                await store.move_assignment(assignment["_id"], assignment["state"], "withdrawn",
                                            reason="placing replica died")
            await self.roster.release_all(
                [handlers.assignment_id_for(request["_id"], request["round"], i) for i in range(MAX_OFFERS_PER_ROUND)]
            )
            await self.place(request["_id"])
        for request in await store.waiting(older_than=max(2 * self.settings.sweep_interval, 2.0)):
            await self.place(request["_id"])
        for request in await store.unannounced_unmatched(older_than=5.0):
            await self.announce_unmatched(request["_id"])
        # Soon enough that an offer a placer stored but died before sending goes out within 5 s of the kill;
        # one sent twice has the same event id, and JetStream drops the repeat.
        for assignment in await store.unannounced_offers(older_than=3.0):
            request = await store.request(assignment["request_id"]) or {}
            if request.get("state") == "placing" and request.get("round") == assignment["round"]:
                continue  # its placer may still be alive; if not, the lease repair above withdraws it
            if assignment["state"] == "completed":  # a completion a crash cut short of its events
                if assignment.get("completed_at", 0.0) > self.clock() - 5.0:
                    continue  # its completer may still be publishing them
                await self.publish(handlers.completed(request, assignment))
            elif request.get("round") == assignment["round"] and assignment["state"] in ("offered", "accepted"):
                await self.outbox.send([handlers.offered(request, assignment)])
            await store.mark_announced(assignment["_id"])

    async def finish_acceptance(self, request: Doc) -> None:
        """An acceptance a crash cut short: the volunteer's yes won the request, so see it through."""
        store = self.store
        assignment = await store.assignment(request.get("assignment_id") or "")
        if assignment is None or request.get("state") not in ("assigned", "completed"):
            await store.move_request(request["_id"], {"tidy": True}, tidy=False)  # cancelled or taken back since
            return
        if assignment["state"] == "offered" and request["state"] == "assigned":
            await store.move_assignment(assignment["_id"], "offered", "accepted")
            assignment = await store.assignment(assignment["_id"]) or assignment
        if assignment["state"] in ("accepted", "completed"):
            log.warning("request %s: seeing an interrupted acceptance through", request["_id"])
            await self.see_acceptance_through(request, assignment)
        elif await store.move_request(request["_id"], {"state": "assigned", "assignment_id": assignment["_id"]},
                                      state="offered", tidy=False):
            await self.offer_ended(assignment, "did not answer in time")  # the offer lapsed before the yes
        else:
            await store.move_request(request["_id"], {"tidy": True}, tidy=False)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed; trying again")
            await asyncio.sleep(self.settings.sweep_interval)


def reply(assignment: Doc, status: str) -> AssignmentReply:
    return AssignmentReply(assignment_id=assignment["_id"], request_id=assignment["request_id"], status=status,
                           code=assignment.get("code", ""))
