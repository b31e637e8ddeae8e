"""Care's steps: plans, check-ins, contacts and the watchdog. Each step is idempotent and every timer lives in
the database, so a retry, a restart or another replica may repeat any of them and change nothing more."""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from contracts import API, ApiError, Envelope, new_event
from contracts.care import (
    AssignCover,
    CarePlan,
    CarePlanChanged,
    ChangePlan,
    CheckIn,
    CheckInReply,
    ContactLogged,
    ContactOverdue,
    CreatePlan,
    DutyMissed,
    DutySpec,
    EndPlan,
    Escalated,
    EscalationStopped,
    LogContact,
    Member,
    QuietPairing,
    Reader,
    ReportQuery,
    SafeguardQueue,
)
from contracts.envelope import derived_id
from services.care import handlers
from services.care.access import may_record_for
from services.care.config import CareSettings
from services.care.handlers import LIVE, Doc
from services.care.store import CareStore
from services.common import auth
from services.common.auth import Actor
from services.common.bus import Outbox
from services.common.places import Places

log = logging.getLogger("linli.care")
SOURCE = "linli/care"
AskIntake = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def fingerprint(call: BaseModel) -> str:
    return hashlib.sha256(call.model_dump_json(exclude={"reader"}).encode()).hexdigest()


def not_found(what: str, **details: Any) -> ApiError:
    return ApiError("not_found", f"no {what} with this id", details)


def forbidden() -> ApiError:
    return ApiError("forbidden", "only the care group, the director and operators of the plan's district may do this")


class Care:
    def __init__(self, store: CareStore, outbox: Outbox, settings: CareSettings, places: Places, clock: Clock,
                 ask_intake: AskIntake) -> None:
        self.store, self.outbox, self.settings, self.places = store, outbox, settings, places
        self.clock, self.ask_intake = clock, ask_intake
        # Up to which bucket this replica's passes have read: the stored cursor is read by the first pass only,
        # and is behind this one at most by what another replica read too (read again, which changes nothing).
        self.cursor: str | None = None

    async def start(self) -> None:
        await self.store.ensure_indexes()
        # Set before any plan can be made here, so no timer lies behind it; a restart keeps the stored one.
        await self.store.first_cursor(handlers.bucket(self.clock.now(), self.settings.bucket_seconds))

    def key(self, at: datetime, now: datetime) -> str:
        # Never a bucket the cursor has passed: a timer already due is read by the next pass.
        size = self.settings.bucket_seconds
        return max(handlers.bucket(at, size), handlers.bucket(now, size))

    def event(self, data: BaseModel, plan: Doc, event_id: str, now: datetime) -> Envelope[Any]:
        return new_event(data, source=SOURCE, district=plan["district"], subject=plan["_id"],
                         correlationid=plan["_id"], event_id=event_id, time=now)

    # --- plans ------------------------------------------------------------------------------------------

    async def create_plan(self, call: CreatePlan) -> CarePlan:
        if not handlers.may_change(call.district, call.reader):
            raise forbidden()
        if problems := self.places.problems(call.district, [call.grid]):
            raise ApiError("unknown_place", "unknown district or grid", problems)
        if (community := self.places.community_of(call.district, call.grid)) and community != call.community:
            raise ApiError("unknown_place", "the grid is not in this community",
                           [{"field": "community", "problem": f"grid {call.grid} is in {community}",
                             "choices": [community]}])
        handlers.check_group(call.group, call.duties)
        plan_id = "cp-" + derived_id("care-plan", call.idempotency_key)
        if existing := await self.store.plan(plan_id):
            if existing["fingerprint"] != fingerprint(call):
                raise ApiError("idempotency_key_reused", "this idempotency key was used for another plan")
            duties = [DutySpec.model_validate(d) for d in existing["duties"]]
            await self.schedule(existing, duties, existing["created_at"])
            return view(existing)
        now = self.clock.now()
        plan: Doc = {
            "_id": plan_id, "idempotency_key": call.idempotency_key, "fingerprint": fingerprint(call),
            "district": call.district, "community": call.community, "grid": call.grid,
            "resident_ref": handlers.resident_ref(call.district, call.resident_name, call.resident_phone),
            "resident_name": call.resident_name, "resident_phone": call.resident_phone, "address": call.address,
            "resident_kind": call.resident_kind, "health_notes": call.health_notes, "medicines": call.medicines,
            "family_phones": call.family_phones, "group": [m.model_dump() for m in call.group],
            "duties": [d.model_dump(mode="json") for d in call.duties], "covers": [], "active": True,
            "created_at": now, "history": [change(now, call.reader, "created", call.reason)],
        }
        if await self.store.add_plan(plan):
            await self.outbox.send([self.changed(plan, "created", call.reader, now)])
        await self.schedule(plan, call.duties, now)
        return view(plan)

    async def schedule(self, plan: Doc, duties: Sequence[DutySpec], since: datetime) -> None:
        """The first deadline of each duty from `since` on; a child's plan also gets its quiet alert."""
        now = self.clock.now()
        zone = self.places.zone(plan["district"])
        for duty in duties:
            if due := handlers.next_due(duty, max(since, now), zone):
                await self.store.add_occurrence(self.occurrence(plan, duty, due, since, now))
        if plan["resident_kind"] == "child" and await self.store.pairing(plan["_id"]) is None:
            await self.store.put_pairing(self.pairing(plan, plan["created_at"], now))

    def occurrence(self, plan: Doc, duty: DutySpec, due: datetime, since: datetime, now: datetime) -> Doc:
        first = handlers.step_at(due, 1, self.settings.graces)
        return {
            "_id": handlers.occurrence_id(plan["_id"], duty, due), "plan_id": plan["_id"], "duty_id": duty.duty_id,
            "plan_duty": f"{plan['_id']}:{duty.duty_id}", "spec": handlers.spec_key(duty),
            # Equality keys: the live deadlines of a duty (emptied once it is settled), and the report's month.
            "live": f"{plan['_id']}:{duty.duty_id}",
            "month": f"{plan['community']}:{due.astimezone(self.places.zone(plan['district'])):%Y-%m}",
            "district": plan["district"], "community": plan["community"], "holder": duty.holder,
            "due_at": due, "opens_at": handlers.opens_at(duty, due, since), "state": "open", "step": 0,
            "alert": "missed", "chain_from": due, "next_at": first, "next_key": self.key(first, now),
        }

    def pairing(self, plan: Doc, last: datetime, now: datetime) -> Doc:
        alert_at = last + timedelta(days=self.settings.quiet_days)
        return {"_id": plan["_id"], "district": plan["district"], "resident_ref": plan["resident_ref"],
                "active": True, "last_contact": None, "since": last, "alert_at": alert_at,
                "alert_key": self.key(alert_at, now), "alerted": False, "queue": "",
                "version": 0}  # the compare-and-set of a contact and of the alert

    def changed(self, plan: Doc, action: str, reader: Reader, now: datetime) -> Envelope[Any]:
        data = CarePlanChanged(plan_id=plan["_id"], district=plan["district"], community=plan["community"],
                               resident_ref=plan["resident_ref"], action=action, by=reader.person_id)
        return self.event(data, plan, derived_id("care-plan-changed", plan["_id"], action, now.isoformat()), now)

    async def readable(self, plan_id: str, reader: Reader) -> Doc:
        plan = await self.store.plan(plan_id)
        if plan is None:
            raise not_found("care plan", plan_id=plan_id)
        if not handlers.may_read(plan, reader):
            raise forbidden()
        return plan

    async def plan(self, plan_id: str, reader: Reader) -> CarePlan:
        return view(await self.readable(plan_id, reader))

    async def changeable(self, plan_id: str, reader: Reader) -> Doc:
        plan = await self.store.plan(plan_id)
        if plan is None:
            raise not_found("care plan", plan_id=plan_id)
        if not handlers.may_change(plan["district"], reader):
            raise forbidden()
        if not plan["active"]:
            raise ApiError("plan_ended", "this care plan has ended", {"plan_id": plan_id})
        return plan

    async def change_plan(self, call: ChangePlan) -> CarePlan:
        plan = await self.changeable(call.plan_id, call.reader)
        group = call.group if call.group is not None else [Member.model_validate(m) for m in plan["group"]]
        duties = call.duties if call.duties is not None else [DutySpec.model_validate(d) for d in plan["duties"]]
        handlers.check_group(group, duties)
        now = self.clock.now()
        changes: Doc = {"group": [m.model_dump() for m in group], "duties": [d.model_dump(mode="json") for d in duties]}
        for name in ("health_notes", "medicines", "family_phones"):
            if (value := getattr(call, name)) is not None:
                changes[name] = value
        kept = {handlers.spec_key(d) for d in duties}
        live = await self.store.plan_occurrences(plan)  # of the duties as they were, removed ones too
        plan = {**plan, **changes, "history": [*plan["history"], change(now, call.reader, "changed", call.reason)]}
        await self.store.save_plan(plan)
        # A duty whose rhythm, deadline or holder changed starts again from now; its old deadlines end.
        for occurrence in live:
            if occurrence["state"] in LIVE and occurrence["spec"] not in kept:
                await self.end_occurrence(occurrence)
        await self.schedule(plan, duties, now)
        await self.outbox.send([self.changed(plan, "changed", call.reader, now)])
        return view(plan)

    async def end_plan(self, call: EndPlan) -> CarePlan:
        plan = await self.changeable(call.plan_id, call.reader)
        now = self.clock.now()
        plan = {**plan, "active": False, "history": [*plan["history"], change(now, call.reader, "ended", call.reason)]}
        await self.store.save_plan(plan)
        for occurrence in await self.store.plan_occurrences(plan):
            if occurrence["state"] in LIVE:
                await self.end_occurrence(occurrence)
        await self.store.end_pairing(plan["_id"])
        await self.outbox.send([self.changed(plan, "ended", call.reader, now)])
        return view(plan)

    async def end_occurrence(self, occurrence: Doc) -> None:
        for _ in range(5):
            if await self.store.compare_and_set(occurrence, {"state": "ended", "next_key": "", "live": ""}):
                return
            occurrence = await self.store.occurrences.find_one({"_id": occurrence["_id"]}) or occurrence
            if occurrence["state"] not in LIVE:
                return

    async def assign_cover(self, call: AssignCover) -> CarePlan:
        plan = await self.changeable(call.plan_id, call.reader)
        if call.for_person not in {m["person_id"] for m in plan["group"]}:
            raise ApiError("not_in_group", "cover is assigned for someone in the care group",
                           {"for_person": call.for_person})
        now = self.clock.now()
        cover = {"person_id": call.cover.person_id, "name": call.cover.name, "phone": call.cover.phone,
                 "for_person": call.for_person, "start": call.start.isoformat(), "end": call.end.isoformat(),
                 "by": call.reader.person_id, "reason": call.reason}
        covers = [*plan.get("covers", []), cover]
        plan = {**plan, "covers": covers, "history": [*plan["history"], change(now, call.reader, "cover", call.reason)]}
        await self.store.save_plan(plan)
        await self.outbox.send([self.changed(plan, "cover", call.reader, now)])
        return view(plan)

    # --- check-ins ----------------------------------------------------------------------------------------

    async def check_in(self, call: CheckIn, actor: Actor = auth.OPEN) -> CheckInReply:
        plan = await self.store.plan(call.plan_id)
        if plan is None:
            raise not_found("care plan", plan_id=call.plan_id)
        may_record_for(actor, call.by, plan["district"])
        duty = next((DutySpec.model_validate(d) for d in plan["duties"] if d["duty_id"] == call.duty_id), None)
        if duty is None:
            raise not_found("duty", plan_id=call.plan_id, duty_id=call.duty_id)
        if call.by not in handlers.members(plan):
            raise ApiError("not_in_group", "only someone in the care group may check in", {"by": call.by})
        checkin_id = "ci-" + derived_id("care-checkin", call.idempotency_key)
        if found := await self.store.checkin(checkin_id):
            if found["fingerprint"] != fingerprint(call):
                raise ApiError("idempotency_key_reused", "this idempotency key was used for another check-in")
            return await self.settle(plan, duty, found)
        if not plan["active"]:
            raise ApiError("plan_ended", "this care plan has ended", {"plan_id": plan["_id"]})
        now = self.clock.now()
        at = call.at or now
        if at > now + timedelta(minutes=5):
            raise ApiError("invalid_request", "a check-in cannot be in the future",
                           [{"field": "at", "problem": "later than now"}])
        occurrence = handlers.answered(await self.store.duty_occurrences(plan["_id"], duty.duty_id), at)
        checkin: Doc = {
            "_id": checkin_id, "fingerprint": fingerprint(call), "plan_id": plan["_id"], "duty_id": duty.duty_id,
            "by": call.by, "mode": call.mode, "outcome": call.outcome, "at": at, "note": call.note,
            "occurrence_id": occurrence["_id"] if occurrence else None,
            "due_at": occurrence["due_at"] if occurrence else None, "recorded_at": now,
        }
        if handlers.raises_request(call.outcome):
            checkin["pending"] = True
        await self.store.add_checkin(checkin)
        if handlers.is_contact(call.mode, call.outcome):
            await self.store.add_contact({"_id": checkin_id, "plan_id": plan["_id"], "by": call.by, "at": at,
                                          "where": call.mode, "what": call.outcome})
            alert_at = at + timedelta(days=self.settings.quiet_days)
            await self.store.contacted(plan["_id"], at, alert_at, self.key(alert_at, now))
        return await self.settle(plan, duty, checkin)

    async def settle(self, plan: Doc, duty: DutySpec, checkin: Doc) -> CheckInReply:
        """Brings the deadline a stored check-in answered to what it says; a repeat finds it already there."""
        now = self.clock.now()
        stopped = started = False
        occurrence = await self.store.occurrences.find_one({"_id": checkin["occurrence_id"]}) \
            if checkin["occurrence_id"] else None
        for _ in range(5):
            if occurrence is None or occurrence["state"] not in LIVE:
                break
            if handlers.starts_escalation(checkin["mode"], checkin["outcome"]):
                if occurrence["state"] == "open":
                    started = await self.advance({**occurrence, "alert": "not_home", "chain_from": checkin["at"]}, now)
                break
            if checkin["outcome"] == "not_home":
                break  # a call nobody answered: the deadline still waits for someone to reach the person
            await self.next_deadline(plan, duty, occurrence["due_at"], now)
            escalating = occurrence["state"] == "escalating"
            changes = {"state": "stopped" if escalating else "done", "checked_at": checkin["at"],
                       "checked_by": checkin["by"], "next_key": "", "live": ""}
            if await self.store.compare_and_set(occurrence, changes):
                stopped = escalating
                if stopped:
                    data = EscalationStopped(plan_id=plan["_id"], duty_id=duty.duty_id, district=plan["district"],
                                             resident_ref=plan["resident_ref"], due_at=occurrence["due_at"],
                                             step=occurrence["step"], by=checkin["by"])
                    await self.outbox.send([self.event(data, plan, derived_id("care-stopped", occurrence["_id"]), now)])
                break
            occurrence = await self.store.occurrences.find_one({"_id": occurrence["_id"]})
        if checkin.get("pending"):
            checkin = await self.raise_request(plan, checkin)
        due = checkin["due_at"]
        return CheckInReply(checkin_id=checkin["_id"], duty_id=checkin["duty_id"], due_at=due,
                            on_time=None if due is None else checkin["at"] <= due, stopped_escalation=stopped,
                            escalation_started=started, request_id=checkin.get("request_id"))

    async def raise_request(self, plan: Doc, checkin: Doc) -> Doc:
        """An urgent request through intake, as any kiosk would place it; keyed on the check-in."""
        try:
            reply = await self.ask_intake(API.INTAKE_SUBMIT, {
                "idempotency_key": f"care-{checkin['_id']}", "district": plan["district"], "grid": plan["grid"],
                "service": self.settings.urgent_service, "urgency": "urgent", "channel": "operator",
                "description": handlers.URGENT_WORDS[checkin["outcome"]],
                "resident": {"name": plan["resident_name"], "phone": plan["resident_phone"],
                             "address": plan["address"]},
            })
        except Exception as exc:  # stored as pending: the watchdog's next pass asks again
            log.warning("intake did not answer for the urgent request of check-in %s: %r", checkin["_id"], exc)
            return checkin
        if request_id := reply.get("request_id"):
            await self.store.request_raised(checkin["_id"], str(request_id))
            return {**checkin, "request_id": request_id, "pending": False}
        log.warning("intake did not take the urgent request of check-in %s: %s", checkin["_id"], reply)
        return checkin

    async def request_done(self, request_id: str, at: datetime) -> None:
        await self.store.request_done(request_id, at)

    async def next_deadline(self, plan: Doc, duty: DutySpec, after: datetime, now: datetime) -> None:
        if plan["active"] and (due := handlers.next_due(duty, after, self.places.zone(plan["district"]))):
            await self.store.add_occurrence(self.occurrence(plan, duty, due, after, now))

    # --- contacts with children ---------------------------------------------------------------------------

    async def log_contact(self, call: LogContact, actor: Actor = auth.OPEN) -> ContactLogged:
        plan = await self.store.plan(call.plan_id)
        if plan is None:
            raise not_found("care plan", plan_id=call.plan_id)
        may_record_for(actor, call.by, plan["district"])
        if call.by not in handlers.members(plan):
            raise ApiError("not_in_group", "only someone in the care group may log a contact", {"by": call.by})
        contact_id = "cc-" + derived_id("care-contact", call.idempotency_key)
        if found := await self.store.contact(contact_id):
            if found["fingerprint"] != fingerprint(call):
                raise ApiError("idempotency_key_reused", "this idempotency key was used for another contact")
            return ContactLogged(contact_id=contact_id, plan_id=plan["_id"], at=found["at"])
        if not plan["active"]:
            raise ApiError("plan_ended", "this care plan has ended", {"plan_id": plan["_id"]})
        now = self.clock.now()
        at = call.at or now
        if at > now + timedelta(minutes=5):
            raise ApiError("invalid_request", "a contact cannot be in the future",
                           [{"field": "at", "problem": "later than now"}])
        await self.store.add_contact({"_id": contact_id, "fingerprint": fingerprint(call), "plan_id": plan["_id"],
                                      "by": call.by, "at": at, "where": call.where, "what": call.what})
        alert_at = at + timedelta(days=self.settings.quiet_days)
        await self.store.contacted(plan["_id"], at, alert_at, self.key(alert_at, now))
        return ContactLogged(contact_id=contact_id, plan_id=plan["_id"], at=at)

    async def safeguard_queue(self, reader: Reader, limit: int) -> SafeguardQueue:
        if reader.role not in ("director", "operator"):
            raise forbidden()
        now = self.clock.now()
        items = []
        for pairing in await self.store.queue(reader.district):
            plan = await self.store.plan(pairing["_id"]) or {"group": []}
            last = pairing["last_contact"]
            items.append(QuietPairing(
                plan_id=pairing["_id"], resident_ref=pairing["resident_ref"],
                caring_parent=handlers.role_of(plan, "caring_parent") or "",
                last_contact=last, days=(now - (last or pairing["since"])).days))
        return SafeguardQueue(items=sorted(items, key=lambda i: -i.days)[:limit])

    # --- the watchdog -------------------------------------------------------------------------------------

    async def watch_once(self) -> int:
        """One pass: every timer whose bucket came since the last pass, read by equality. Returns steps taken."""
        now = self.clock.now()
        size = self.settings.bucket_seconds
        cursor = self.cursor or await self.store.cursor()
        taken = 0
        # Deadlines of one bucket are taken side by side: each waits on the database and the stream, not the CPU.
        limit = asyncio.Semaphore(self.settings.pass_concurrency)
        for key in handlers.buckets(cursor or handlers.bucket(now, size), now, size):
            due = [o for o in await self.store.timers(key)
                   if o["state"] in LIVE and o["next_at"] and o["next_at"] <= now]
            taken += sum(await asyncio.gather(*(self.advance_within(limit, o, now) for o in due)))
            for pairing in await self.store.quiet_timers(key):
                if pairing["active"] and not pairing["alerted"] and pairing["alert_at"] <= now:
                    taken += await self.quiet(pairing, now)
        reached = handlers.bucket(now, size)
        if cursor is None or reached > cursor:
            await self.store.advance_cursor(reached)  # once a bucket, not once a pass
        self.cursor = max(cursor or reached, reached)
        for occurrence in await self.store.unsent():
            # Wall-clock time: whether the replica that took the step has had time to publish it itself.
            if time.time() - occurrence.get("unsent_at", 0.0) >= self.settings.resend_after:
                await self.send(occurrence["_id"], [Envelope[Any].model_validate(e) for e in occurrence["outgoing"]])
        for checkin in await self.store.pending_requests():
            if plan := await self.store.plan(checkin["plan_id"]):
                await self.raise_request(plan, checkin)
        return taken

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_interval)
            try:
                await self.watch_once()
            except Exception as exc:  # the next pass reads the same buckets again
                log.warning("care watchdog pass failed, will retry: %r", exc)

    async def advance_within(self, limit: asyncio.Semaphore, occurrence: Doc, now: datetime) -> bool:
        async with limit:
            return await self.advance(occurrence, now)

    async def advance(self, occurrence: Doc, now: datetime) -> bool:
        """Takes the next escalation step of one deadline, once, whichever replica gets there first."""
        plan = await self.store.plan(occurrence["plan_id"])
        duty = next((DutySpec.model_validate(d) for d in (plan or {}).get("duties", [])
                     if d["duty_id"] == occurrence["duty_id"]), None)
        if plan is None or not plan["active"] or duty is None or handlers.spec_key(duty) != occurrence["spec"]:
            await self.end_occurrence(occurrence)
            return False
        if occurrence["step"] == 0:
            await self.next_deadline(plan, duty, occurrence["due_at"], now)
        step = handlers.next_step(occurrence, self.settings.graces)
        due_day = occurrence["due_at"].astimezone(self.places.zone(plan["district"])).date()
        about = {"plan_id": plan["_id"], "duty_id": duty.duty_id, "duty_kind": duty.kind, "district": plan["district"],
                 "resident_ref": plan["resident_ref"], "due_at": occurrence["due_at"], "alert": occurrence["alert"]}
        events = []
        if occurrence["step"] == 0:
            events.append(self.event(DutyMissed(**about), plan, derived_id("care-missed", occurrence["_id"]), now))
        escalated = Escalated(**about, step=step.step, level=step.level,
                              recipients=handlers.recipients(plan, duty.holder, step.level, due_day))
        events.append(self.event(escalated, plan, derived_id("care-step", occurrence["_id"], str(step.step)), now))
        changes = {
            "step": step.step, "state": "escalating", "alert": occurrence["alert"],
            "chain_from": occurrence["chain_from"], "next_at": step.next_at,
            "next_key": self.key(step.next_at, now) if step.next_at else "",
            "unsent": True, "unsent_at": time.time(), "outgoing": [e.model_dump(mode="json") for e in events],
        }
        if not await self.store.compare_and_set(occurrence, changes):
            return False  # another replica, or a check-in, moved it first
        await self.send(occurrence["_id"], events)
        return True

    async def send(self, occurrence_id: str, events: list[Envelope[Any]]) -> None:
        await self.outbox.send(events)
        await self.store.sent(occurrence_id)

    async def quiet(self, pairing: Doc, now: datetime) -> bool:
        """A child's pairing with no contact for the configured days: the children's director is told, once."""
        plan = await self.store.plan(pairing["_id"])
        if plan is None or not await self.store.mark_quiet(pairing, plan["district"]):
            return False
        last = pairing["last_contact"] or pairing["since"]
        director = handlers.role_of(plan, "director")
        data = ContactOverdue(plan_id=plan["_id"], district=plan["district"], resident_ref=plan["resident_ref"],
                              caring_parent=handlers.role_of(plan, "caring_parent") or "",
                              director=f"person:{director}" if director else "operators", days=(now - last).days)
        await self.outbox.send([self.event(data, plan, derived_id("care-quiet", plan["_id"], last.isoformat()), now)])
        return True

    # --- reports ------------------------------------------------------------------------------------------

    async def report(self, call: ReportQuery) -> dict[str, Any]:
        if call.reader.role not in ("director", "operator"):
            raise forbidden()
        plans = [p for p in await self.store.community_plans(call.community) if p["district"] == call.reader.district]
        occurrences = [o for o in await self.store.month_occurrences(call.community, call.month)
                       if o["district"] == call.reader.district]
        contacts: dict[str, datetime] = {}
        for plan in plans:
            times = [c["at"] for c in await self.store.last_contacts(plan["_id"])]
            if times:
                contacts[plan["_id"]] = max(times)
        start, end = handlers.month_bounds(call.month, self.places.zone(call.reader.district))
        summary = handlers.month_report(plans, occurrences, contacts, start, end, self.clock.now())
        return {"district": call.reader.district, "community": call.community, "month": call.month, **summary}


def change(now: datetime, reader: Reader, action: str, reason: str) -> Doc:
    return {"at": now, "by": reader.person_id, "action": action, "reason": reason}


def view(plan: Doc) -> CarePlan:
    return CarePlan(
        plan_id=plan["_id"], district=plan["district"], community=plan["community"], grid=plan["grid"],
        resident_ref=plan["resident_ref"], resident_name=plan["resident_name"], resident_kind=plan["resident_kind"],
        address=plan["address"], health_notes=plan["health_notes"], medicines=plan["medicines"],
        family_phones=plan["family_phones"], group=plan["group"], duties=plan["duties"],
        covers=plan.get("covers", []), active=plan["active"], history=plan["history"],
    )
