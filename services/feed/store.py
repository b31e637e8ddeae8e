import base64
import time
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

Doc = dict[str, Any]
DUPLICATE_KEY = 11000


class FeedStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        # The feed's own secret: public references are computed with it, so without it none leads back.
        self.keys = db["feed_keys"]
        # The internal events the feed has republished, as "<consumer>:<event id>".
        self.published = db["processed"]

    async def secret(self, proposed: bytes) -> bytes:
        """The feed's secret; `proposed` becomes it when there is none yet (replicas agree on the first)."""
        try:
            await self.keys.insert_one({"_id": "public-refs", "key": base64.b64encode(proposed).decode(),
                                        "created": time.time()})
        except DuplicateKeyError:
            pass
        stored = await self.keys.find_one({"_id": "public-refs"})
        assert stored is not None
        return base64.b64decode(stored["key"])

    async def was_published(self, key: str) -> bool:
        return await self.published.find_one({"_id": key}) is not None

    async def record(self, keys: Sequence[str]) -> None:
        """Stores the keys in one command; one stored already (a repeat's) is no error."""
        now = time.time()
        try:
            await self.published.insert_many([{"_id": key, "at": now} for key in dict.fromkeys(keys)], ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != DUPLICATE_KEY for error in exc.details.get("writeErrors", [])):
                raise
