from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]


class IdentityStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.operators = db["operators"]  # _id: user name; argon2 hash, role, district
        self.devices = db["devices"]  # _id: device id; argon2 hash of its secret, district, grid
        self.volunteers = db["volunteers"]  # _id: volunteer id; district, active (from intake's events)
        self.codes = db["codes"]  # _id: code_ref; one-time codes, the text only until the notifier took it
        self.keys = db["keys"]  # _id: "signing"; the Ed25519 key every token is signed with

    async def ensure_indexes(self) -> None:
        await self.codes.create_index([("volunteer_id", 1), ("created", -1)])

    async def signing_key(self, new_pem: str) -> str:
        """The stored key; the first replica to start stores `new_pem`, and every replica then uses it."""
        try:
            await self.keys.insert_one({"_id": "signing", "private_pem": new_pem})
        except DuplicateKeyError:
            pass
        doc = await self.keys.find_one({"_id": "signing"})
        assert doc is not None
        return str(doc["private_pem"])

    async def operator(self, user: str) -> Doc | None:
        return await self.operators.find_one({"_id": user})

    async def put_operator(self, user: str, doc: Doc) -> Doc:
        found = await self.operators.find_one_and_update(
            {"_id": user}, {"$set": doc}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert found is not None
        return found

    async def add_operator_once(self, user: str, doc: Doc) -> None:
        try:
            await self.operators.insert_one({"_id": user, **doc})
        except DuplicateKeyError:
            pass

    async def device(self, device_id: str) -> Doc | None:
        return await self.devices.find_one({"_id": device_id})

    async def put_device(self, device_id: str, doc: Doc) -> None:
        await self.devices.replace_one({"_id": device_id}, {"_id": device_id, **doc}, upsert=True)

    async def volunteer(self, volunteer_id: str) -> Doc | None:
        return await self.volunteers.find_one({"_id": volunteer_id})

    async def put_volunteer(self, volunteer_id: str, district: str, active: bool) -> None:
        await self.volunteers.update_one(
            {"_id": volunteer_id}, {"$set": {"district": district, "active": active}}, upsert=True
        )

    async def codes_since(self, volunteer_id: str, since: float) -> int:
        return await self.codes.count_documents({"volunteer_id": volunteer_id, "created": {"$gte": since}})

    async def add_code(self, doc: Doc) -> None:
        await self.codes.insert_one(doc)

    async def code(self, code_ref: str) -> Doc | None:
        return await self.codes.find_one({"_id": code_ref})

    async def take_code_text(self, code_ref: str) -> Doc | None:
        """The code with its text, removing the text: the notifier gets it once."""
        return await self.codes.find_one_and_update(
            {"_id": code_ref, "text": {"$exists": True}}, {"$unset": {"text": ""}},
            return_document=ReturnDocument.BEFORE,
        )

    async def count_try(self, code_ref: str) -> Doc | None:
        return await self.codes.find_one_and_update(
            {"_id": code_ref}, {"$inc": {"tries": 1}}, return_document=ReturnDocument.AFTER
        )

    async def use_code(self, code_ref: str) -> bool:
        """Marks the code used; False when another attempt used it first."""
        result = await self.codes.update_one({"_id": code_ref, "used": False}, {"$set": {"used": True}})
        return result.modified_count == 1
