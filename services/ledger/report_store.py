"""The ledger queries reports need: plain finds over entries and ratings, summed in Python by reports.py."""

from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.ledger.reports import CHINA, month_span

# Only what reports read; missing fields stay missing and reports.py reads them as "" / 0.
ENTRY_FIELDS = {
    name: 1
    for name in ("kind", "volunteer_id", "district", "hours_cents", "points_cents", "category", "service", "grid",
                 "team", "resident_ref", "request_id", "at", "posted")
}
RATING_FIELDS = {"request_id": 1, "volunteer_id": 1, "stars": 1, "at": 1}
# Request ids per $in query: a month of a busy district has thousands, and one huge query is fragile.
BATCH = 500


class ReportStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.entries = db["entries"]
        self.ratings = db["ratings"]
        self.accounts = db["accounts"]

    async def known(self, volunteer_id: str) -> bool:
        """Whether the ledger has ever heard of this volunteer (registered, or credited)."""
        return await self.accounts.find_one({"_id": volunteer_id}, {"_id": 1}) is not None

    async def month_entries(self, district: str, month: str, zone: tzinfo = CHINA) -> list[dict[str, Any]]:
        start, end = month_span(month, zone)
        # `at` is an epoch float: range queries on floats behave alike on nx-27017 and MongoDB.
        query = {"district": district, "at": {"$gte": start, "$lt": end}}
        found: list[dict[str, Any]] = await self.entries.find(query, ENTRY_FIELDS).to_list()
        return found

    async def volunteer_entries(
        self, volunteer_id: str, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        """All of a volunteer's entries, or those from month `since` through month `until` (Shanghai time)."""
        query: dict[str, Any] = {"volunteer_id": volunteer_id}
        window: dict[str, float] = {}
        if since:
            window["$gte"] = month_span(since)[0]
        if until:
            window["$lt"] = month_span(until)[1]
        if window:
            query["at"] = window
        found: list[dict[str, Any]] = await self.entries.find(query, ENTRY_FIELDS).to_list()
        return found

    async def ratings_of(self, request_ids: Iterable[str]) -> list[dict[str, Any]]:
        # Ratings carry their request id (one per request and volunteer); older ones were keyed on it.
        wanted = sorted({r for r in request_ids if r})
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            for query in ({"request_id": {"$in": batch}}, {"_id": {"$in": batch}}):
                found |= {str(r["_id"]): r for r in await self.ratings.find(query, RATING_FIELDS).to_list()}
        return list(found.values())

    async def ratings_for(self, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.ratings_of(str(e.get("request_id") or "") for e in entries if e.get("kind") == "credit")
