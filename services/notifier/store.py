from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError


class NotifierStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.contacts = db["contacts"]
        self.notifications = db["notifications"]
        # One document per attempt, not an array in the notification: nx-27017 mangles $push of sub-documents.
        self.attempts = db["attempts"]

    async def ensure_indexes(self) -> None:
        await self.notifications.create_index([("status", 1), ("created", 1)])
        await self.attempts.create_index([("notification_id", 1), ("n", 1)])

    async def contact(self, key: str) -> dict[str, Any] | None:
        return await self.contacts.find_one({"_id": key})

    async def save_contact(self, key: str, contact: Mapping[str, str], at: float) -> None:
        await self.contacts.replace_one({"_id": key}, {**contact, "_id": key, "fetched": at}, upsert=True)

    async def create(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stores new notifications in one command, without looking first; returns each as stored, which is
        an earlier one (with another owner) where its id was taken."""
        try:
            if len(docs) == 1:
                await self.notifications.insert_one(docs[0])
            else:
                await self.notifications.insert_many(docs, ordered=False)
            return docs
        except (DuplicateKeyError, BulkWriteError) as exc:
            failed = exc
        found = {doc["_id"]: doc async for doc in self.notifications.find({"_id": {"$in": [d["_id"] for d in docs]}})}
        if len(found) < len(docs):
            raise failed  # not a taken id: nothing may be sent that is not stored
        return [found[doc["_id"]] for doc in docs]

    async def claim(self, notification_id: str, owner: str, now: float, until: float) -> bool:
        """Takes over a pending notification whose sender stopped renewing its claim (a crash mid-send)."""
        result = await self.notifications.update_one(
            {"_id": notification_id, "status": "pending", "claimed_until": {"$lt": now}},
            {"$set": {"owner": owner, "claimed_until": until}},
        )
        return result.modified_count == 1

    async def release(self, notification_id: str, owner: str) -> None:
        # Lets the redelivery of a failed handling resume at once instead of waiting out the claim.
        await self.notifications.update_one(
            {"_id": notification_id, "status": "pending", "owner": owner}, {"$set": {"claimed_until": 0.0}}
        )

    async def begin_attempt(self, notification_id: str, owner: str, n: int, until: float) -> bool:
        # Counted before sending: an attempt cut short by a crash still uses up one of the allowed attempts.
        result = await self.notifications.update_one(
            {"_id": notification_id, "status": "pending", "owner": owner},
            {"$set": {"attempts": n, "claimed_until": until}},
        )
        return result.modified_count == 1

    async def record_attempt(
        self, notification_id: str, n: int, channel: str, at: float, outcome: str, status: int | None, error: str
    ) -> None:
        await self.attempts.replace_one(
            {"_id": f"{notification_id}:{n}"},
            {"_id": f"{notification_id}:{n}", "notification_id": notification_id, "n": n, "channel": channel,
             "at": at, "outcome": outcome, "status": status, "error": error},
            upsert=True,
        )

    async def finish(
        self, notification_id: str, owner: str, status: str, channel: str, error: str, at: float
    ) -> bool:
        result = await self.notifications.update_one(
            {"_id": notification_id, "status": "pending", "owner": owner},
            {"$set": {"status": status, "channel": channel, "error": error, "finished": at}},
        )
        return result.modified_count == 1
