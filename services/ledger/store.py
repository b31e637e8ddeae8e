from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError


class LedgerStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        # Append-only; every balance is summed from these, so there is no counter to drift.
        self.entries = db["entries"]
        self.ratings = db["ratings"]
        self.accounts = db["accounts"]

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("volunteer_id", 1), ("posted", 1)])
        await self.ratings.create_index("volunteer_id")

    async def add_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Stores an entry; returns the one already stored under its id instead, if any."""
        try:
            await self.entries.insert_one(entry)
            return entry
        except DuplicateKeyError:
            stored = await self.entries.find_one({"_id": entry["_id"]})
            assert stored is not None  # entries are never deleted
            return stored

    async def points_through(self, volunteer_id: str, posted: float) -> int:
        rows = await self._sum(
            self.entries,
            {"volunteer_id": volunteer_id, "posted": {"$lte": posted}},
            {"_id": None, "points_cents": {"$sum": "$points_cents"}},
        )
        return int(rows[0]["points_cents"]) if rows else 0

    async def totals(self, volunteer_id: str) -> dict[str, dict[str, int]]:
        rows = await self._sum(
            self.entries,
            {"volunteer_id": volunteer_id},
            {
                "_id": "$kind",
                "hours_cents": {"$sum": "$hours_cents"},
                "points_cents": {"$sum": "$points_cents"},
                "entries": {"$sum": 1},
            },
        )
        return {row.pop("_id"): row for row in rows}

    async def rating_totals(self, volunteer_id: str) -> tuple[int, int]:
        """(number of ratings, sum of their stars)."""
        rows = await self._sum(
            self.ratings, {"volunteer_id": volunteer_id}, {"_id": None, "n": {"$sum": 1}, "stars": {"$sum": "$stars"}}
        )
        return (int(rows[0]["n"]), int(rows[0]["stars"])) if rows else (0, 0)

    async def add_rating(self, doc: dict[str, Any]) -> None:
        try:
            await self.ratings.insert_one(doc)
        except DuplicateKeyError:
            pass  # one rating per request; the first one recorded stands

    async def open_account(self, doc: dict[str, Any]) -> None:
        try:
            await self.accounts.insert_one(doc)
        except DuplicateKeyError:
            pass  # seen before; first_seen stays

    @staticmethod
    async def _sum(
        collection: AsyncCollection[dict[str, Any]], match: dict[str, Any], group: dict[str, Any]
    ) -> list[dict[str, Any]]:
        cursor = await collection.aggregate([{"$match": match}, {"$group": group}])
        rows: list[dict[str, Any]] = await cursor.to_list()
        return rows
