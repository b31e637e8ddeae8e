import base64
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]


class FeedStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        # The feed's own secret: public references are computed with it, so without it none leads back.
        self.keys = db["feed_keys"]

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
