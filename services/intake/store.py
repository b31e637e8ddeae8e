import base64
import time
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]


class IntakeStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.requests = db["requests"]
        self.volunteers = db["volunteers"]
        # Where an earlier version kept each request's history lines; now each request holds its own, in a
        # sub-document keyed by what made each line (not an array: nx-27017 mangles $push of sub-documents).
        self.changes = db["status_changes"]
        self.pairings = db["pairings"]
        # The accepted volunteer of each assignment, the only one given the resident's details.
        self.assignments = db["assignments"]
        # Each district's pseudonym secret. Whoever holds it can test phone numbers against pseudonyms,
        # so it stays in intake's database, next to the phones it protects, and leaves it only in backups.
        self.keys = db["pseudonym_keys"]

    async def ensure_indexes(self) -> None:
        # nx-27017 answers equality or a range from a single-field index only: on a compound index's leading
        # field alone it reads the whole collection. The sweeps and lookups below each lead with one of these.
        await self.requests.create_index("announced")
        await self.requests.create_index([("announced", 1), ("created", 1)])
        await self.requests.create_index("code", unique=True, sparse=True)
        # Every list query leads with one of these fields and pages in (created, _id) order.
        # (nx-27017 cannot index _id inside a compound index; created is nearly unique on its own.)
        await self.requests.create_index("created")
        await self.requests.create_index([("district", 1), ("created", 1)])
        await self.requests.create_index([("district", 1), ("grid", 1), ("created", 1)])
        await self.requests.create_index([("status", 1), ("created", 1)])
        await self.requests.create_index([("district", 1), ("status", 1), ("created", 1)])
        await self.changes.create_index("request_id")
        await self.changes.create_index([("request_id", 1), ("seq", 1)])
        await self.assignments.create_index("code", unique=True, sparse=True)
        # One volunteer per phone and district, found by the keyed digest of the phone (ids are random).
        await self.volunteers.create_index("phone_key", unique=True, sparse=True)

    # --- requests

    async def add_request(self, doc: Doc) -> Doc | None:
        """Stores a new request; returns the one already stored under the same id instead, if any.
        Raises DuplicateKeyError when only its short code is taken (the caller lengthens the code)."""
        try:
            await self.requests.insert_one(doc)
        except DuplicateKeyError:
            if stored := await self.requests.find_one({"_id": doc["_id"]}):
                return stored
            raise
        return None

    async def request(self, request_id: str) -> Doc | None:
        return await self.requests.find_one({"_id": request_id})

    async def request_by_code(self, code: str) -> Doc | None:
        return await self.requests.find_one({"code": code})

    async def mark_announced(self, request_id: str) -> None:
        await self.requests.update_one({"_id": request_id}, {"$set": {"announced": True}})

    async def unannounced(self, older_than: float) -> list[Doc]:
        cutoff = time.time() - older_than
        # Only the announced flag goes to the server: a range on created would be answered from its index
        # and read every older request. Unannounced requests are few, and the age is judged here.
        waiting = await self.requests.find({"announced": False}).limit(500).to_list()
        return [doc for doc in waiting if doc["created"] < cutoff]

    async def change(self, doc: Doc, fields: Doc) -> Doc | None:
        """Compare-and-set on the version read: the request as changed, or None when another change came first."""
        return await self.change_unread(doc["_id"], {"version": doc.get("version")}, fields)

    async def change_unread(self, request_id: str, expect: Doc, fields: Doc) -> Doc | None:
        """The change, made only if the request matches `expect`, without reading it first: the request as
        changed, or None when it does not match."""
        return await self.requests.find_one_and_update(
            {"_id": request_id, **expect}, {"$set": fields, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def page(self, query: Doc, limit: int) -> list[Doc]:
        cursor = self.requests.find(query).sort([("created", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return await cursor.to_list()

    async def history_stored_apart(self, request_id: str) -> list[Doc]:
        return await self.changes.find({"request_id": request_id}).sort("seq", 1).to_list()

    # --- assignments

    async def record_assignment(self, assignment_id: str, fields: Doc) -> None:
        try:
            await self.assignments.update_one({"_id": assignment_id}, {"$set": fields}, upsert=True)
        except DuplicateKeyError:
            # A code the matcher gave twice cannot be looked up; the id still can.
            fields = {k: v for k, v in fields.items() if k != "code"}
            await self.assignments.update_one({"_id": assignment_id}, {"$set": fields}, upsert=True)

    async def assignment(self, assignment_id: str) -> Doc | None:
        return await self.assignments.find_one({"_id": assignment_id})

    async def assignment_by_code(self, code: str) -> Doc | None:
        return await self.assignments.find_one({"code": code})

    # --- pairings

    async def save_pairing(self, doc: Doc) -> None:
        await self.pairings.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def pairing(self, pairing_id: str) -> Doc | None:
        return await self.pairings.find_one({"_id": pairing_id})

    async def active_pairings(self) -> list[Doc]:
        return await self.pairings.find({"active": True}).to_list()

    async def request_of_resident(self, resident_ref: str) -> Doc | None:
        return await self.requests.find_one({"resident_ref": resident_ref})

    async def end_pairing(self, pairing_id: str) -> bool:
        result = await self.pairings.update_one({"_id": pairing_id, "active": True}, {"$set": {"active": False}})
        return result.modified_count == 1

    # --- volunteers

    async def add_volunteer(self, doc: Doc) -> Doc | None:
        """Stores a new volunteer; returns the one already stored with the same phone instead, if any."""
        try:
            await self.volunteers.insert_one(doc)
            return None
        except DuplicateKeyError:
            return await self.volunteers.find_one({"phone_key": doc["phone_key"]}) or await self.volunteer(doc["_id"])

    async def volunteer_by_phone_key(self, phone_key: str) -> Doc | None:
        return await self.volunteers.find_one({"phone_key": phone_key})

    async def volunteers_without_phone_key(self) -> list[Doc]:
        # Filtered here rather than in the query: a missing field is matched differently by some servers.
        return [doc async for doc in self.volunteers.find({}) if not doc.get("phone_key")]

    async def set_phone_key(self, volunteer_id: str, phone_key: str) -> None:
        await self.volunteers.update_one({"_id": volunteer_id}, {"$set": {"phone_key": phone_key}})

    async def replace_volunteer(self, stored: Doc, doc: Doc) -> bool:
        """Compare-and-set on the revision read: False when another change came first."""
        result = await self.volunteers.replace_one({"_id": stored["_id"], "revision": stored.get("revision")}, doc)
        return result.matched_count == 1

    async def volunteer(self, volunteer_id: str) -> Doc | None:
        return await self.volunteers.find_one({"_id": volunteer_id})

    # --- pseudonym secrets

    async def district_key(self, district: str, proposed: bytes) -> bytes:
        """The district's secret; `proposed` becomes it when there is none yet (replicas agree on the first)."""
        try:
            await self.keys.insert_one({"_id": district, "key": base64.b64encode(proposed).decode(), "version": 2,
                                        "created": time.time()})
        except DuplicateKeyError:
            pass
        stored = await self.keys.find_one({"_id": district})
        assert stored is not None
        return base64.b64decode(stored["key"])
