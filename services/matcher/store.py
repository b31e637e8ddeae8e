import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

FREE = ""  # a slot's holder when it holds no assignment


class MatcherStore:
    """The roster, requests and assignments as matching needs them.

    Every change that two replicas could race on is one compare-and-set on a scalar field of one
    document: the request's state and round, an assignment's state, a capacity slot's holder.
    """

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.volunteers = db["volunteers"]
        self.slots = db["slots"]
        self.requests = db["requests"]
        self.assignments = db["assignments"]

    async def ensure_indexes(self) -> None:
        await self.volunteers.create_index([("district", 1), ("skills", 1)])
        await self.slots.create_index([("volunteer_id", 1), ("holder", 1)])
        await self.slots.create_index("holder")
        await self.requests.create_index([("state", 1), ("lease", 1)])
        await self.assignments.create_index([("state", 1), ("expires", 1)])
        await self.assignments.create_index([("volunteer_id", 1), ("state", 1)])

    # roster

    async def save_volunteer(self, profile: dict[str, Any]) -> None:
        await self.volunteers.replace_one({"_id": profile["_id"]}, profile, upsert=True)
        for i in range(profile["capacity"]):
            try:
                await self.slots.insert_one(
                    {"_id": f"{profile['_id']}:{i}", "volunteer_id": profile["_id"], "i": i, "holder": FREE}
                )
            except DuplicateKeyError:
                pass
        # A lowered capacity gives up free slots at once; a held one goes when its assignment ends.
        await self.slots.delete_many({"volunteer_id": profile["_id"], "i": {"$gte": profile["capacity"]}, "holder": FREE})

    async def skilled_volunteers(self, district: str, service: str, category: str) -> list[dict[str, Any]]:
        return await self.volunteers.find({"district": district, "skills": {"$in": [service, category]}}).to_list()

    async def free_slots(self, volunteer_ids: list[str]) -> dict[str, int]:
        if not volunteer_ids:
            return {}
        pipeline = [
            {"$match": {"volunteer_id": {"$in": volunteer_ids}, "holder": FREE}},
            {"$group": {"_id": "$volunteer_id", "n": {"$sum": 1}}},
        ]
        return {row["_id"]: row["n"] async for row in await self.slots.aggregate(pipeline)}

    async def reserve(self, volunteer_id: str, assignment_id: str) -> bool:
        taken = await self.slots.find_one_and_update(
            {"volunteer_id": volunteer_id, "holder": FREE}, {"$set": {"holder": assignment_id}}
        )
        return taken is not None

    async def release(self, assignment_id: str) -> None:
        await self.slots.update_many({"holder": assignment_id}, {"$set": {"holder": FREE}})

    async def held(self) -> dict[str, list[str]]:
        holders: dict[str, list[str]] = {}
        async for slot in self.slots.find({}):
            if slot["holder"] != FREE:
                holders.setdefault(slot["volunteer_id"], []).append(slot["holder"])
        return holders

    # requests

    async def add_request(self, doc: dict[str, Any]) -> None:
        try:
            await self.requests.insert_one(doc)
        except DuplicateKeyError:
            pass  # a redelivered request.created

    async def request(self, request_id: str) -> dict[str, Any] | None:
        return await self.requests.find_one({"_id": request_id})

    async def claim(self, request_id: str, lease: float) -> dict[str, Any] | None:
        """Takes an open request for placing; only one replica wins each round."""
        return await self.requests.find_one_and_update(
            {"_id": request_id, "state": "open"},
            {"$set": {"state": "placing", "lease": time.time() + lease}, "$inc": {"round": 1}},
            return_document=ReturnDocument.AFTER,
        )

    async def move_request(self, request_id: str, expect: dict[str, Any], **changes: Any) -> bool:
        result = await self.requests.update_one({"_id": request_id, **expect}, {"$set": changes})
        return result.modified_count == 1

    async def stale_placements(self) -> list[dict[str, Any]]:
        return await self.requests.find({"state": "placing", "lease": {"$lt": time.time()}}).limit(200).to_list()

    async def waiting(self, older_than: float) -> list[dict[str, Any]]:
        return await self.requests.find({"state": "open", "opened": {"$lt": time.time() - older_than}}).limit(200).to_list()

    # assignments

    async def add_assignment(self, doc: dict[str, Any]) -> None:
        try:
            await self.assignments.insert_one(doc)
        except DuplicateKeyError:
            pass

    async def assignment(self, assignment_id: str) -> dict[str, Any] | None:
        return await self.assignments.find_one({"_id": assignment_id})

    async def move_assignment(self, assignment_id: str, expect: str, state: str, **changes: Any) -> bool:
        result = await self.assignments.update_one(
            {"_id": assignment_id, "state": expect}, {"$set": {"state": state, "changed": time.time(), **changes}}
        )
        return result.modified_count == 1

    async def lapsed_offers(self) -> list[dict[str, Any]]:
        return await self.assignments.find({"state": "offered", "expires": {"$lt": time.time()}}).limit(200).to_list()

    async def unannounced_offers(self, older_than: float) -> list[dict[str, Any]]:
        cutoff = time.time() - older_than
        return await self.assignments.find({"announced": False, "created": {"$lt": cutoff}}).limit(200).to_list()

    async def mark_announced(self, assignment_id: str) -> None:
        await self.assignments.update_one({"_id": assignment_id}, {"$set": {"announced": True}})

    async def open_assignments(self, volunteer_id: str) -> list[dict[str, Any]]:
        return await self.assignments.find(
            {"volunteer_id": volunteer_id, "state": {"$in": ["offered", "accepted"]}}
        ).sort("created", 1).to_list()

    async def live_assignments(self) -> list[dict[str, Any]]:
        return await self.assignments.find({"state": {"$in": ["offered", "accepted"]}}).to_list()
