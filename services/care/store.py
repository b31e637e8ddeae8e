"""Care's collections. Timers are found by single-field equality keys, the one kind of query the database
answers from an index without reading the whole collection. A document holding dates is written whole
(insert or replace): the embedded database keeps a date given to $set or $push as text."""

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]


class CareStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.plans = db["plans"]  # the only place names, notes, medicines and family phones are kept
        self.occurrences = db["occurrences"]  # one per duty and deadline: its state and escalation chain
        self.checkins = db["checkins"]
        self.contacts = db["contacts"]
        self.pairings = db["pairings"]  # one per child's plan: when its quiet alert falls due
        self.watch = db["watch"]  # the watchdog's cursor, shared by every replica

    async def ensure_indexes(self) -> None:
        await self.plans.create_index([("idempotency_key", ASCENDING)], unique=True)
        await self.plans.create_index("community")
        await self.occurrences.create_index("next_key")
        await self.occurrences.create_index("live")
        await self.occurrences.create_index("month")
        await self.occurrences.create_index("unsent")
        await self.checkins.create_index("pending")
        await self.checkins.create_index("request_id")
        await self.contacts.create_index("plan_id")
        await self.pairings.create_index("alert_key")
        await self.pairings.create_index("queue")

    # --- plans ------------------------------------------------------------------------------------------

    async def plan(self, plan_id: str) -> Doc | None:
        return await self.plans.find_one({"_id": plan_id})

    async def add_plan(self, plan: Doc) -> bool:
        try:
            await self.plans.insert_one(plan)
            return True
        except DuplicateKeyError:
            return False

    async def save_plan(self, plan: Doc) -> None:
        await self.plans.replace_one({"_id": plan["_id"]}, plan)

    async def community_plans(self, community: str) -> list[Doc]:
        return await self.plans.find({"community": community}).to_list()

    # --- occurrences ------------------------------------------------------------------------------------

    async def add_occurrence(self, occurrence: Doc) -> None:
        try:
            await self.occurrences.insert_one(occurrence)
        except DuplicateKeyError:
            pass  # made by an earlier attempt or another replica

    async def duty_occurrences(self, plan_id: str, duty_id: str) -> list[Doc]:
        """The deadlines of a duty not yet settled (checked in or ended)."""
        return await self.occurrences.find({"live": f"{plan_id}:{duty_id}"}).to_list()

    async def plan_occurrences(self, plan: Doc) -> list[Doc]:
        found: list[Doc] = []
        for duty in plan["duties"]:
            found += await self.duty_occurrences(plan["_id"], duty["duty_id"])
        return found

    async def timers(self, key: str) -> list[Doc]:
        return await self.occurrences.find({"next_key": key}).to_list()

    async def unsent(self) -> list[Doc]:
        return await self.occurrences.find({"unsent": True}).to_list()

    async def compare_and_set(self, occurrence: Doc, changes: Doc, unset: tuple[str, ...] = ()) -> bool:
        """Changes an occurrence only if no one else moved it since it was read: one chain per deadline."""
        changed = {name: value for name, value in {**occurrence, **changes}.items() if name not in unset}
        result = await self.occurrences.replace_one(
            {"_id": occurrence["_id"], "step": occurrence["step"], "state": occurrence["state"]}, changed)
        return result.modified_count == 1

    async def sent(self, occurrence_id: str) -> None:
        await self.occurrences.update_one({"_id": occurrence_id}, {"$unset": {"unsent": ""}})

    async def month_occurrences(self, community: str, month: str) -> list[Doc]:
        return await self.occurrences.find({"month": f"{community}:{month}"}).to_list()

    # --- check-ins and contacts -------------------------------------------------------------------------

    async def checkin(self, checkin_id: str) -> Doc | None:
        return await self.checkins.find_one({"_id": checkin_id})

    async def add_checkin(self, checkin: Doc) -> None:
        try:
            await self.checkins.insert_one(checkin)
        except DuplicateKeyError:
            pass

    async def request_raised(self, checkin_id: str, request_id: str) -> None:
        await self.checkins.update_one({"_id": checkin_id}, {"$set": {"request_id": request_id},
                                                             "$unset": {"pending": ""}})

    async def request_done(self, request_id: str, at: datetime) -> None:
        """The urgent request a check-in raised was carried out (only requests care raised match).

        Keyed on the request, and only ever moved later ($max over UTC ISO times, which sort as text): a
        repeated completion changes nothing, and an older one arriving after a newer one moves nothing back."""
        await self.checkins.update_one({"request_id": request_id},
                                       {"$max": {"request_done_at": at.astimezone(UTC).isoformat()}})

    async def pending_requests(self) -> list[Doc]:
        return await self.checkins.find({"pending": True}).to_list()

    async def contact(self, contact_id: str) -> Doc | None:
        return await self.contacts.find_one({"_id": contact_id})

    async def add_contact(self, contact: Doc) -> None:
        try:
            await self.contacts.insert_one(contact)
        except DuplicateKeyError:
            pass

    async def last_contacts(self, plan_id: str) -> list[Doc]:
        return await self.contacts.find({"plan_id": plan_id}).to_list()

    # --- pairings (children) ----------------------------------------------------------------------------

    async def pairing(self, plan_id: str) -> Doc | None:
        return await self.pairings.find_one({"_id": plan_id})

    async def put_pairing(self, pairing: Doc) -> None:
        await self.pairings.replace_one({"_id": pairing["_id"]}, pairing, upsert=True)

    async def contacted(self, plan_id: str, at: datetime, alert_at: datetime, alert_key: str) -> None:
        pairing = await self.pairing(plan_id)
        if pairing is None or (pairing["last_contact"] and pairing["last_contact"] >= at):
            return
        await self.pairings.replace_one({"_id": plan_id, "version": pairing["version"]}, {
            **pairing, "last_contact": at, "alert_at": alert_at, "alert_key": alert_key, "alerted": False, "queue": "",
            "version": pairing["version"] + 1})

    async def quiet_timers(self, key: str) -> list[Doc]:
        return await self.pairings.find({"alert_key": key}).to_list()

    async def mark_quiet(self, pairing: Doc, queue: str) -> bool:
        result = await self.pairings.update_one(
            {"_id": pairing["_id"], "version": pairing["version"], "alerted": False},
            {"$set": {"alerted": True, "queue": queue}})
        return result.modified_count == 1

    async def queue(self, district: str) -> list[Doc]:
        return await self.pairings.find({"queue": district}).to_list()

    async def end_pairing(self, plan_id: str) -> None:
        await self.pairings.update_one({"_id": plan_id}, {"$set": {"active": False, "alert_key": "", "queue": ""}})

    # --- the watchdog's cursor --------------------------------------------------------------------------

    async def cursor(self) -> str | None:
        found = await self.watch.find_one({"_id": "cursor"})
        return str(found["key"]) if found else None

    async def first_cursor(self, key: str) -> None:
        try:
            await self.watch.insert_one({"_id": "cursor", "key": key})
        except DuplicateKeyError:
            pass  # a restart keeps the stored one

    async def advance_cursor(self, key: str) -> None:
        # Keys sort as times, and $max only moves the cursor on: a replica that finished an older pass, or
        # that has not seen another's, never moves it back.
        await self.watch.update_one({"_id": "cursor"}, {"$max": {"key": key}}, upsert=True)
