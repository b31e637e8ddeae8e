import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.intake.handlers import RANK


class IntakeStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.requests = db["requests"]
        self.volunteers = db["volunteers"]
        # A separate collection, not an array in the request: nx-27017 mangles $push of sub-documents.
        self.changes = db["status_changes"]
        self.pairings = db["pairings"]

    async def ensure_indexes(self) -> None:
        await self.requests.create_index([("announced", 1), ("created", 1)])
        await self.changes.create_index([("request_id", 1), ("seq", 1)])

    async def add_request(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Stores a new request; returns the one already stored under the same id instead, if any."""
        try:
            await self.requests.insert_one(doc)
            await self.record_change(doc["_id"], doc["status"], doc["created_at"], f"received by {doc['channel']}")
            return None
        except DuplicateKeyError:
            return await self.requests.find_one({"_id": doc["_id"]})

    async def request(self, request_id: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"_id": request_id})

    async def mark_announced(self, request_id: str) -> None:
        await self.requests.update_one({"_id": request_id}, {"$set": {"announced": True}})

    async def unannounced(self, older_than: float) -> list[dict[str, Any]]:
        cutoff = time.time() - older_than
        return await self.requests.find({"announced": False, "created": {"$lt": cutoff}}).limit(500).to_list()

    async def advance(
        self, request_id: str, status: str, at: str, note: str, below: int | None = None, **fields: Any
    ) -> bool:
        """Moves a request forward; a status at or below the current rank changes nothing."""
        result = await self.requests.update_one(
            {"_id": request_id, "rank": {"$lt": RANK[status] if below is None else below}},
            {"$set": {"status": status, "rank": RANK[status], **fields}},
        )
        if result.modified_count == 1:
            await self.record_change(request_id, status, at, note)
        return result.modified_count == 1

    async def record_change(self, request_id: str, status: str, at: str, note: str) -> None:
        try:
            await self.changes.insert_one(
                {"_id": f"{request_id}:{status}", "request_id": request_id, "status": status, "at": at,
                 "note": note, "seq": time.time()}
            )
        except DuplicateKeyError:
            pass

    async def history(self, request_id: str) -> list[dict[str, Any]]:
        return await self.changes.find({"request_id": request_id}).sort("seq", 1).to_list()

    async def save_pairing(self, doc: dict[str, Any]) -> None:
        await self.pairings.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def pairing(self, pairing_id: str) -> dict[str, Any] | None:
        return await self.pairings.find_one({"_id": pairing_id})

    async def end_pairing(self, pairing_id: str) -> bool:
        result = await self.pairings.update_one({"_id": pairing_id, "active": True}, {"$set": {"active": False}})
        return result.modified_count == 1

    async def save_volunteer(self, doc: dict[str, Any]) -> None:
        await self.volunteers.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def volunteer(self, volunteer_id: str) -> dict[str, Any] | None:
        return await self.volunteers.find_one({"_id": volunteer_id})
