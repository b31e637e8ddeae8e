"""Every store query the loop and its sweeps run costs the same with 5,000 unrelated documents stored as with none.

nx-27017 keeps each database in SQLite, and answers a query from an index only in some shapes: equality or a
range on a single-field index, and _id. On a compound index's leading field alone, $in over any other field,
update_many or delete_many on anything but _id, and aggregates, it reads the whole collection. Its explain
answers for plain finds only, so the signal here is the server's own work: this module runs nx-27017 inside
the test process, on a thread of its own, and counts the SQLite virtual machine's instructions (one tick per
100, through the connection's progress handler) that each store query costs. The count is deterministic for
the same data and query; a query that reads 5,000 documents costs hundreds of ticks more, one answered from an
index a few ticks at most (the index's B-tree grows a level). Timings are never compared.

Each store's queries run twice against targets of their own: on collections holding nothing else, then after
5,000 unrelated documents (other requests, volunteers, entries, in their settled states) were added to every
collection the store reads.
"""

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nx_27017.handler import NeoSQLiteHandler  # type: ignore[import-untyped]
from nx_27017.server import run_server  # type: ignore[import-untyped]
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.bus import Inbox, Outbox
from services.common.codes import short_code
from services.intake.store import IntakeStore
from services.ledger.store import LedgerStore
from services.matcher.store import FREE, MatcherStore, member_key
from services.notifier.store import NotifierStore

pytestmark = pytest.mark.service

UNRELATED = 5000
# Ticks (of 100 SQLite instructions) a query may grow by: an index a level deeper, never a scan of 5,000.
ALLOWANCE = 20

Doc = dict[str, Any]
Probes = dict[str, Callable[[], Awaitable[Any]]]


class CountedServer:
    """nx-27017 on a thread of this process, with the SQLite work of each database counted."""

    def __init__(self, data_dir: Path) -> None:
        self.handler = NeoSQLiteHandler(data_dir=str(data_dir))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.ticks = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(run_server("127.0.0.1", self.port, self.handler))
        except (asyncio.CancelledError, RuntimeError):
            pass

    def count(self, db_name: str) -> None:
        def tick() -> int:
            self.ticks += 1
            return 0  # go on

        self.handler.get_database(db_name).db.set_progress_handler(tick, 100)

    def stop(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountedServer]:
    server = CountedServer(tmp_path_factory.mktemp("counted"))
    yield server
    server.stop()


@pytest.fixture
async def db(counted: CountedServer, request: pytest.FixtureRequest) -> AsyncIterator[AsyncDatabase[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(f"mongodb://127.0.0.1:{counted.port}")
    for _ in range(100):  # the server thread may still be binding its port
        try:
            await client.admin.command("ping")
            break
        except Exception:
            await asyncio.sleep(0.05)
    name = f"cost_{request.node.name[:40]}"
    database = client[name]
    await database["warmup"].insert_one({"_id": "x"})
    counted.count(name)
    yield database
    await client.drop_database(name)
    await client.close()


async def costs(counted: CountedServer, probes: Probes) -> dict[str, int]:
    spent: dict[str, int] = {}
    for name, probe in probes.items():
        before = counted.ticks
        await probe()
        spent[name] = counted.ticks - before
    return spent


async def seed(db: AsyncDatabase[Doc], collection: str, make: Callable[[int], Doc]) -> None:
    for start in range(0, UNRELATED, 1000):
        await db[collection].insert_many([make(i) for i in range(start, start + 1000)])


def assert_flat(fresh: dict[str, int], loaded: dict[str, int]) -> None:
    grown = {name: (fresh[name], loaded[name]) for name in fresh if loaded[name] > fresh[name] + ALLOWANCE}
    assert not grown, f"queries whose cost grew with {UNRELATED} unrelated documents (ticks before, after): {grown}"


async def test_the_outbox_and_inbox_cost_the_same_with_a_long_history(counted: CountedServer, db: Any) -> None:
    outbox = Outbox(db, broker=None)  # type: ignore[arg-type]  # the relay publishes nothing that is not due
    inbox = Inbox(db)
    await outbox.ensure_indexes()

    def probes(tag: str) -> Probes:
        async def once() -> None:
            event: Any = type("Event", (), {"id": f"ev-{tag}", "type": "linli.evt.x"})()
            async with inbox.once("consumer", event) as first:
                assert first

        return {"relay": lambda: outbox.relay_pending(older_than=600.0), "inbox": once}

    fresh = await costs(counted, probes("a"))
    now = time.time()
    # Events stored a moment ago, still being published by the step that stored them: not due for the relay
    # (which here takes only those older than ten minutes).
    await seed(db, "outbox", lambda i: {"_id": f"o{i}", "subject": "s", "body": "{}", "created": now + i * 1e-6})
    await seed(db, "processed", lambda i: {"_id": f"consumer:e{i}", "at": now, "type": "t"})
    assert_flat(fresh, await costs(counted, probes("b")))


async def test_intake_queries_cost_the_same_with_a_long_history(counted: CountedServer, db: Any) -> None:
    store = IntakeStore(db)
    await store.ensure_indexes()

    async def submitted(tag: str) -> Doc:
        doc = {"_id": f"r-{tag}", "code": f"C{tag}", "status": "submitted", "created": time.time() - 60,
               "created_at": "2026-12-01T00:00:00Z", "channel": "kiosk", "announced": False, "version": 0,
               "round": 0, "district": "d1", "grid": "g1"}
        await store.requests.insert_one(doc)
        return doc

    def probes(tag: str, doc: Doc) -> Probes:
        return {
            "request": lambda: store.request(doc["_id"]),
            "request_by_code": lambda: store.request_by_code(doc["code"]),
            "unannounced": lambda: store.unannounced(older_than=5.0),
            "mark_announced": lambda: store.mark_announced(doc["_id"]),
            "change": lambda: store.change(doc, {"status": "offered", "history.k": {"note": "n"}}),
            "change_unread": lambda: store.change_unread(doc["_id"], {"round": 0, "status": {"$in": ["offered"]}},
                                                         {"status": "accepted", "history.e": {"note": "n"}}),
            "history_stored_apart": lambda: store.history_stored_apart(doc["_id"]),
            "record_assignment": lambda: store.record_assignment(f"a-{tag}", {"code": f"A{tag}"}),
            "assignment_by_code": lambda: store.assignment_by_code(f"A{tag}"),
        }

    fresh = await costs(counted, probes("a", await submitted("a")))
    await seed(db, "requests", lambda i: {"_id": f"r{i}", "code": f"K{i}", "status": "offered", "created": i,
                                          "announced": True, "version": 3, "round": 0, "district": "d1",
                                          "grid": "g1"})
    await seed(db, "status_changes", lambda i: {"_id": f"r{i}:x", "request_id": f"r{i}", "seq": i})
    await seed(db, "assignments", lambda i: {"_id": f"a{i}", "code": f"B{i}"})
    assert_flat(fresh, await costs(counted, probes("b", await submitted("b"))))


async def test_matcher_queries_cost_the_same_with_a_long_history(counted: CountedServer, db: Any) -> None:
    store = MatcherStore(db)
    await store.ensure_indexes()

    async def targets(tag: str) -> tuple[Doc, Doc]:
        volunteer = {"_id": f"v-{tag}", "district": "d1", "grids": [f"g-{tag}"], "skills": ["errand"],
                     "capacity": 2, "revision": 1}
        await store.save_volunteer(volunteer)
        request = {"_id": f"r-{tag}", "code": f"RC{tag}", "state": "open", "round": 0, "opened": 0.0,
                   "resident_ref": f"res-{tag}"}
        await store.add_request(request)
        return volunteer, request

    def probes(tag: str, volunteer: Doc, request: Doc) -> Probes:
        offer = f"as-{tag}"

        async def offered() -> None:
            await store.add_assignment({"_id": offer, "request_id": request["_id"], "round": 1,
                                        "volunteer_id": volunteer["_id"], "state": "offered", "expires": 0.0,
                                        "announced": False, "created": 0.0})

        return {
            "save_volunteer": lambda: store.save_volunteer({**volunteer, "capacity": 1, "revision": 2}),
            "volunteers_near": lambda: store.volunteers_near("d1", "errand", "errand", [f"g-{tag}"]),
            "free_slots": lambda: store.free_slots([volunteer]),
            "histories": lambda: store.histories(request["resident_ref"], [volunteer["_id"]]),
            "paired_volunteers": lambda: store.paired_volunteers(request["resident_ref"]),
            "active_pairings": lambda: store.active_pairings(),
            "end_pairing": lambda: store.end_pairing(f"p-{tag}"),
            "weeks_of": lambda: store.weeks_of([volunteer["_id"]], "2026-W49"),
            "note_week": lambda: store.note_week(volunteer["_id"], "2026-W49", offers=1),
            "count_offer": lambda: store.count_offer(volunteer["_id"], "2026-W49", 20, 15.0),
            "count_offer_known": lambda: store.count_offer(volunteer["_id"], "2026-W49", 20, 15.0, work=0.5,
                                                           known=(0.0, round(time.time(), 3))),
            "request_by_ref": lambda: store.request_by_ref(request["code"]),
            "waiting": lambda: store.waiting(older_than=1.0),
            "claim": lambda: store.claim(request["_id"], until=1.0),
            "stale_placements": lambda: store.stale_placements(time.time()),
            "reserve": lambda: store.reserve(volunteer["_id"], offer),
            "add_assignment": offered,
            "assignment_by_code": lambda: store.assignment_by_ref(short_code(offer, 6)),
            "old_assignment_code": lambda: store.assignment_by_ref(f"CODE{tag}"),
            "settle_assignment": lambda: store.settle_assignment(offer, "accepted", "completed"),
            "settle_request": lambda: store.settle_request(request["_id"], {"state": "unmatched"}, state="closed"),
            "unannounced_offers": lambda: store.unannounced_offers(older_than=1.0),
            "mark_announced": lambda: store.mark_announced(offer),
            "mark_all_announced": lambda: store.mark_all_announced([offer, f"as-{tag}-2"]),
            "mark_all_told": lambda: store.mark_all_announced([offer, f"as-{tag}-2"], completed=True),
            "tidy_all": lambda: store.tidy_all([(request["_id"], offer), (f"r-{tag}-2", f"as-{tag}-2")]),
            "lapsed_offers": lambda: store.lapsed_offers(),
            "round_offers": lambda: store.round_offers(request["_id"], 1),
            "of_request": lambda: store.of_request(request["_id"]),
            "open_assignments": lambda: store.open_assignments(volunteer["_id"]),
            "move_assignment": lambda: store.move_assignment(offer, "offered", "accepted"),
            "release": lambda: store.release(offer),
            "release_all": lambda: store.release_all([offer]),
            "move_request": lambda: store.move_request(request["_id"], {"state": "placing"}, state="unmatched",
                                                       announced=False, settled_at=0.0),
            "unannounced_unmatched": lambda: store.unannounced_unmatched(older_than=1.0),
            "untidy": lambda: store.untidy(older_than=1.0),
            "note_work": lambda: store.note_work(volunteer["_id"], 1.0, 30.0),
            "leave": lambda: store.leave(volunteer["_id"], time.time()),
        }

    fresh = await costs(counted, probes("a", *await targets("a")))
    await seed(db, "volunteers", lambda i: {"_id": f"v{i}", "district": "d1", "grids": [f"g{i % 50}"],
                                            "skills": ["errand"], "capacity": 1})
    await seed(db, "grid_members", lambda i: {"_id": f"m{i}", "key": member_key("grid", "d1", f"g{i % 50}"),
                                              "volunteer_id": f"v{i}"})
    await seed(db, "slots", lambda i: {"_id": f"v{i}:0", "volunteer_id": f"v{i}", "i": 0, "holder": FREE})
    await seed(db, "requests", lambda i: {"_id": f"r{i}", "code": f"Q{i}", "state": "accepted", "round": 1,
                                          "lease": i, "opened": i, "resident_ref": f"res{i}"})
    await seed(db, "assignments", lambda i: {"_id": f"as{i}", "request_id": f"r{i}", "round": 1, "volunteer_id":
                                             f"v{i}", "state": "done", "expires": i, "announced": True, "created": i,
                                             "code": f"AC{i}"})
    await seed(db, "served", lambda i: {"_id": f"s{i}", "resident_ref": f"res{i}", "volunteer_id": f"v{i}", "at": i})
    await seed(db, "pairings", lambda i: {"_id": f"p{i}", "resident_ref": f"res{i}", "volunteer_id": f"v{i}",
                                          "active": False})
    await seed(db, "assignment_codes", lambda i: {"_id": f"CODE{i}", "assignment_id": f"as{i}"})
    await seed(db, "weeks", lambda i: {"_id": f"v{i}:2026-W01", "offers": 1, "hours": 1.0})
    assert_flat(fresh, await costs(counted, probes("b", *await targets("b"))))


async def test_notifier_queries_cost_the_same_with_a_long_history(counted: CountedServer, db: Any) -> None:
    store = NotifierStore(db)
    await store.ensure_indexes()

    def probes(tag: str) -> Probes:
        n = f"n-{tag}"
        return {
            "contact": lambda: store.contact(f"c-{tag}"),
            "save_contact": lambda: store.save_contact(f"c-{tag}", {"phone": "1"}, 0.0),
            "create": lambda: store.create([{"_id": n, "status": "pending", "created": 0.0, "owner": "me",
                                             "claimed_until": 1.0}, {"_id": f"{n}-2", "status": "sent", "created": 0.0,
                                                                     "owner": "me", "claimed_until": 0.0}]),
            "create_taken": lambda: store.create([{"_id": n, "status": "pending", "created": 0.0, "owner": "you",
                                                   "claimed_until": 1.0}]),
            "claim": lambda: store.claim(n, "me", 2.0, 3.0),
            "begin_attempt": lambda: store.begin_attempt(n, "me", 1, 3.0),
            "record_attempt": lambda: store.record_attempt(n, 1, "console", 0.0, "sent", None, ""),
            "finish": lambda: store.finish(n, "me", "sent", "console", "", 0.0),
            "release": lambda: store.release(n, "me"),
        }

    fresh = await costs(counted, probes("a"))
    await seed(db, "notifications", lambda i: {"_id": f"n{i}", "status": "sent", "created": i, "owner": "x",
                                               "claimed_until": 0.0})
    await seed(db, "attempts", lambda i: {"_id": f"n{i}:1", "notification_id": f"n{i}", "n": 1})
    await seed(db, "contacts", lambda i: {"_id": f"c{i}", "phone": "1", "fetched": 0.0})
    assert_flat(fresh, await costs(counted, probes("b")))


async def test_ledger_queries_cost_the_same_with_a_long_history(counted: CountedServer, db: Any) -> None:
    store = LedgerStore(db)
    await store.ensure_indexes()

    def build(volunteer_id: str, request_id: str, entry_id: str) -> Callable[[Doc | None], Doc]:
        def entry(head: Doc | None) -> Doc:
            seq = (head["seq"] if head else 0) + 1
            return {"_id": entry_id, "volunteer_id": volunteer_id, "seq": seq, "hash": f"h{seq}", "kind": "credit",
                    "request_id": request_id, "category": "errand", "hours_cents": 100, "points_cents": 100,
                    "balance_hours_cents": 100 * seq, "balance_points_cents": 100 * seq, "posted": time.time(),
                    "district": "d1", "at": "2026-12-01"}
        return entry

    def probes(tag: str) -> Probes:
        volunteer, request = f"v-{tag}", f"r-{tag}"

        async def credit() -> None:
            account = await store.ensure_account(volunteer)
            stored, _ = await store.append_entry(volunteer, f"e-{tag}", build(volunteer, request, f"e-{tag}"), account)
            await store.project(stored)

        async def rate() -> None:
            await store.add_rating({"_id": f"{request}/{volunteer}", "request_id": request, "volunteer_id": volunteer,
                                    "stars": 5})

        return {
            "credit": credit,
            "entries_after": lambda: store.entries_after(volunteer, 0),
            "credit_for": lambda: store.credit_for(request, volunteer),
            "note_proof": lambda: store.note_proof(request, volunteer, {"credited": True}),
            "note_first_proof": lambda: store.note_proof(request, f"{volunteer}-2", {"credited": True}, first=True),
            "handled_before": lambda: store.handled_before("ledger-hours", f"ev-{tag}"),
            "proof": lambda: store.proof(request, volunteer),
            "proofs_of": lambda: store.proofs_of(request),
            "rate": rate,
            "rating_totals": lambda: store.rating_totals(volunteer),
            "totals_by_kind": lambda: store.totals_by_kind(volunteer, 10),
            "credits_by_category": lambda: store.credits_by_category(volunteer, 10),
            "confirmed_hours": lambda: store.confirmed_hours(volunteer),
            "chain_heads": lambda: store.chain_heads(since=time.time() - 60),
            "note_swept": lambda: store.note_swept(time.time() - 60),
            "swept_through": lambda: store.swept_through(),
            "has_checkpoint": lambda: store.has_checkpoint(f"cp-{tag}"),
            "unfinished_redemptions": lambda: store.unfinished_redemptions(time.time()),
            "redemptions_to_recheck": lambda: store.redemptions_to_recheck(time.time()),
            "stock_on_hand": lambda: store.stock_on_hand(f"item-{tag}"),
        }

    fresh = await costs(counted, probes("a"))
    await seed(db, "entries", lambda i: {"_id": f"e{i}", "volunteer_id": f"v{i % 1000}", "seq": i // 1000 + 1,
                                         "kind": "credit", "request_id": f"r{i}", "posted": 0.0, "hours_cents": 1,
                                         "district": "d1", "at": "2026-01-01"})
    await seed(db, "accounts", lambda i: {"_id": f"v{i}", "seq": 5, "head": "h", "hours_cents": 5, "points_cents": 5})
    await seed(db, "proofs", lambda i: {"_id": f"r{i}/v{i}", "request_id": f"r{i}", "volunteer_id": f"v{i}",
                                        "confirmed": True, "settled": True, "disputed": False, "credited": True,
                                        "credited_at": 0.0, "hours_cents": 100})
    await seed(db, "ratings", lambda i: {"_id": f"r{i}/v{i}", "request_id": f"r{i}", "volunteer_id": f"v{i}",
                                         "stars": 4})
    await seed(db, "redemptions", lambda i: {"_id": f"red{i}", "state": "done", "announced": True, "undone": False,
                                             "recheck": False, "created": 0.0})
    await seed(db, "checkpoints", lambda i: {"_id": f"cp{i}", "at": f"2026-01-01T00:00:{i}", "root": f"r{i}",
                                             "heads": {f"v{i}": [i, "h"]}})
    await seed(db, "stock_moves", lambda i: {"_id": f"sm{i}", "item_id": f"item{i % 100}", "seq": i // 100 + 1,
                                             "stock_after": 3})
    assert_flat(fresh, await costs(counted, probes("b")))
