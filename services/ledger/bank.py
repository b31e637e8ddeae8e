"""The civilization bank's steps. Each is idempotent, so a retry, a redelivery or another replica may repeat it."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from contracts import ApiError, Envelope
from contracts.calls import (
    AdjustBalance,
    Balance,
    ConfirmService,
    DistrustDistrict,
    ImportStatement,
    PutRewardItem,
    Redeem,
    ReviewItem,
    RewardItem,
    SignedStatement,
    Statement,
    TrustDistrict,
    TrustedKey,
)
from contracts.envelope import derived_id
from contracts.events import HoursLogged, RequestRated, VolunteerRegistered
from services.common.bus import Outbox
from services.common.memory import Recent
from services.ledger import chain, checkpoints, handlers, signing
from services.ledger.config import LedgerSettings
from services.ledger.rules import price
from services.ledger.store import Doc, LedgerStore

log = logging.getLogger("linli.ledger")

MARK_EVERY = 60.0  # seconds of sweeps between two writes of the sweep mark


def not_found(what: str, **details: Any) -> ApiError:
    return ApiError("not_found", f"no {what} with this id", details)


class Bank:
    def __init__(self, store: LedgerStore, outbox: Outbox, settings: LedgerSettings) -> None:
        self.store = store
        self.outbox = outbox
        self.settings = settings
        self.rules = settings.rules
        self.key: Ed25519PrivateKey | None = None
        # How long after a refusal the sweep looks, once, for a late step of a racing attempt.
        self.recheck_window = max(300.0, 10 * settings.redeem_timeout)
        # Accounts as this replica last saw them: a guess at the chain's head that the append checks (an entry
        # under a seq already taken collides, and the head is read), and a profile at most account_memory old.
        self.recent: Recent[str, Doc] = Recent(settings.account_memory)
        self.mark_stored: float | None = None  # the sweep mark this replica stored last

    async def start(self) -> None:
        await self.store.ensure_indexes()
        stored = await self.store.record_rules(self.rules.version, self.rules.fingerprint(), self.rules.content())
        if stored != self.rules.fingerprint():
            raise ValueError(
                f"points rules version {self.rules.version!r} was used before with other content; "
                "give the changed rules a new version"
            )
        if self.settings.signing_key_path:
            with open(self.settings.signing_key_path, "rb") as pem:
                self.key = signing.load_private(pem.read())
        else:
            self.key = signing.load_private(await self.store.signing_key(signing.new_private_pem))

    # --- posting entries ----------------------------------------------------------------------------

    async def post(self, body: Doc, guard: Callable[[Doc], None] | None = None, account: Doc | None = None) -> Doc:
        stored, _, _ = await self.posted(body, guard, account)
        return stored

    async def posted(
        self, body: Doc, guard: Callable[[Doc], None] | None = None, account: Doc | None = None,
        proof: bool = True,
    ) -> tuple[Doc, Doc, bool]:
        """Appends an entry to its volunteer's chain once, then brings the projections up to it: the stored
        entry, the account after it, and whether this call appended it.

        `account` is the volunteer's account as the caller last read it: its projection is the chain's head
        unless another writer has moved on, so the append need not read the chain first. Without `proof`, the
        caller records the entry's proof of service itself."""

        def build(head: Doc | None) -> Doc:
            linked = chain.link(body, head)
            if guard:
                guard(linked)
            return linked

        stored, wrote = await self.store.append_entry(body["volunteer_id"], body["_id"], build, account)
        if wrote and account is not None and stored["seq"] == account["seq"] + 1:
            # The usual case: this entry is the only one the projection has not seen.
            if (moved := await self.apply(stored, proof)) is not None:
                return stored, self.remember(moved), wrote
        return stored, self.remember(await self.roll_forward(body["volunteer_id"])), wrote

    async def apply(self, stored: Doc, proof: bool = True) -> Doc | None:
        """Applies one entry to the projections; the account after, or None when it was not just before it."""
        # Proof first: it is idempotent, and the account's seq says what has been applied.
        if proof and stored["request_id"] and (facts := handlers.proof_facts(stored)):
            await self.store.note_proof(stored["request_id"], stored["volunteer_id"], facts)
        return await self.store.project(stored)

    def remember(self, account: Doc) -> Doc:
        return self.recent.put(account["_id"], account)

    async def head_of(self, volunteer_id: str) -> Doc:
        """The volunteer's account, from memory when this replica saw it lately."""
        if (recent := self.recent.fresh(volunteer_id)) is not None:
            return recent
        return self.remember(await self.store.ensure_account(volunteer_id))

    async def roll_forward(self, volunteer_id: str, account: Doc | None = None) -> Doc:
        """Applies to the projections every entry they have not seen; repairs what a crash left half done."""
        account = account or await self.store.ensure_account(volunteer_id)
        while True:
            pending = await self.store.entries_after(volunteer_id, account["seq"])
            if not pending:
                return account
            for stored in pending:
                if (moved := await self.apply(stored)) is None:
                    # Another writer moved the account on; read it again.
                    account = await self.store.ensure_account(volunteer_id)
                    break
                account = moved  # what find_one_and_update returned: no need to read it again

    # --- events -------------------------------------------------------------------------------------

    async def earn(self, event: Envelope[HoursLogged]) -> None:
        """Credits the hours and announces them in points.earned, once.

        No inbox: the entries' ids derive from the event id, so a repeat finds them stored; the proof of service,
        written after the announcement is in the outbox, names it, so a repeat does not announce it again."""
        credit, bonuses, first = await self.credit(event)
        earned = handlers.earned_event(credit, bonuses)
        if not first and await self.announced(event, credit, earned.id):
            return
        entries = await self.outbox.store([earned])
        if credit["request_id"]:
            facts = {**handlers.proof_facts(credit), "announced": earned.id}
            await self.store.note_proof(credit["request_id"], credit["volunteer_id"], facts, first=True)
        for entry in entries:
            await self.outbox.publish(entry)

    async def announced(self, event: Envelope[HoursLogged], credit: Doc, earned_id: str) -> bool:
        proof = await self.store.proof(credit["request_id"], credit["volunteer_id"]) if credit["request_id"] else None
        if proof is not None and proof.get("announced") == earned_id:
            return True
        return await self.store.handled_before("ledger-hours", event.id)  # recorded by the inbox used before

    async def credit(self, event: Envelope[HoursLogged]) -> tuple[Doc, list[Doc], bool]:
        """The credit and bonus entries of the hours, and whether this call appended the credit."""
        data = event.data
        account = await self.head_of(data.volunteer_id)
        if not account["district"]:
            await self.store.adopt_district(data.volunteer_id, event.district)
        pricing = price(self.rules, data.hours, data.category, data.urgency, handlers.done_at(event))
        credit, *bonuses = handlers.credit_entries(event, pricing, self.rules, account, time.time())
        # The credit's proof of service is written by earn(), with the announcement.
        stored, account, first = await self.posted(credit, account=account, proof=False)
        added = []
        for body in bonuses:
            entry, account, _ = await self.posted(body, account=account)
            added.append(entry)
        return stored, added, first

    async def rated(self, event: Envelope[RequestRated]) -> None:
        data = event.data
        first = await self.store.add_rating(handlers.rating(event))
        if first is None or first["event_id"] != event.id:
            log.warning("a second rating %s of request %s by volunteer %s is ignored", event.id, data.request_id,
                        data.volunteer_id)
            return
        about = {"stars": data.stars, "done": data.done, "comment": data.comment}
        if handlers.disputes(data.stars, data.done):
            await self.store.note_proof(data.request_id, data.volunteer_id, {**about, "disputed": True})
            return
        # Confirmed with the rating's facts in one write, before the confirm entry: a crash in between leaves the
        # event unacknowledged, and its redelivery appends the entry.
        proof = await self.store.note_proof(
            data.request_id, data.volunteer_id, {**about, "confirmed": True, "volunteer_id": data.volunteer_id})
        # The proof holds what the confirmation copies from the credit; one from before it did is read from the entry.
        credit = proof if "category" in proof else (
            await self.store.credit_for(data.request_id, data.volunteer_id) if proof.get("credited") else None)
        account = await self.head_of(data.volunteer_id)
        for body in handlers.rating_entries(event, self.rules, account, credit, time.time()):
            _, account, _ = await self.posted(body, account=account, proof=False)

    async def registered(self, event: Envelope[VolunteerRegistered]) -> None:
        self.remember(await self.store.register(event.data.volunteer_id, handlers.account(event)))

    # --- calls --------------------------------------------------------------------------------------

    async def balance(self, volunteer_id: str) -> Balance:
        if (account := await self.store.account(volunteer_id)) is None:
            raise not_found("volunteer", volunteer_id=volunteer_id)
        projected = await self.roll_forward(volunteer_id, account)  # read-repair after a crash
        ratings, stars = await self.store.rating_totals(volunteer_id)
        return handlers.balance_view(volunteer_id, projected, ratings, stars)

    # --- whose district a call acts in, for the authorization checked before it ---------------------

    async def district_of(self, volunteer_id: str) -> str | None:
        account = await self.store.account(volunteer_id)
        return account.get("district") or None if account else None

    async def districts_of_request(self, request_id: str, volunteer_id: str) -> set[str]:
        proofs = [p for p in await self.store.proofs_of(request_id) if volunteer_id in ("", p["volunteer_id"])]
        return {d for p in proofs if (d := await self.district_of(p["volunteer_id"]))}

    async def adjust(self, call: AdjustBalance) -> Doc:
        account = await self.store.account(call.volunteer_id)
        if account is None:
            raise not_found("volunteer", volunteer_id=call.volunteer_id)
        if call.request_id and await self.store.proof(call.request_id, call.volunteer_id) is None:
            raise ApiError("not_found", "no hours of this volunteer for this request",
                           {"request_id": call.request_id, "volunteer_id": call.volunteer_id})
        body = handlers.adjustment(call, account, time.time())
        if (stored := await self.store.entry(body["_id"])) is None:
            stored = await self.post(body, guard=handlers.require_cover, account=account)
        handlers.same_adjustment(stored, call)  # refused before any write, unless a racing twin wrote it
        return stored

    async def confirm(self, call: ConfirmService) -> Doc:
        proofs = [p for p in await self.store.proofs_of(call.request_id)
                  if p["credited"] and call.volunteer_id in ("", p["volunteer_id"])]
        if not proofs:
            raise ApiError("not_found", "no hours credited for this request",
                           {"request_id": call.request_id, "volunteer_id": call.volunteer_id})
        if len(proofs) > 1:
            raise ApiError("volunteer_required", "more than one volunteer served this request: name the volunteer",
                           {"request_id": call.request_id, "volunteers": [p["volunteer_id"] for p in proofs]})
        volunteer_id = proofs[0]["volunteer_id"]
        if proofs[0]["confirmed"] and (done := await self.store.confirmation(call.request_id, volunteer_id)):
            return done
        account = await self.store.ensure_account(volunteer_id)
        credit = await self.store.credit_for(call.request_id, volunteer_id)
        return await self.post(handlers.operator_confirm(
            call.request_id, volunteer_id, call.operator, call.reason, account, credit, time.time()
        ), account=account)

    async def review(self, limit: int) -> list[ReviewItem]:
        proofs = await self.store.review(time.time() - self.settings.confirm_deadline, limit)
        return [handlers.review_item(proof) for proof in proofs]

    # --- the redemption catalogue -------------------------------------------------------------------

    async def put_reward(self, call: PutRewardItem) -> RewardItem:
        handlers.check_reward(call)  # refused before the item is written, not half way
        item = {
            "_id": call.item_id, "name": call.name, "kind": call.kind, "points_cents": handlers.to_cents(call.points),
            "limited": call.stock is not None, "active": call.active, "description": call.description,
            "updated": time.time(),
        }
        await self.store.put_reward(item)
        if (count := call.stock) is not None:
            # The operator's count of what is on hand; the movement keeps the history of the stock.
            move_id = derived_id("stock.count", call.item_id, str(time.time_ns()))
            await self.store.move_stock(call.item_id, move_id, lambda head: handlers.stock_move(
                call.item_id, move_id, count - (head["stock_after"] if head else 0), head, "catalog_put", time.time(),
            ))
        return await self.reward_view(item)

    async def reward_view(self, item: Doc) -> RewardItem:
        return handlers.reward_item(item, await self.store.stock_on_hand(item["_id"]) if item["limited"] else None)

    async def rewards(self, include_inactive: bool) -> list[RewardItem]:
        return [await self.reward_view(item) for item in await self.store.rewards_list(include_inactive)]

    # --- redemptions --------------------------------------------------------------------------------
    # Stock and points live in different documents, and nx-27017 has no transactions. So a redemption
    # is a record created first (pending), then two steps that each append to a chain under an id
    # derived from the redemption (so a repeat finds its own step): spend the points, then take the
    # stock. Then one decision pending -> done | refused that only one attempt can make. A refused
    # redemption gives back whatever it or a racing attempt took; the sweep finishes what a crash left
    # pending.

    async def redeem(self, call: Redeem) -> Doc:
        item = await self.store.reward(call.item_id)
        if item is None:
            raise not_found("catalogue item", item_id=call.item_id)
        if not item["active"]:
            raise ApiError("item_unavailable", "this item cannot be redeemed now", {"item_id": call.item_id})
        if await self.store.account(call.volunteer_id) is None:
            raise not_found("volunteer", volunteer_id=call.volunteer_id)
        if (red := await self.store.redemption(handlers.redemption_id(call.idempotency_key))) is None:
            # What can be seen to fail now is refused before anything is written; only a redemption that
            # loses a race after this point is recorded as refused (with what it took given back).
            projected = await self.roll_forward(call.volunteer_id)
            on_hand = await self.store.stock_on_hand(call.item_id) if item["limited"] else None
            handlers.check_redeemable(call, item, projected, on_hand)
            red = await self.store.add_redemption(handlers.new_redemption(call, item, time.time()))
        handlers.same_redemption(red, call)
        red = await self.drive(red)
        if red["state"] == "refused":
            raise handlers.refused(red)
        return red

    async def drive(self, red: Doc) -> Doc:
        if red["state"] == "pending":
            red = await self.attempt(red)
        if red["state"] == "refused":
            # Every time, not only once: a racing attempt may have written a step after the decision,
            # and undoing is idempotent (the return and the refund have ids derived from the redemption).
            await self.undo(red)
            red = {**red, "undone": True}
        if red["state"] == "done" and not red["announced"]:
            account = await self.store.ensure_account(red["volunteer_id"])
            await self.outbox.send([handlers.redeemed_event(red, self.settings.district or account["district"])])
            await self.store.mark_redemption(red["_id"], announced=True)
        return red

    async def attempt(self, red: Doc) -> Doc:
        # Points are spent before stock is taken, so stock is only ever held by a redemption already
        # paid for: a volunteer whose points cannot cover every redemption they fired at once is
        # refused without holding stock that someone else could have had meanwhile.
        rid, item_id, now = red["_id"], red["item_id"], time.time()
        take_id = derived_id("stock.take", rid)
        if (red["limited"] and await self.store.stock_move(take_id) is None
                and await self.store.stock_on_hand(item_id) < red["quantity"]):
            return await self.decide(rid, "refused", reason="out_of_stock")
        account = await self.store.ensure_account(red["volunteer_id"])
        try:
            spent = await self.post(handlers.spend(red, account, now), guard=handlers.require_cover, account=account)
        except ApiError as exc:
            if exc.code != "insufficient_points":
                raise
            return await self.decide(rid, "refused", reason="insufficient_points")
        if (current := await self.store.redemption(rid)) is None or current["state"] != "pending":
            return current or red
        if red["limited"]:
            take = await self.store.move_stock(item_id, take_id, lambda head: handlers.stock_move(
                item_id, take_id, -red["quantity"], head, rid, now))
            if take["refused"]:
                return await self.decide(rid, "refused", reason="out_of_stock")  # drive() refunds the points
        return await self.decide(rid, "done", entry_id=spent["_id"],
                                 balance_points_cents=spent["balance_points_cents"])

    async def decide(self, redemption_id: str, state: str, **fields: Any) -> Doc:
        if state == "refused":
            fields |= {"recheck": True, "recheck_until": time.time() + self.recheck_window}
        await self.store.decide_redemption(redemption_id, state, **fields)
        decided = await self.store.redemption(redemption_id)  # this attempt's decision, or the one that won
        assert decided is not None
        return decided

    async def undo(self, red: Doc) -> bool:
        """Gives back the stock and points a refused redemption holds; whether there was anything to give."""
        rid, item_id, now = red["_id"], red["item_id"], time.time()
        gave = False
        take = await self.store.stock_move(derived_id("stock.take", rid))
        back_id = derived_id("stock.return", rid)
        if take is not None and not take["refused"] and await self.store.stock_move(back_id) is None:
            await self.store.move_stock(item_id, back_id, lambda head: handlers.stock_move(
                item_id, back_id, red["quantity"], head, rid, now))
            gave = True
        if (await self.store.entry(handlers.spend_id(rid)) is not None
                and await self.store.entry(handlers.refund_id(rid)) is None):
            account = await self.store.ensure_account(red["volunteer_id"])
            await self.post(handlers.refund(red, account, now), account=account)
            gave = True
        if gave or not red["undone"]:
            await self.store.mark_redemption(rid, undone=True)
        return gave

    # --- statements ---------------------------------------------------------------------------------

    async def statement(self, volunteer_id: str) -> SignedStatement:
        if (account := await self.store.account(volunteer_id)) is None:
            raise not_found("volunteer", volunteer_id=volunteer_id)
        projected = await self.roll_forward(volunteer_id, account)
        district = self.settings.district or projected["district"]
        if not district:
            raise ApiError("no_district", "set LEDGER_DISTRICT: the statement must name the district that issues it")
        body = handlers.statement(
            volunteer_id, district, projected,
            await self.store.totals_by_kind(volunteer_id, through_seq=projected["seq"]),
            await self.store.credits_by_category(volunteer_id, through_seq=projected["seq"]),
            await self.store.confirmed_hours(volunteer_id), datetime.now(UTC),
        )
        assert self.key is not None
        public = signing.public_pem(self.key)
        return SignedStatement(statement=body, signature=signing.sign(self.key, body), key_id=signing.key_id(public))

    async def import_statement(self, call: ImportStatement) -> Doc:
        district = str(call.statement.get("district", ""))
        public = await self.trusted_public_key(district)
        if public is None:
            raise ApiError("untrusted_district", f"no trusted public key for district {district!r}",
                           {"district": district, "trusted": [key.district for key in await self.trusted()]})
        if not signing.verify(public, call.statement, call.signature):
            raise ApiError("bad_signature", "the statement does not match its signature: it was altered, "
                           "or signed with another key", {"district": district})
        try:
            stmt = Statement.model_validate(call.statement)
        except ValidationError as exc:
            raise ApiError("invalid_statement", "the signed statement is not one this ledger can read",
                           [err["msg"] for err in exc.errors(include_url=False)]) from None
        account = await self.store.account(call.volunteer_id)
        if account is None:
            raise not_found("volunteer", volunteer_id=call.volunteer_id)
        if (stored := await self.store.entry(handlers.import_id(district, stmt.statement_id))) is not None:
            return stored
        volunteer_id, delta = await self.claim_transfer(stmt, call.volunteer_id)
        return await self.post(handlers.imported(stmt, volunteer_id, delta, account, time.time()), account=account)

    async def claim_transfer(self, stmt: Statement, volunteer_id: str) -> tuple[str, int]:
        """Hours of one volunteer from one district come in once: a later statement brings only what is new."""
        total = handlers.to_cents(stmt.hours)
        while True:
            # Not stored until claimed: a refused import leaves no trace.
            seen = await self.store.transfer(f"{stmt.district}/{stmt.volunteer_id}")
            if seen["statement_id"] == stmt.statement_id:
                break  # claimed by an earlier attempt at this import
            if total <= seen["hours_cents"]:
                raise ApiError("already_imported", "these hours were already carried over by an earlier statement",
                               {"statement_id": seen["statement_id"], "volunteer_id": seen["volunteer_id"]})
            claim = {"hours_cents": total, "statement_id": stmt.statement_id,
                     "delta_cents": total - seen["hours_cents"], "volunteer_id": volunteer_id}
            if await self.store.advance_transfer(seen, claim):
                seen = {**seen, **claim}
                break
        if seen["volunteer_id"] != volunteer_id:
            raise ApiError("already_imported", "this statement was imported for another volunteer",
                           {"volunteer_id": seen["volunteer_id"]})
        return volunteer_id, int(seen["delta_cents"])

    # --- other districts' keys ---------------------------------------------------------------------
    # LEDGER_TRUSTED_KEYS is read at start and wins; an operator adds, replaces and removes the others by
    # call, and each change is logged with who made it and why.

    async def trusted_public_key(self, district: str) -> str | None:
        if (configured := self.settings.trusted_keys.get(district)) is not None:
            return configured
        stored = await self.store.trusted_key(district)
        return str(stored["public_key"]) if stored else None

    def not_by_call(self, district: str) -> None:
        if district in self.settings.trusted_keys:
            raise ApiError("configured_in_environment", f"the key of {district!r} comes from LEDGER_TRUSTED_KEYS; "
                           "change it there and restart the ledger", {"district": district})

    async def trust(self, call: TrustDistrict) -> TrustedKey:
        self.not_by_call(call.district)
        try:
            public = signing.check_public(call.public_key.strip() + "\n")
        except ValueError as exc:
            raise ApiError("invalid_key", f"the public key of {call.district!r} is {exc}",
                           {"district": call.district}) from None
        key_id = signing.key_id(public)
        if call.district == self.settings.district or key_id == self.public_key()[1]:
            raise ApiError("own_district", "a ledger does not import its own statements: the hours are already here",
                           {"district": call.district, "key_id": key_id})
        stored = await self.store.trusted_key(call.district)
        if stored is not None and stored["key_id"] == key_id:
            return handlers.trusted_view(stored)  # the same key again: nothing changes
        doc = {"_id": call.district, "public_key": public, "key_id": key_id, "operator": call.operator,
               "reason": call.reason, "at": time.time()}
        await self.store.put_trusted_key(doc)
        await self.store.log_trust({**doc, "_id": str(uuid.uuid4()), "district": call.district,
                                    "action": "replace" if stored else "trust",
                                    "previous_key_id": stored["key_id"] if stored else ""})
        log.info("ledger: %s trusts %s (key %s): %s", call.operator, call.district, key_id, call.reason)
        return handlers.trusted_view(doc)

    async def distrust(self, call: DistrustDistrict) -> TrustedKey:
        self.not_by_call(call.district)
        while (stored := await self.store.trusted_key(call.district)) is not None:
            if await self.store.remove_trusted_key(stored):
                await self.store.log_trust({
                    "_id": str(uuid.uuid4()), "district": call.district, "action": "remove", "key_id": stored["key_id"],
                    "previous_key_id": stored["key_id"], "operator": call.operator, "reason": call.reason,
                    "at": time.time()})
                log.info("ledger: %s no longer trusts %s: %s", call.operator, call.district, call.reason)
                return handlers.trusted_view(stored)
        raise not_found("trusted district", district=call.district)

    async def trusted(self) -> list[TrustedKey]:
        configured = [TrustedKey(district=district, key_id=signing.key_id(public), source="environment")
                      for district, public in self.settings.trusted_keys.items()]
        by_call = [handlers.trusted_view(doc) for doc in await self.store.trusted_keys()
                   if doc["_id"] not in self.settings.trusted_keys]  # the environment's key is the one used
        return sorted(configured + by_call, key=lambda key: key.district)

    def public_key(self) -> tuple[str, str]:
        assert self.key is not None
        public = signing.public_pem(self.key)
        return public, signing.key_id(public)

    # --- checkpoints --------------------------------------------------------------------------------

    async def checkpoint(self) -> Doc | None:
        """Signs every chain head and publishes it; nothing when no chain moved since the last checkpoint."""
        assert self.key is not None
        heads = checkpoints.heads_of((await self.store.all_accounts()).values())
        # Heads only move forward, so heads signed before are the last ones signed: looked up by their root
        # rather than by reading every checkpoint (one an hour, each holding every head) for the latest.
        if not heads or await self.store.has_checkpoint(checkpoints.checkpoint_id(checkpoints.root_of(heads))):
            return None
        doc = checkpoints.new_checkpoint(self.key, self.settings.district or "all", datetime.now(UTC), heads)
        await self.store.add_checkpoint(doc)
        await self.outbox.send([checkpoints.checkpoint_event(doc)])
        return doc

    async def checkpoint_forever(self) -> None:
        if self.settings.checkpoint_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception as exc:
                log.warning("ledger checkpoint failed, will retry: %r", exc)

    # --- repairs ------------------------------------------------------------------------------------

    async def sweep(self, since: float | None) -> None:
        """Rolls forward projections behind their chains, and finishes redemptions a crash left open."""
        for volunteer_id, seq in (await self.store.chain_heads(since)).items():
            account = await self.store.account(volunteer_id)
            if account is None or account["seq"] < seq:
                log.warning("rolling the projection of %s forward to seq %d", volunteer_id, seq)
                await self.roll_forward(volunteer_id)
        for red in await self.store.unfinished_redemptions(time.time() - self.settings.redeem_timeout):
            log.warning("finishing redemption %s left %s", red["_id"], red["state"])
            await self.drive(red)
        # Looked at once, when every attempt that raced the refusal has long finished or died.
        for red in await self.store.redemptions_to_recheck(time.time()):
            if await self.undo(red):  # idempotent: gives back only what a late step took
                log.warning("gave back what a late step took for refused redemption %s", red["_id"])
            await self.store.mark_redemption(red["_id"], recheck=False)

    async def swept(self, since: float | None) -> float:
        """Sweeps the entries posted after `since` (None: every entry), and returns how far back the next sweep
        needs to look. That mark is stored for every replica and the next start, at most once a minute: a start
        then reads at most a minute more of the history, and an idle ledger writes once a minute, not every sweep."""
        started = time.time()
        await self.sweep(since)
        # An append still running when this sweep read the entries was posted at most this long before: what was
        # posted earlier has been seen.
        through = started - 60 - 10 * self.settings.sweep_interval
        if self.mark_stored is None or through - self.mark_stored >= MARK_EVERY:
            await self.store.note_swept(through)
            self.mark_stored = through
        return through

    async def sweep_forever(self) -> None:
        since: float | None = None
        resumed = False
        while True:
            try:
                if not resumed:
                    # A start looks back only as far as the last sweep left off, whichever replica ran it: its cost
                    # does not grow with the history. A database from before the mark is swept whole, once.
                    since, resumed = await self.store.swept_through(), True
                since = await self.swept(since)
            except Exception as exc:
                log.warning("ledger sweep failed, will retry: %r", exc)
            await asyncio.sleep(self.settings.sweep_interval)
