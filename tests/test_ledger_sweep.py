"""The repair sweep after a start: it still rolls forward what a crash left behind, and it reads only the entries
posted since the last sweep of any run, however long the history (the mark stored in the `sweeps` collection)."""

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.calls import AdjustBalance
from services.common.bus import Outbox
from services.common.config import BusSettings
from services.common.runtime import CommandCounter, cancel_and_wait
from services.ledger.bank import MARK_EVERY, Bank
from services.ledger.chain import link
from services.ledger.store import LedgerStore
from tests.conftest import Bus, eventually
from tests.test_ledger_service import adjust, ledger_settings, open_account, started, verified_db

pytestmark = pytest.mark.service

Doc = dict[str, Any]
DAY = 24 * 3600


@pytest.fixture
async def counted(settings: BusSettings) -> AsyncIterator[tuple[AsyncDatabase[Doc], CommandCounter]]:
    """The ledger's database, through a client that counts what it sends and reads."""
    reads = CommandCounter()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongo_url, event_listeners=[reads])
    try:
        yield client[settings.database("ledger")], reads
    finally:
        await client.close()


def a_bank(db: AsyncDatabase[Doc], settings: BusSettings, **overrides: Any) -> Bank:
    return Bank(LedgerStore(db), Outbox(db, NatsBroker()), ledger_settings(settings, **overrides))


async def left_behind(db: AsyncDatabase[Doc], volunteer_id: str, posted: float) -> None:
    """What a ledger killed between an append and its projection leaves: an entry the account has not seen."""
    [head] = await db["entries"].find({"volunteer_id": volunteer_id}).sort("seq", -1).limit(1).to_list()
    body = {**head, "_id": f"e-left-behind-{volunteer_id}", "hours_cents": 150, "points_cents": 0, "posted": posted}
    await db["entries"].insert_one(link(body, head))


async def opened(bank: Bank, volunteer_id: str) -> None:
    await bank.store.ensure_account(volunteer_id)
    await bank.adjust(AdjustBalance(volunteer_id=volunteer_id, points=Decimal("5"), reason="opening balance",
                                    operator="op-zhang", idempotency_key=f"adj-{volunteer_id}"))


async def a_long_settled_history(db: AsyncDatabase[Doc], volunteers: int, each: int) -> None:
    """Entries posted a day ago, every account at its chain's head (the sweep compares only the seqs)."""
    posted = time.time() - DAY
    await db["entries"].insert_many([
        {"_id": f"hist-{v}-{s}", "volunteer_id": f"v-hist-{v}", "seq": s, "kind": "credit", "hash": f"h{s}",
         "posted": posted, "hours_cents": 100, "points_cents": 100}
        for v in range(volunteers) for s in range(1, each + 1)])
    await db["accounts"].insert_many([
        {"_id": f"v-hist-{v}", "seq": each, "head": f"h{each}", "hours_cents": 100 * each,
         "points_cents": 100 * each, "services": each, "district": "beibei", "team": "", "first_seen": posted}
        for v in range(volunteers)])


async def a_bank_after_a_long_history(db: AsyncDatabase[Doc], settings: BusSettings, volunteer_id: str) -> Bank:
    """A started bank over 1,000 entries of 250 volunteers settled a day ago, and one account opened now."""
    bank = a_bank(db, settings)
    await bank.start()
    await a_long_settled_history(db, volunteers=250, each=4)
    await opened(bank, volunteer_id)
    return bank


async def test_a_projection_a_crash_left_behind_is_rolled_forward_after_a_restart(
    settings: BusSettings, bus: Bus, counted: tuple[AsyncDatabase[Doc], CommandCounter],
) -> None:
    db, _ = counted
    ledger = await started(ledger_settings(settings))
    try:
        await open_account(bus, ledger, "v-restart")
        await adjust(bus, "v-restart", points="5")
        # A sweep has stored its mark: the next start looks only after it, not at every chain.
        await eventually(lambda: ledger.db["sweeps"].find_one({"_id": "projections"}), timeout=15)
    finally:
        await ledger.stop()
    await left_behind(db, "v-restart", time.time())
    assert (await db["accounts"].find_one({"_id": "v-restart"}) or {}).get("seq") == 1  # nothing running

    again = await started(ledger_settings(settings))
    try:
        account = await eventually(lambda: db["accounts"].find_one({"_id": "v-restart", "seq": 2}), timeout=15)
    finally:
        await again.stop()

    assert (account["hours_cents"], account["points_cents"]) == (150, 500)
    assert await verified_db(settings, db.name) == []


async def test_a_start_after_a_long_history_reads_only_the_entries_posted_since_the_last_sweep(
    settings: BusSettings, counted: tuple[AsyncDatabase[Doc], CommandCounter],
) -> None:
    db, reads = counted
    first = await a_bank_after_a_long_history(db, settings, "v-recent")
    await first.swept(await first.store.swept_through())  # the last sweep before the ledger stopped
    await left_behind(db, "v-recent", time.time())  # and a crash in its last moments

    mark = await db["sweeps"].find_one({"_id": "projections"})
    assert mark is not None and mark["through"] > time.time() - DAY

    # The start: its first sweep, and no second one within the test.
    again = a_bank(db, settings, sweep_interval=60)
    await again.start()
    reads.clear()
    sweeping = asyncio.create_task(again.sweep_forever())
    try:
        account = await eventually(lambda: db["accounts"].find_one({"_id": "v-recent", "seq": 2}))
    finally:
        await cancel_and_wait([sweeping])

    assert account["hours_cents"] == 150
    # The two entries of v-recent, and the one rolled forward again: none of the 1,000 older ones.
    assert reads.documents["entries"] <= 5, reads.documents
    assert reads.counts["getMore"] == 0 and reads.counts["find accounts"] <= 5, reads.counts  # not 251


async def test_a_database_without_a_mark_is_swept_whole_once_and_then_from_its_mark(
    settings: BusSettings, counted: tuple[AsyncDatabase[Doc], CommandCounter],
) -> None:
    db, reads = counted
    bank = await a_bank_after_a_long_history(db, settings, "v-old")
    # Left behind a day ago by a ledger from before the mark was stored.
    await left_behind(db, "v-old", time.time() - DAY)
    assert await bank.store.swept_through() is None
    reads.clear()

    mark = await bank.swept(None)

    account = await db["accounts"].find_one({"_id": "v-old"})
    assert account is not None and (account["seq"], account["hours_cents"]) == (2, 150)
    assert reads.documents["entries"] >= 1000  # every entry, this once
    assert await bank.store.swept_through() == pytest.approx(mark, rel=0, abs=0.001)  # stored as a double

    reads.clear()
    again = a_bank(db, settings)
    await again.start()
    await again.swept(await again.store.swept_through())
    assert reads.documents["entries"] <= 2, reads.documents


async def test_sweeps_a_minute_apart_store_the_mark_and_those_between_do_not(
    settings: BusSettings, counted: tuple[AsyncDatabase[Doc], CommandCounter],
) -> None:
    db, _ = counted
    bank = a_bank(db, settings)
    await bank.start()
    first = await bank.swept(None)
    between = await bank.swept(first)
    stored_between = await bank.store.swept_through()
    bank.mark_stored = first - MARK_EVERY  # as if the first had been a minute ago
    later = await bank.swept(between)

    assert first < between < later
    assert stored_between == pytest.approx(first, rel=0, abs=0.001)
    assert await bank.store.swept_through() == pytest.approx(later, rel=0, abs=0.001)


async def test_the_mark_only_moves_forward(counted: tuple[AsyncDatabase[Doc], CommandCounter]) -> None:
    store = LedgerStore(counted[0])
    await store.note_swept(1000.0)
    await store.note_swept(900.0)  # a replica whose sweep began earlier, finishing later
    assert await store.swept_through() == 1000.0
    await store.note_swept(1100.0)
    assert await store.swept_through() == 1100.0
