import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.codes import looks_like_code, normalize, short_code

FREE = ""  # a slot's holder when it holds no assignment
REBASE_AFTER = 20  # half-lives: older recent work is decayed and stored afresh, so the growth factor stays small


# A volunteer's week and recent work, kept on the profile so that one write counts an offer or a completion.
WEEK_FIELDS = {"week": 1, "week_offers": 1, "week_hours": 1, "recent_work": 1, "recent_at": 1}


def stood(doc: dict[str, Any]) -> dict[str, Any]:
    """The week and recent work a profile (or the changes written to it) holds."""
    return {"offers": int(doc.get("week_offers", 0)), "hours": float(doc.get("week_hours", 0.0)),
            "recent_work": float(doc.get("recent_work", 0.0)), "recent_at": doc.get("recent_at")}


def member_key(kind: str, district: str, value: str) -> str:
    return f"{kind}:{district}|{value}"


class MatcherStore:
    """The roster, requests and assignments as matching needs them.

    Every change that two replicas could race on is one compare-and-set on a scalar field of one
    document: the request's state and round, an assignment's state, a capacity slot's holder.
    """

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.volunteers = db["volunteers"]
        # One small document per (grid, volunteer) and per (skill, volunteer): ranking finds volunteers
        # by equality on an indexed scalar key, so its cost follows the grids it reads, not the roster
        # (nx-27017 uses an index only for scalar equality, and misses equality on indexed arrays).
        self.members = db["grid_members"]
        self.slots = db["slots"]
        self.requests = db["requests"]
        self.assignments = db["assignments"]
        self.served = db["served"]
        self.pairings = db["pairings"]
        self.actions = db["operator_actions"]
        # Assignment codes issued before each assignment carried its own under a unique index: one document
        # per code, the code its _id. Read only for a code the assignments do not know; nothing is added.
        self.codes = db["assignment_codes"]
        # One document per volunteer and ISO week ("v-1:2026-W49"): offers made and hours done that week, as
        # counted before each profile held its own week; only read, for a volunteer not counted since.
        self.weeks = db["weeks"]
        # Which volunteers' profiles changed, numbered, so every replica's in-memory roster reads only those:
        # {"_id": 17, "volunteer_id": "v-1"}, and the last number under {"_id": "head", "seq": 17}.
        self.roster_log = db["roster_log"]
        # The roster packed into a few documents, for a replica to start from: {"_id": "meta", "snapshot": token,
        # "parts": n, "seq": the log number it holds} and the parts {"_id": "<token>:<i>", "data": bytes}.
        self.snapshots = db["roster_snapshots"]

    async def ensure_indexes(self) -> None:
        # Ranking reads the grids near the request, so its cost follows the volunteers per grid,
        # not the size of the roster.
        # nx-27017 answers equality or a range from a single-field index only (on a compound index's leading
        # field alone, on $in over any field but _id, and for update_many or delete_many on anything but _id,
        # it reads the whole collection): every query here leads with one of the single-field indexes. It
        # finds the document an update_one or find_one_and_update changes by an index only through _id.
        await self.members.create_index("key")
        await self.members.create_index("volunteer_id")
        await self.assignments.create_index([("request_id", 1), ("round", 1)])
        await self.assignments.create_index("request_id")
        await self.assignments.create_index("volunteer_id")
        await self.assignments.create_index("state")
        await self.assignments.create_index("announced")
        # An assignment's short code is its own field: the unique index is what makes a clash lengthen it.
        # Sparse, for assignments stored before codes were issued.
        await self.assignments.create_index("code", unique=True, sparse=True)
        await self.served.create_index("resident_ref")
        await self.served.create_index([("resident_ref", 1), ("volunteer_id", 1)])
        await self.pairings.create_index("resident_ref")
        await self.pairings.create_index([("resident_ref", 1), ("active", 1)])
        await self.pairings.create_index("active")  # a replica starting reads the standing pairings
        await self.actions.create_index("request_id")
        await self.slots.create_index([("volunteer_id", 1), ("holder", 1)])
        await self.slots.create_index("holder")
        await self.slots.create_index("volunteer_id")
        await self.requests.create_index("state")
        await self.requests.create_index("announced")
        await self.requests.create_index([("state", 1), ("lease", 1)])
        await self.requests.create_index("code")
        await self.volunteers.create_index("district")
        await self.requests.create_index("tidy")  # equality on a flag set only while an acceptance is under way
        await self.assignments.create_index([("state", 1), ("expires", 1)])
        await self.assignments.create_index([("volunteer_id", 1), ("state", 1)])

    # roster

    async def save_volunteer(self, profile: dict[str, Any]) -> None:
        # Slots and memberships first: once the profile is visible, ranking finds it complete.
        for i in range(profile["capacity"]):
            try:
                await self.slots.insert_one(
                    {"_id": f"{profile['_id']}:{i}", "volunteer_id": profile["_id"], "i": i, "holder": FREE}
                )
            except DuplicateKeyError:
                pass
        # A lowered capacity gives up free slots at once; a held one goes when its assignment ends.
        async for slot in self.slots.find({"volunteer_id": profile["_id"]}, {"i": 1}):
            if slot["i"] >= profile["capacity"]:
                await self.slots.delete_one({"_id": slot["_id"], "holder": FREE})
        keys = [member_key("grid", profile["district"], g) for g in profile["grids"]]
        keys += [member_key("skill", profile["district"], s) for s in profile["skills"]]
        wanted = {f"{key}|{profile['_id']}" for key in keys}
        for key in keys:
            try:
                await self.members.insert_one({"_id": f"{key}|{profile['_id']}", "key": key,
                                               "volunteer_id": profile["_id"]})
            except DuplicateKeyError:
                pass
        async for member in self.members.find({"volunteer_id": profile["_id"]}):
            if member["_id"] not in wanted:
                await self.members.delete_one({"_id": member["_id"]})
        await self.volunteers.replace_one({"_id": profile["_id"]}, profile, upsert=True)

    async def volunteers_near(
        self, district: str, service: str, category: str, grids: list[str] | None
    ) -> list[dict[str, Any]]:
        """Everyone in these grids (skills are judged by the ranking); district-wide, only the skilled."""
        keys = (
            [member_key("skill", district, category), member_key("skill", district, service)]
            if grids is None
            else [member_key("grid", district, grid) for grid in grids]
        )
        ids: set[str] = set()
        for key in keys:
            ids |= {m["volunteer_id"] async for m in self.members.find({"key": key})}
        return await self.volunteers_by_id(sorted(ids))

    def roster_documents(self) -> AsyncIterator[dict[str, Any]]:
        # Whole documents: nx-27017 takes longer to project each profile than to send it (11.7 s against 6.7 s
        # for 100,000 volunteers, bench/ranking.py's roster). One read, taken a batch at a time.
        return aiter(self.volunteers.find({}).batch_size(10_000))

    async def roster_snapshot(self) -> tuple[int, bytes] | None:
        """The last packed roster and the log number it holds; None if there is none, or it was replaced
        while being read."""
        meta = await self.snapshots.find_one({"_id": "meta"})
        if meta is None:
            return None
        ids = [f"{meta['snapshot']}:{i}" for i in range(meta["parts"])]
        parts = {part["_id"]: bytes(part["data"]) async for part in self.snapshots.find({"_id": {"$in": ids}})}
        if len(parts) != len(ids):
            return None
        return int(meta["seq"]), b"".join(parts[i] for i in ids)

    async def save_roster_snapshot(self, seq: int, parts: list[bytes]) -> None:
        # The parts first, under a new token, then the meta that names them: a reader sees one whole snapshot.
        token = uuid.uuid4().hex
        for i, part in enumerate(parts):
            await self.snapshots.insert_one({"_id": f"{token}:{i}", "data": part})
        # The _id is in the replacement too: nx-27017's upsert does not take it from the filter.
        old = await self.snapshots.find_one_and_replace(
            {"_id": "meta"}, {"_id": "meta", "snapshot": token, "parts": len(parts), "seq": seq, "taken": time.time()},
            upsert=True,
        )
        if old:
            await self.snapshots.delete_many({"_id": {"$in": [f"{old['snapshot']}:{i}" for i in range(old["parts"])]}})

    async def held_slots(self) -> list[tuple[str, int]]:
        """Every taken slot, as (volunteer, index): one read, whatever the size of the roster."""
        return [(slot["volunteer_id"], slot["i"])
                async for slot in self.slots.find({"holder": {"$ne": FREE}}, {"volunteer_id": 1, "i": 1})]

    async def held_of(self, volunteers: list[dict[str, Any]]) -> dict[str, list[int]]:
        slot_ids = [f"{v['_id']}:{i}" for v in volunteers for i in range(v["capacity"])]
        held: dict[str, list[int]] = {}
        if slot_ids:
            async for slot in self.slots.find({"_id": {"$in": slot_ids}}):
                if slot["holder"] != FREE:
                    held.setdefault(slot["volunteer_id"], []).append(slot["i"])
        return held

    async def roster_head(self) -> int:
        head = await self.roster_log.find_one({"_id": "head"})
        return int(head["seq"]) if head else 0

    async def log_roster_change(self, volunteer_id: str, resident_ref: str = "") -> int:
        """A volunteer's profile changed, or (volunteer "") a resident's pairings did."""
        head = await self.roster_log.find_one_and_update(
            {"_id": "head"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        seq = int((head or {})["seq"])  # upserted and returned after: never None
        await self.roster_log.insert_one({"_id": seq, "volunteer_id": volunteer_id, "resident_ref": resident_ref,
                                          "at": time.time()})
        return seq

    async def roster_changes(self, seqs: list[int]) -> dict[int, tuple[str, str]]:
        """What each change is about: (volunteer, "") or ("", resident)."""
        return {row["_id"]: (row["volunteer_id"], row.get("resident_ref", ""))
                async for row in self.roster_log.find({"_id": {"$in": seqs}})}

    async def volunteers_by_id(self, volunteer_ids: list[str]) -> list[dict[str, Any]]:
        return await self.volunteers.find({"_id": {"$in": volunteer_ids}}).to_list() if volunteer_ids else []

    async def note_work(self, volunteer_id: str, amount: float, half_life_days: float,
                        known: tuple[float, float] | None = None) -> tuple[float, float] | None:
        """Adds to the volunteer's recent work alone; see note()."""
        noted = await self.note(volunteer_id, None, work=amount, half_life_days=half_life_days, known=known)
        return (noted["recent_work"], noted["recent_at"]) if noted else None

    async def note(self, volunteer_id: str, week: str | None, offers: int = 0, hours: float = 0.0, work: float = 0.0,
                   half_life_days: float = 30.0, known: tuple[float, float] | None = None,
                   max_offers: int | None = None, max_hours: float | None = None) -> dict[str, Any] | None:
        """Adds offers and hours to the volunteer's week (none when `week` is None) and work to their recent
        work, in one write on their profile, and returns {offers, hours, recent_work, recent_at} as now stored.
        With a limit, counts only while the week is under it: None, counting nothing, when a limit is reached,
        and None for a volunteer the matcher does not know. Replicas counting at once never pass a limit
        together: the write that counts is conditional on the week, or on every field it read.

        The recent work is a heuristic for spreading work fairly, stored as of `recent_at` and decaying from
        there: work done later is added grown by the decay since, so that an $inc on the time this replica
        knows (`known`: its last view of (recent_work, recent_at)) is exact whatever other replicas add
        meanwhile. The profile is read only when that time moved on under us, lies too far back to grow from,
        the week turned, or a limit refused."""
        from services.matcher.scoring import decayed

        # To the millisecond: what is stored reads back equal, so this replica's `known` time matches it
        # (nx-27017 keeps fifteen significant digits of a double).
        now = round(time.time(), 3)
        half_life = half_life_days * 86400
        weekly = {"week": week} if week is not None else {}
        under: dict[str, Any] = {}
        if max_offers is not None:
            under["week_offers"] = {"$lt": max_offers}
        if max_hours is not None:
            under["week_hours"] = {"$lt": max_hours}
        if known is not None and 0 <= now - known[1] <= REBASE_AFTER * half_life:
            grown = work * 2 ** ((now - known[1]) / half_life)
            added = {"week_offers": offers, "week_hours": hours} if week is not None else {}
            counted = await self.volunteers.find_one_and_update(
                {"_id": volunteer_id, "recent_at": known[1], **weekly, **under},
                {"$inc": {**added, "recent_work": grown}}, projection=WEEK_FIELDS, return_document=ReturnDocument.AFTER)
            if counted is not None:
                return stood(counted)
        for _ in range(10):  # each pass loses only to another replica's write to this volunteer
            volunteer = await self.volunteers.find_one({"_id": volunteer_id}, WEEK_FIELDS)
            if volunteer is None:
                return None
            expect = {k: volunteer.get(k) for k in WEEK_FIELDS}  # None matches a field not stored yet
            changes: dict[str, Any] = {}
            at = volunteer.get("recent_at")
            if week is not None:
                if volunteer.get("week") == week:
                    was = stood(volunteer)
                elif "week" not in volunteer and at is not None:  # worked before profiles held their weeks
                    was = (await self.weeks_before([volunteer_id], week))[volunteer_id]
                else:
                    was = {"offers": 0, "hours": 0.0}
                if ((max_offers is not None and was["offers"] >= max_offers)
                        or (max_hours is not None and was["hours"] >= max_hours)):
                    return None
                changes.update(week=week, week_offers=was["offers"] + offers, week_hours=was["hours"] + hours)
            changes.update(recent_at=now, recent_work=work + (
                decayed(volunteer.get("recent_work", 0.0), at, now, half_life_days) if at is not None else 0.0))
            if (await self.volunteers.update_one({"_id": volunteer_id, **expect}, {"$set": changes})).matched_count:
                return stood(changes)
        raise RuntimeError(f"volunteer {volunteer_id}'s week kept changing under us; try again")

    async def weeks_before(self, volunteer_ids: list[str], week: str) -> dict[str, dict[str, Any]]:
        """Weeks of volunteers whose profiles do not hold weeks yet: what the weeks collection, where they were
        kept before, counted."""
        rows = {row["_id"]: row async for row in self.weeks.find({"_id": {"$in": [f"{v}:{week}" for v in volunteer_ids]}})}
        return {v: {"offers": int(rows.get(f"{v}:{week}", {}).get("offers", 0)),
                    "hours": float(rows.get(f"{v}:{week}", {}).get("hours", 0.0))} for v in volunteer_ids}

    async def note_rating(self, request_id: str, resident_ref: str, volunteer_id: str, stars: int) -> bool:
        try:
            # Per request and volunteer: a re-dispatched request is rated again for its second volunteer.
            await self.served.insert_one(
                {"_id": f"rating:{request_id}:{volunteer_id}", "resident_ref": resident_ref, "volunteer_id": volunteer_id,
                 "stars": stars, "at": time.time()}
            )
        except DuplicateKeyError:
            return False  # this rating was counted already
        await self.volunteers.update_one({"_id": volunteer_id}, {"$inc": {"stars_sum": stars, "stars_n": 1}})
        return True

    async def histories(self, resident_ref: str, volunteer_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The latest rating this resident gave each of these volunteers."""
        if not resident_ref or not volunteer_ids:
            return {}
        latest: dict[str, dict[str, Any]] = {}
        wanted = set(volunteer_ids)
        # $in on volunteer_id would make nx-27017 read every rating; this resident's are few.
        async for row in self.served.find({"resident_ref": resident_ref}):
            if row["volunteer_id"] in wanted and row["at"] >= latest.get(row["volunteer_id"], {}).get("at", 0):
                latest[row["volunteer_id"]] = row
        return latest

    async def leave(self, volunteer_id: str, at: float) -> None:
        """The volunteer is no longer found by ranking; their profile stays for the work they hold, until a
        registration made after `at` replaces it."""
        await self.volunteers.update_one({"_id": volunteer_id}, {"$set": {"left": True, "left_at": at}})
        gone = [m["_id"] async for m in self.members.find({"volunteer_id": volunteer_id}, {"_id": 1})]
        if gone:
            await self.members.delete_many({"_id": {"$in": gone}})

    async def listed(
        self, district: str, grid: str | None, skill: str | None, team: str | None, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of a district's active volunteers by id, found through the most selective index; and whether
        more follow."""
        if grid or skill:
            key = member_key("grid", district, grid) if grid else member_key("skill", district, skill or "")
            ids = sorted({m["volunteer_id"] async for m in self.members.find({"key": key})})
        else:
            ids = sorted([v["_id"] async for v in self.volunteers.find({"district": district}, {"_id": 1})])
        ids = [i for i in ids if i > after]
        page: list[dict[str, Any]] = []
        for start in range(0, len(ids), max(limit, 50)):
            chunk = await self.volunteers_by_id(ids[start:start + max(limit, 50)])
            for volunteer in sorted(chunk, key=lambda v: v["_id"]):
                if volunteer.get("left") or volunteer["district"] != district:
                    continue
                if (grid and grid not in volunteer["grids"]) or (skill and skill not in volunteer["skills"]):
                    continue
                if team and volunteer.get("team") != team:
                    continue
                if len(page) == limit:
                    return page, True
                page.append(volunteer)
        return page, False

    async def note_week(self, volunteer_id: str, week: str, offers: int = 0, hours: float = 0.0,
                        **work: Any) -> dict[str, Any]:
        """Adds to the volunteer's week (and, given `work`, to their recent work: see note()), and returns the
        week as it now stands."""
        return await self.note(volunteer_id, week, offers, hours, **work) or {}

    async def count_offer(self, volunteer_id: str, week: str, max_offers: int | None,
                          max_hours: float | None, **work: Any) -> dict[str, Any] | None:
        """Counts an offer into the volunteer's week if the week is under both limits, and returns the week
        as it now stands; None, counting nothing, when a limit is reached. One write decides and counts, so
        replicas offering the same volunteer at once never pass a limit together."""
        return await self.note(volunteer_id, week, offers=1, max_offers=max_offers, max_hours=max_hours, **work)

    async def weeks_of(self, volunteer_ids: list[str], week: str) -> dict[str, dict[str, Any]]:
        return await self.weeks_in(await self.volunteers_by_id(volunteer_ids) if volunteer_ids else [], week)

    async def weeks_in(self, volunteers: list[dict[str, Any]], week: str) -> dict[str, dict[str, Any]]:
        """The week's counts of profiles already read; read only for a profile from before they were kept on it."""
        weeks = {v["_id"]: stood(v) for v in volunteers if v.get("week") == week}
        older = [v["_id"] for v in volunteers if "week" not in v and v.get("recent_at") is not None]
        return {**(await self.weeks_before(older, week) if older else {}), **weeks}

    # pairings

    async def save_pairing(self, pairing: dict[str, Any]) -> None:
        await self.pairings.replace_one({"_id": pairing["_id"]}, pairing, upsert=True)

    async def end_pairing(self, pairing_id: str) -> str | None:
        """Ends the pairing, and says whose it was; None for a pairing never stored."""
        ended = await self.pairings.find_one_and_update({"_id": pairing_id},
                                                        {"$set": {"active": False, "ended": time.time()}})
        return str(ended["resident_ref"]) if ended else None

    async def active_pairings(self) -> dict[str, list[str]]:
        """Every resident's standing volunteers: one read, for a replica's memory."""
        pairs: dict[str, list[str]] = {}
        async for pairing in self.pairings.find({"active": True}, {"resident_ref": 1, "volunteer_id": 1}):
            pairs.setdefault(pairing["resident_ref"], []).append(pairing["volunteer_id"])
        return pairs

    async def paired_volunteers(self, resident_ref: str) -> list[str]:
        if not resident_ref:
            return []
        return [p["volunteer_id"] async for p in self.pairings.find({"resident_ref": resident_ref, "active": True})]

    # operator actions

    async def record_action(self, action: dict[str, Any]) -> None:
        try:
            await self.actions.insert_one(action)
        except DuplicateKeyError:
            pass

    async def actions_on(self, request_id: str) -> list[dict[str, Any]]:
        return await self.actions.find({"request_id": request_id}).sort("at", 1).to_list()

    async def free_slots(self, volunteers: list[dict[str, Any]]) -> dict[str, int]:
        # Slot ids are known from each capacity, so the read goes by _id, which every server indexes.
        slot_ids = [f"{v['_id']}:{i}" for v in volunteers for i in range(v["capacity"])]
        free: dict[str, int] = {v["_id"]: 0 for v in volunteers}
        if slot_ids:
            async for slot in self.slots.find({"_id": {"$in": slot_ids}}):
                if slot["holder"] == FREE:
                    free[slot["volunteer_id"]] += 1
        return free

    async def loads(self, volunteers: list[dict[str, Any]]) -> dict[str, int]:
        """Open offers and assignments each volunteer holds a slot for."""
        free = await self.free_slots(volunteers)
        return {v["_id"]: v["capacity"] - free[v["_id"]] for v in volunteers}

    async def reserve(self, volunteer_id: str, assignment_id: str) -> bool:
        # Found through the volunteer's index, taken by _id: the compare-and-set on the holder is the arbiter.
        async for slot in self.slots.find({"volunteer_id": volunteer_id}, {"holder": 1}):
            if slot["holder"] == FREE and await self.take_slot(slot["_id"], FREE, assignment_id):
                return True
        return False

    async def take_slot(self, slot_id: str, holder: str, new_holder: str) -> bool:
        result = await self.slots.update_one({"_id": slot_id, "holder": holder}, {"$set": {"holder": new_holder}})
        return result.modified_count == 1

    async def release(self, assignment_id: str, slot_id: str | None = None) -> str | None:
        """Frees the slot the assignment holds (at most one), and says which it was. An assignment that
        names its slot frees it without a read; one that does not is looked up by holder."""
        if slot_id:
            return slot_id if await self.take_slot(slot_id, assignment_id, FREE) else None
        if slot := await self.slots.find_one({"holder": assignment_id}, {"_id": 1}):
            if await self.take_slot(slot["_id"], assignment_id, FREE):
                return str(slot["_id"])
        return None

    async def held(self) -> dict[str, list[str]]:
        holders: dict[str, list[str]] = {}
        async for slot in self.slots.find({}):
            if slot["holder"] != FREE:
                holders.setdefault(slot["volunteer_id"], []).append(slot["holder"])
        return holders

    # requests

    async def add_request(self, doc: dict[str, Any]) -> bool:
        """Stores the request; false when one with its id is stored already."""
        try:
            await self.requests.insert_one(doc)
        except DuplicateKeyError:
            return False  # a redelivered request.created, or a cancellation that came first
        return True

    async def request(self, request_id: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"_id": request_id})

    async def request_by_ref(self, ref: str) -> dict[str, Any] | None:
        """A request by its id or by the short code intake gave it."""
        found = await self.request(ref)
        if found is None and looks_like_code(ref):
            found = await self.requests.find_one({"code": normalize(ref)})
        return found

    async def claim(self, request_id: str, until: float) -> dict[str, Any] | None:
        """Takes an open request for placing; only one replica wins each round."""
        return await self.requests.find_one_and_update(
            {"_id": request_id, "state": "open"},
            {"$set": {"state": "placing", "lease": until}, "$inc": {"round": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def take(self, request: dict[str, Any], until: float, **changes: Any) -> dict[str, Any] | None:
        """Takes a request in whatever state it was read in, for an operator's change; one taker wins."""
        return await self.requests.find_one_and_update(
            {"_id": request["_id"], "state": request["state"], "round": request["round"]},
            {"$set": {"state": "placing", "lease": until, **changes}, "$inc": {"round": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def renew(self, request_id: str, round_: int, until: float) -> bool:
        """The placer's heartbeat: false once the request is no longer ours to place."""
        return await self.move_request(request_id, {"state": "placing", "round": round_}, lease=until)

    async def note_why(self, request_id: str, volunteer_id: str, why: str) -> None:
        await self.requests.update_one({"_id": request_id}, {"$set": {f"why.{volunteer_id}": why}})

    async def settle_request(self, request_id: str, expect: dict[str, Any], **changes: Any) -> dict[str, Any] | None:
        """move_request that returns the request as it now stands, or None when `expect` did not hold."""
        return await self.requests.find_one_and_update(
            {"_id": request_id, **expect}, {"$set": changes}, return_document=ReturnDocument.AFTER
        )

    async def move_request(self, request_id: str, expect: dict[str, Any], **changes: Any) -> bool:
        result = await self.requests.update_one({"_id": request_id, **expect}, {"$set": changes})
        return result.modified_count == 1

    async def tidy_all(self, seen_through: list[tuple[str, str]]) -> None:
        """Clears `tidy` on requests whose acceptance, (request, assignment), was seen through; a request
        accepted since by another assignment keeps its mark."""
        if seen_through:
            await self.requests.update_many(
                {"_id": {"$in": [r for r, _ in seen_through]}, "tidy": True,
                 "assignment_id": {"$in": [a for _, a in seen_through]}},
                {"$set": {"tidy": False}},
            )

    # The sweeps below send the server equality on a state or flag only a request in flight has, and judge
    # times here: a range on a time field would be answered from its index and read the whole history.

    async def stale_placements(self, now: float) -> list[dict[str, Any]]:
        placing = await self.requests.find({"state": "placing"}).limit(1000).to_list()
        return [doc for doc in placing if doc.get("lease", 0) < now][:200]

    async def untidy(self, older_than: float) -> list[dict[str, Any]]:
        """Accepted requests whose acceptance was not seen through (losing offers withdrawn, event sent)."""
        cutoff = time.time() - older_than
        return [doc for doc in await self.requests.find({"tidy": True}).limit(1000).to_list()
                if doc.get("tidy_at", 0) < cutoff][:200]

    async def unannounced_unmatched(self, older_than: float) -> list[dict[str, Any]]:
        cutoff = time.time() - older_than
        waiting = await self.requests.find({"announced": False}).limit(1000).to_list()
        return [doc for doc in waiting if doc["state"] == "unmatched" and doc.get("settled_at", 0) < cutoff][:200]

    async def waiting(self, older_than: float) -> list[dict[str, Any]]:
        cutoff = time.time() - older_than
        return [doc for doc in await self.requests.find({"state": "open"}).limit(1000).to_list()
                if doc.get("opened", 0) < cutoff][:200]

    # assignments

    async def add_assignment(self, doc: dict[str, Any]) -> str:
        """Stores the assignment with its short code, and returns the code: the same id always gets the same
        code; a clash with another assignment's lengthens it. A repeat of the same step changes nothing."""
        for length in range(6, 13):
            code = short_code(doc["_id"], length)
            try:
                await self.assignments.insert_one({**doc, "code": code})
                return code
            except DuplicateKeyError:
                # Read only on a collision, to tell an earlier attempt at this step from a code clash.
                stored = await self.assignment(doc["_id"])
                if stored is not None:
                    return str(stored.get("code", ""))
        raise RuntimeError(f"no free short code for {doc['_id']}")

    async def assignment(self, assignment_id: str) -> dict[str, Any] | None:
        return await self.assignments.find_one({"_id": assignment_id})

    async def assignment_by_ref(self, ref: str) -> dict[str, Any] | None:
        """An assignment by its id or by its short code."""
        found = await self.assignment(ref)
        if found is None and looks_like_code(ref):
            found = await self.assignments.find_one({"code": normalize(ref)})
            if found is None:  # a code issued into the old collection, for an assignment stored without it
                issued = await self.codes.find_one({"_id": normalize(ref)})
                found = await self.assignment(issued["assignment_id"]) if issued else None
        return found

    async def move_assignment(self, assignment_id: str, expect: str, state: str, **changes: Any) -> bool:
        result = await self.assignments.update_one(
            {"_id": assignment_id, "state": expect}, {"$set": {"state": state, "changed": time.time(), **changes}}
        )
        return result.modified_count == 1

    async def settle_assignment(self, assignment_id: str, expect: str, state: str, volunteer_id: str | None = None,
                                **changes: Any) -> dict[str, Any] | None:
        """move_assignment that returns the assignment as it now stands, or None when it was not `expect`
        (or, if named, not the volunteer's)."""
        owner = {"volunteer_id": volunteer_id} if volunteer_id is not None else {}
        return await self.assignments.find_one_and_update(
            {"_id": assignment_id, "state": expect, **owner},
            {"$set": {"state": state, "changed": time.time(), **changes}},
            return_document=ReturnDocument.AFTER,
        )

    async def lapsed_offers(self) -> list[dict[str, Any]]:
        now = time.time()
        return [doc for doc in await self.assignments.find({"state": "offered"}).limit(1000).to_list()
                if doc.get("expires", 0) < now][:200]

    async def unannounced_offers(self, older_than: float) -> list[dict[str, Any]]:
        cutoff = time.time() - older_than
        return [doc for doc in await self.assignments.find({"announced": False}).limit(1000).to_list()
                if doc.get("created", 0) < cutoff][:200]

    async def mark_announced(self, assignment_id: str) -> None:
        await self.assignments.update_one({"_id": assignment_id}, {"$set": {"announced": True}})

    async def mark_all_announced(self, assignment_ids: list[str], completed: bool = False) -> None:
        """Marks offers published (or, `completed`, completions): an offer's mark never clears the flag of a
        completion stored since, whose events may not be published yet."""
        if assignment_ids:  # found by _id, which nx-27017 answers from its index even for update_many
            state = "completed" if completed else {"$ne": "completed"}
            await self.assignments.update_many({"_id": {"$in": assignment_ids}, "state": state},
                                               {"$set": {"announced": True}})

    async def round_offers(self, request_id: str, round_: int) -> list[dict[str, Any]]:
        return await self.assignments.find({"request_id": request_id, "round": round_}).to_list()

    async def of_request(self, request_id: str) -> list[dict[str, Any]]:
        return await self.assignments.find({"request_id": request_id}).sort("created", 1).to_list()

    async def release_all(self, assignment_ids: list[str]) -> None:
        for assignment_id in assignment_ids:
            await self.release(assignment_id)

    async def open_assignments(self, volunteer_id: str) -> list[dict[str, Any]]:
        mine = await self.assignments.find({"volunteer_id": volunteer_id}).sort("created", 1).to_list()
        return [doc for doc in mine if doc["state"] in ("offered", "accepted")]

    async def past_assignments(self, volunteer_id: str, limit: int) -> list[dict[str, Any]]:
        mine = await self.assignments.find({"volunteer_id": volunteer_id}).sort("created", -1).to_list()
        return [doc for doc in mine if doc["state"] not in ("offered", "accepted")][:limit]

    async def live_assignments(self) -> list[dict[str, Any]]:
        return [doc for state in ("offered", "accepted") for doc in await self.assignments.find({"state": state}).to_list()]
