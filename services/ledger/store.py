import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.ledger.handlers import service_key

Doc = dict[str, Any]
# Appends to one chain only collide with other appends to the same chain; a few hundred tries is a pile-up.
MAX_ATTEMPTS = 500


class LedgerStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        # Append-only. Each volunteer's entries are a hash chain; (volunteer_id, seq) is unique, so two
        # writers that read the same head cannot both append after it.
        self.entries = db["entries"]
        # Projections, rebuilt from the entries: balances per volunteer, proof of service per request.
        self.accounts = db["accounts"]
        self.proofs = db["proofs"]
        self.ratings = db["ratings"]
        self.rewards = db["rewards"]
        # Stock is a chain of movements per item, unique on (item_id, seq), for the same reason as entries.
        self.stock = db["stock_moves"]
        self.redemptions = db["redemptions"]
        # One document per (issuing district, volunteer there): how many of their hours came in so far.
        self.transfers = db["transfers"]
        self.keys = db["keys"]
        # Other districts' public keys an operator trusted by call (those from LEDGER_TRUSTED_KEYS are not
        # stored), and every change to them: who, when and why.
        self.trusted = db["trusted_keys"]
        self.trust_log = db["trust_log"]
        self.rule_sets = db["rule_sets"]
        # Signed chain heads, each also published as ledger.checkpoint for others to keep.
        self.checkpoints = db["checkpoints"]
        # One document: how far back the repair sweep has looked at every entry, so a start looks only after it.
        self.sweeps = db["sweeps"]
        # Where the bus's inbox recorded the hours.logged events handled before their proofs recorded the
        # points.earned they announced: read only for a repeat whose proof does not say.
        self.processed = db["processed"]
        # Whether ratings or proofs keyed on the request alone (from before re-dispatch) may exist: only
        # then does a miss on the request-and-volunteer key look again under the old one.
        self.legacy_keys = True

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("volunteer_id", 1), ("seq", 1)], unique=True)
        # nx-27017 answers a query from a single-field index only (on a compound index's leading field alone it
        # reads the whole collection, and so does every aggregate): each query below leads with one of these.
        await self.entries.create_index("volunteer_id")
        await self.proofs.create_index("volunteer_id")
        await self.stock.create_index("item_id")
        await self.redemptions.create_index("state")
        await self.redemptions.create_index("announced")
        await self.entries.create_index("posted")
        await self.entries.create_index("request_id")
        await self.entries.create_index([("district", 1), ("at", 1)])  # a community's month, for reports
        await self.ratings.create_index("volunteer_id")
        await self.ratings.create_index("request_id")
        await self.proofs.create_index("request_id")
        await self.proofs.create_index([("confirmed", 1), ("settled", 1), ("disputed", 1)])
        await self.stock.create_index([("item_id", 1), ("seq", 1)], unique=True)
        await self.redemptions.create_index([("state", 1), ("created", 1)])
        await self.redemptions.create_index("recheck")
        old = {"request_id": {"$exists": False}}
        self.legacy_keys = (await self.proofs.find_one(old, {"_id": 1}) is not None
                            or await self.ratings.find_one(old, {"_id": 1}) is not None)

    # --- chains -------------------------------------------------------------------------------------

    @staticmethod
    async def append(
        chain: AsyncCollection[Doc], key: Mapping[str, str], doc_id: str, build: Callable[[Doc | None], Doc],
        known_head: Doc | None = None, head_known: bool = False,
    ) -> tuple[Doc, bool]:
        """Appends build(head) to a chain, once: returns the stored document and whether this call wrote it.

        With `head_known`, `known_head` is a head the caller already holds (from the account's projection): it
        is tried first, without reading the chain; if it is not the head any more, the insert collides and the
        chain is read."""
        head, assumed = known_head, head_known
        for _ in range(MAX_ATTEMPTS):
            if not assumed:
                heads = await chain.find(dict(key)).sort("seq", -1).limit(1).to_list()
                head = heads[0] if heads else None
            try:
                doc = build(head)
            except Exception:
                # A refusal against today's head does not apply to a document stored earlier under this id.
                if (stored := await chain.find_one({"_id": doc_id})) is not None:
                    return stored, False
                if assumed:
                    assumed = False  # the projection may lag the chain: decide on the real head
                    continue
                raise
            assumed = False
            try:
                await chain.insert_one(doc)
                return doc, True
            except DuplicateKeyError:
                if (stored := await chain.find_one({"_id": doc_id})) is not None:
                    return stored, False  # written before, by a repeat or a racing twin
                continue  # another writer took this seq: read the head
        raise RuntimeError(f"could not append {doc_id} after {MAX_ATTEMPTS} attempts")

    async def append_entry(
        self, volunteer_id: str, entry_id: str, build: Callable[[Doc | None], Doc], account: Doc | None = None
    ) -> tuple[Doc, bool]:
        # The projection is the chain's head as far as it has been applied: seq 0 is the empty chain.
        head = None if account is None or account["seq"] == 0 else {
            "seq": account["seq"], "hash": account["head"], "balance_hours_cents": account["hours_cents"],
            "balance_points_cents": account["points_cents"],
        }
        return await self.append(self.entries, {"volunteer_id": volunteer_id}, entry_id, build, head,
                                 head_known=account is not None)

    async def entry(self, entry_id: str) -> Doc | None:
        return await self.entries.find_one({"_id": entry_id})

    async def entries_after(self, volunteer_id: str, seq: int, limit: int = 200) -> list[Doc]:
        cursor = self.entries.find({"volunteer_id": volunteer_id, "seq": {"$gt": seq}})
        return await cursor.sort("seq", 1).limit(limit).to_list()

    async def credit_for(self, request_id: str, volunteer_id: str) -> Doc | None:
        return await self.entries.find_one({"request_id": request_id, "volunteer_id": volunteer_id, "kind": "credit"})

    async def confirmation(self, request_id: str, volunteer_id: str) -> Doc | None:
        return await self.entries.find_one({"request_id": request_id, "volunteer_id": volunteer_id, "kind": "confirm"})

    # --- accounts -----------------------------------------------------------------------------------

    async def account(self, volunteer_id: str) -> Doc | None:
        return await self.accounts.find_one({"_id": volunteer_id})

    async def ensure_account(self, volunteer_id: str) -> Doc:
        if (found := await self.account(volunteer_id)) is not None:
            return found
        # Inserted whole and never upserted: nx-27017 ignores $setOnInsert.
        try:
            await self.accounts.insert_one({
                "_id": volunteer_id, "seq": 0, "head": "", "hours_cents": 0, "points_cents": 0, "services": 0,
                "district": "", "team": "", "first_seen": time.time(),
            })
        except DuplicateKeyError:
            pass
        found = await self.account(volunteer_id)
        assert found is not None  # accounts are never deleted
        return found

    async def register(self, volunteer_id: str, profile: Mapping[str, Any]) -> Doc:
        await self.ensure_account(volunteer_id)
        found = await self.accounts.find_one_and_update(
            {"_id": volunteer_id}, {"$set": dict(profile)}, return_document=ReturnDocument.AFTER)
        assert found is not None  # accounts are never deleted
        return found

    async def adopt_district(self, volunteer_id: str, district: str) -> None:
        # Only while none is known: volunteer.registered, whenever it comes, has the last word.
        await self.accounts.update_one({"_id": volunteer_id, "district": ""}, {"$set": {"district": district}})

    async def project(self, stored: Mapping[str, Any]) -> Doc | None:
        """Moves the account from the entry before this one to this one; the account after, or None when it
        was not at the entry before."""
        return await self.accounts.find_one_and_update(
            {"_id": stored["volunteer_id"], "seq": stored["seq"] - 1},
            {
                "$set": {"seq": stored["seq"], "head": stored["hash"], "hours_cents": stored["balance_hours_cents"],
                         "points_cents": stored["balance_points_cents"]},
                "$inc": {"services": 1 if stored["kind"] == "credit" else 0},
            },
            return_document=ReturnDocument.AFTER,
        )

    async def chain_heads(self, since: float | None = None) -> dict[str, int]:
        """The last seq of each volunteer's chain (of those with an entry posted since `since`)."""
        match: Doc = {} if since is None else {"posted": {"$gt": since}}
        heads: dict[str, int] = {}
        async for row in self.entries.find(match, {"volunteer_id": 1, "seq": 1}):
            heads[row["volunteer_id"]] = max(heads.get(row["volunteer_id"], 0), int(row["seq"] or 0))
        return heads

    async def swept_through(self) -> float | None:
        """Every entry posted up to this time was seen by a sweep; None before any sweep stored it."""
        found = await self.sweeps.find_one({"_id": "projections"})
        return float(found["through"]) if found else None

    async def note_swept(self, through: float) -> None:
        # Only ever forward: replicas sweep at their own pace, and each one's mark is one it has covered.
        moved = await self.sweeps.update_one(
            {"_id": "projections", "through": {"$lt": through}}, {"$set": {"through": through, "at": time.time()}})
        if moved.matched_count == 0:
            try:
                await self.sweeps.insert_one({"_id": "projections", "through": through, "at": time.time()})
            except DuplicateKeyError:
                pass  # stored already, at this mark or later

    async def all_accounts(self) -> dict[str, Doc]:
        return {doc["_id"]: doc async for doc in self.accounts.find({})}

    # --- proof of service ---------------------------------------------------------------------------

    async def note_proof(
        self, request_id: str, volunteer_id: str, facts: Mapping[str, Any], first: bool = False
    ) -> Doc:
        """Records what is now known about a volunteer's service on a request, and returns the proof after it;
        every fact only ever turns on, so order does not matter.

        `first` says the proof is most likely not stored yet (the credit comes first): it is inserted without
        looking, and updated only when that collides."""
        key = service_key(request_id, volunteer_id)
        new = {
            "_id": key, "request_id": request_id, "volunteer_id": volunteer_id, "credited": False,
            "confirmed": False, "disputed": False, "settled": False, "hours_cents": 0, "credited_at": 0.0, **facts,
        }
        if first and not self.legacy_keys:
            try:
                await self.proofs.insert_one(new)
                return new
            except DuplicateKeyError:
                pass
        if (found := await self.proofs.find_one_and_update(
                {"_id": key}, {"$set": dict(facts)}, return_document=ReturnDocument.AFTER)) is not None:
            return found
        if self.legacy_keys and (found := await self.proofs.find_one_and_update(
                {"_id": request_id, "volunteer_id": volunteer_id}, {"$set": dict(facts)},
                return_document=ReturnDocument.AFTER)) is not None:
            return found
        try:
            await self.proofs.insert_one(new)
            return new
        except DuplicateKeyError:  # inserted meanwhile
            found = await self.proofs.find_one_and_update(
                {"_id": key}, {"$set": dict(facts)}, return_document=ReturnDocument.AFTER)
            assert found is not None  # proofs are never deleted
            return found

    async def handled_before(self, consumer: str, event_id: str) -> bool:
        return await self.processed.find_one({"_id": f"{consumer}:{event_id}"}, {"_id": 1}) is not None

    async def proof(self, request_id: str, volunteer_id: str) -> Doc | None:
        found = await self.proofs.find_one({"_id": service_key(request_id, volunteer_id)})
        if found is None and self.legacy_keys:  # kept on the request alone before re-dispatch existed
            found = await self.proofs.find_one({"_id": request_id, "volunteer_id": volunteer_id})
        return found

    async def proofs_of(self, request_id: str) -> list[Doc]:
        """Every volunteer's proof of service on a request, earliest credit first."""
        found = await self.proofs.find({"request_id": request_id}).to_list()
        if self.legacy_keys and (before := await self.proofs.find_one({"_id": request_id})) is not None:
            found.append(before)
        return sorted(found, key=lambda p: (p["credited_at"], p["_id"]))

    async def review(self, overdue_before: float, limit: int) -> list[Doc]:
        open_items = {"confirmed": False, "settled": False}
        disputed = await self.proofs.find({**open_items, "disputed": True}).limit(limit).to_list()
        overdue = await self.proofs.find(
            {**open_items, "disputed": False, "credited": True, "credited_at": {"$lt": overdue_before}}
        ).sort("credited_at", 1).limit(limit).to_list()
        return (disputed + overdue)[:limit]

    async def confirmed_hours(self, volunteer_id: str) -> int:
        proofs = self.proofs.find({"volunteer_id": volunteer_id}, {"confirmed": 1, "hours_cents": 1})
        return sum([int(p.get("hours_cents") or 0) async for p in proofs if p.get("confirmed") is True])

    # --- ratings ------------------------------------------------------------------------------------

    async def add_rating(self, doc: Doc) -> Doc | None:
        """Records the rating unless one of the request and volunteer is stored: the first one recorded stands,
        and is returned (None if it cannot be read back)."""
        if self.legacy_keys and (stored := await self.rating(doc["request_id"], doc["volunteer_id"])) is not None:
            return stored
        try:
            await self.ratings.insert_one(doc)
            return doc
        except DuplicateKeyError:  # the _id is the request and volunteer
            return await self.rating(doc["request_id"], doc["volunteer_id"])

    async def rating(self, request_id: str, volunteer_id: str) -> Doc | None:
        found = await self.ratings.find_one({"_id": service_key(request_id, volunteer_id)})
        if found is None and self.legacy_keys:  # keyed on the request alone before re-dispatch existed
            found = await self.ratings.find_one({"_id": request_id, "volunteer_id": volunteer_id})
        return found

    async def rating_totals(self, volunteer_id: str) -> tuple[int, int]:
        """(number of ratings, sum of their stars)."""
        stars = [int(r.get("stars") or 0) async for r in self.ratings.find({"volunteer_id": volunteer_id}, {"stars": 1})]
        return len(stars), sum(stars)

    # --- the redemption catalogue and its stock -----------------------------------------------------

    async def put_reward(self, doc: Doc) -> None:
        await self.rewards.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def reward(self, item_id: str) -> Doc | None:
        return await self.rewards.find_one({"_id": item_id})

    async def rewards_list(self, include_inactive: bool) -> list[Doc]:
        return await self.rewards.find({} if include_inactive else {"active": True}).sort("_id", 1).to_list()

    async def stock_on_hand(self, item_id: str) -> int:
        heads = await self.stock.find({"item_id": item_id}).sort("seq", -1).limit(1).to_list()
        return int(heads[0]["stock_after"]) if heads else 0

    async def move_stock(self, item_id: str, move_id: str, build: Callable[[Doc | None], Doc]) -> Doc:
        stored, _ = await self.append(self.stock, {"item_id": item_id}, move_id, build)
        return stored

    async def stock_move(self, move_id: str) -> Doc | None:
        return await self.stock.find_one({"_id": move_id})

    async def stock_chains(self) -> AsyncIterator[Doc]:
        async for move in self.stock.find({}).sort([("item_id", 1), ("seq", 1)]):
            yield move

    # --- redemptions --------------------------------------------------------------------------------

    async def add_redemption(self, doc: Doc) -> Doc:
        """Stores a new redemption; returns the one already stored under its id instead, if any."""
        try:
            await self.redemptions.insert_one(doc)
            return doc
        except DuplicateKeyError:
            stored = await self.redemption(doc["_id"])
            assert stored is not None
            return stored

    async def redemption(self, redemption_id: str) -> Doc | None:
        return await self.redemptions.find_one({"_id": redemption_id})

    async def decide_redemption(self, redemption_id: str, state: str, **fields: Any) -> bool:
        """pending -> done or refused, once: of two attempts that race, exactly one decides."""
        result = await self.redemptions.update_one(
            {"_id": redemption_id, "state": "pending"}, {"$set": {"state": state, **fields}}
        )
        return result.modified_count == 1

    async def mark_redemption(self, redemption_id: str, **fields: Any) -> None:
        await self.redemptions.update_one({"_id": redemption_id}, {"$set": fields})

    async def unfinished_redemptions(self, created_before: float) -> list[Doc]:
        # Equality on what only an unfinished redemption has; ages are judged here, since a range on created
        # would be answered from its index and read every older redemption.
        unfinished = {doc["_id"]: doc for doc in await self.redemptions.find({"state": "pending"}).to_list()}
        unfinished.update({doc["_id"]: doc for doc in await self.redemptions.find({"announced": False}).to_list()})
        pending = [d for d in unfinished.values() if d["state"] == "pending" and d["created"] < created_before]
        to_undo = [d for d in unfinished.values() if d["state"] == "refused" and d.get("undone") is False]
        unannounced = [d for d in unfinished.values() if d["state"] == "done" and d["created"] < created_before]
        return pending + to_undo + unannounced

    async def redemptions_to_recheck(self, due_by: float) -> list[Doc]:
        return await self.redemptions.find({"recheck": True, "recheck_until": {"$lt": due_by}}).to_list()

    async def all_redemptions(self) -> dict[str, Doc]:
        return {doc["_id"]: doc async for doc in self.redemptions.find({})}

    # --- statements from other districts ------------------------------------------------------------

    async def transfer(self, key: str) -> Doc:
        """What came in so far; a blank, not yet stored, when nothing did."""
        found = await self.transfers.find_one({"_id": key})
        return found or {"_id": key, "hours_cents": 0, "statement_id": "", "delta_cents": 0, "volunteer_id": "",
                         "unstored": True}

    async def advance_transfer(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
        if before.get("unstored"):
            try:
                await self.transfers.insert_one({"_id": before["_id"], **after})
                return True
            except DuplicateKeyError:
                return False  # another import claimed it first: read it again
        result = await self.transfers.update_one(
            {"_id": before["_id"], "hours_cents": before["hours_cents"], "statement_id": before["statement_id"]},
            {"$set": dict(after)},
        )
        return result.modified_count == 1

    # --- keys and rules -----------------------------------------------------------------------------

    async def signing_key(self, generate: Callable[[], bytes]) -> bytes:
        """This district's private key, made on first start; every replica then reads the same one."""
        try:
            await self.keys.insert_one({"_id": "signing", "pem": generate().decode("ascii"), "created": time.time()})
        except DuplicateKeyError:
            pass
        found = await self.keys.find_one({"_id": "signing"})
        assert found is not None
        return str(found["pem"]).encode("ascii")

    async def trusted_key(self, district: str) -> Doc | None:
        return await self.trusted.find_one({"_id": district})

    async def trusted_keys(self) -> list[Doc]:
        return await self.trusted.find({}).sort("_id", 1).to_list()

    async def put_trusted_key(self, doc: Doc) -> None:
        try:
            await self.trusted.insert_one(doc)
        except DuplicateKeyError:
            await self.trusted.replace_one({"_id": doc["_id"]}, doc)

    async def remove_trusted_key(self, stored: Doc) -> bool:
        """Removes the key as it was read; false if another call changed or removed it meanwhile."""
        result = await self.trusted.delete_one({"_id": stored["_id"], "key_id": stored["key_id"]})
        return result.deleted_count == 1

    async def log_trust(self, change: Doc) -> None:
        await self.trust_log.insert_one(change)

    async def record_rules(self, version: str, fingerprint: str, content: Mapping[str, Any]) -> str:
        """Returns the fingerprint stored for this version: the first one seen is the version's content."""
        try:
            await self.rule_sets.insert_one(
                {"_id": version, "fingerprint": fingerprint, "content": dict(content), "first_used": time.time()}
            )
        except DuplicateKeyError:
            pass
        found = await self.rule_sets.find_one({"_id": version})
        assert found is not None
        return str(found["fingerprint"])

    # --- summaries ----------------------------------------------------------------------------------

    async def totals_by_kind(self, volunteer_id: str, through_seq: int) -> dict[str, dict[str, int]]:
        return await self._volunteer_totals(volunteer_id, through_seq, "kind", lambda entry: True)

    async def credits_by_category(self, volunteer_id: str, through_seq: int) -> dict[str, dict[str, int]]:
        return await self._volunteer_totals(volunteer_id, through_seq, "category", lambda e: e.get("kind") == "credit")

    async def _volunteer_totals(
        self, volunteer_id: str, through_seq: int, by: str, keep: Callable[[Doc], bool]
    ) -> dict[str, dict[str, int]]:
        # Summed here from the volunteer's own entries: nx-27017 runs an aggregate over the whole collection.
        totals: dict[str, dict[str, int]] = {}
        fields = {"seq": 1, "kind": 1, "category": 1, "hours_cents": 1, "points_cents": 1}
        async for entry in self.entries.find({"volunteer_id": volunteer_id}, fields):
            if entry["seq"] > through_seq or not keep(entry):
                continue
            row = totals.setdefault(str(entry.get(by)), {"hours_cents": 0, "points_cents": 0, "entries": 0})
            row["hours_cents"] += int(entry.get("hours_cents") or 0)
            row["points_cents"] += int(entry.get("points_cents") or 0)
            row["entries"] += 1
        return totals

    async def totals_by_volunteer(self) -> dict[str, dict[str, int]]:
        rows = await self._group(self.entries, {}, self._totals("$volunteer_id"))
        return {row.pop("_id"): self._ints(row) for row in rows}

    # --- checkpoints

    async def add_checkpoint(self, doc: Doc) -> None:
        try:
            await self.checkpoints.insert_one(doc)
        except DuplicateKeyError:
            pass  # the same heads, signed by another replica or an earlier attempt

    async def has_checkpoint(self, checkpoint_id: str) -> bool:
        return await self.checkpoints.find_one({"_id": checkpoint_id}, {"_id": 1}) is not None

    async def all_checkpoints(self) -> dict[str, Doc]:
        return {doc["_id"]: doc async for doc in self.checkpoints.find({})}

    async def all_entries(self) -> AsyncIterator[Doc]:
        async for doc in self.entries.find({}).sort([("volunteer_id", 1), ("seq", 1)]):
            yield doc

    @staticmethod
    def _totals(key: str) -> Doc:
        return {"_id": key, "hours_cents": {"$sum": "$hours_cents"}, "points_cents": {"$sum": "$points_cents"},
                "entries": {"$sum": 1}}

    @staticmethod
    def _ints(row: Doc) -> dict[str, int]:
        # nx-27017 sums a group with no such field to null where MongoDB gives 0.
        return {k: int(v or 0) for k, v in row.items()}

    @staticmethod
    async def _group(collection: AsyncCollection[Doc], match: Doc, group: Doc) -> list[Doc]:
        cursor = await collection.aggregate([{"$match": match}, {"$group": group}])
        rows: list[Doc] = await cursor.to_list()
        return rows
