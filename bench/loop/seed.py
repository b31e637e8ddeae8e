"""A long history stored straight into each service's database: N requests served, done and rated, as the
loop leaves them (the documents carry the fields the services' queries filter on)."""

import time
from collections.abc import Callable, Iterator
from typing import Any

from pymongo import MongoClient

Doc = dict[str, Any]
BATCH = 1000


def history(n: int, district: str, grid: str) -> Iterator[tuple[str, str, Callable[[int], Doc]]]:
    """(service, collection, document i) for every collection a served request leaves documents in."""
    now = time.time() - 86400

    def vol(i: int) -> str:
        return f"hist-v{i % 2000}"  # two thousand volunteers, each with some history

    yield "intake", "requests", lambda i: {
        "_id": f"hist-r{i}", "code": f"H{i:07d}", "status": "rated", "district": district, "grid": grid,
        "service": "repair.plumbing", "created": now + i * 1e-3, "announced": True, "version": 5, "channel": "kiosk"}
    yield "intake", "status_changes", lambda i: {
        "_id": f"hist-r{i}:done", "request_id": f"hist-r{i}", "status": "rated", "at": "", "note": "", "seq": now}
    yield "intake", "assignments", lambda i: {"_id": f"hist-a{i}", "code": f"HA{i:07d}", "volunteer_id": vol(i)}
    yield "intake", "processed", lambda i: {"_id": f"intake-offered:hist-e{i}", "at": now, "type": "t"}
    yield "matcher", "requests", lambda i: {
        "_id": f"hist-r{i}", "code": f"H{i:07d}", "state": "done", "round": 1, "lease": now, "opened": now,
        "district": district, "resident_ref": f"hist-res{i}"}
    yield "matcher", "assignments", lambda i: {
        "_id": f"hist-a{i}", "request_id": f"hist-r{i}", "round": 1, "volunteer_id": vol(i), "state": "completed",
        "expires": now, "announced": True, "created": now + i * 1e-3}
    yield "matcher", "served", lambda i: {
        "_id": f"rating:hist-r{i}:{vol(i)}", "resident_ref": f"hist-res{i}", "volunteer_id": vol(i), "stars": 5,
        "at": now}
    yield "matcher", "assignment_codes", lambda i: {"_id": f"HA{i:07d}", "assignment_id": f"hist-a{i}"}
    yield "matcher", "processed", lambda i: {"_id": f"matcher-x:hist-e{i}", "at": now, "type": "t"}
    yield "notifier", "notifications", lambda i: {
        "_id": f"hist-n{i}", "status": "delivered", "created": now, "owner": "", "claimed_until": 0.0}
    yield "ledger", "entries", lambda i: {
        "_id": f"hist-e{i}", "volunteer_id": vol(i), "seq": i // 2000 + 1, "kind": "credit",
        "request_id": f"hist-r{i}", "posted": now, "hours_cents": 100, "points_cents": 100, "district": district,
        "at": "2026-01-01", "hash": "", "category": "repair"}
    yield "ledger", "proofs", lambda i: {
        "_id": f"hist-r{i}/{vol(i)}", "request_id": f"hist-r{i}", "volunteer_id": vol(i), "credited": True,
        "confirmed": True, "disputed": False, "settled": True, "hours_cents": 100, "credited_at": now}
    yield "ledger", "ratings", lambda i: {
        "_id": f"hist-r{i}/{vol(i)}", "request_id": f"hist-r{i}", "volunteer_id": vol(i), "stars": 5}
    yield "ledger", "processed", lambda i: {"_id": f"ledger-hours:hist-e{i}", "at": now, "type": "t"}


def settled(n: int) -> Iterator[tuple[str, str, list[Doc]]]:
    """What the history leaves besides its requests' documents: each volunteer's ledger account at the head of
    their chain, and the mark of the ledger's last sweep (it had seen every entry of the history)."""
    now = time.time() - 86400
    volunteers = min(n, 2000)
    yield "ledger", "accounts", [
        {"_id": f"hist-v{v}", "seq": (n - 1 - v) // 2000 + 1, "head": "", "district": "", "team": "",
         "hours_cents": 100 * ((n - 1 - v) // 2000 + 1), "points_cents": 100 * ((n - 1 - v) // 2000 + 1),
         "services": (n - 1 - v) // 2000 + 1, "first_seen": now}
        for v in range(volunteers)]
    yield "ledger", "sweeps", [{"_id": "projections", "through": now + 60, "at": now + 120}]


def seed(mongo_url: str, db_prefix: str, n: int, district: str, grid: str) -> None:
    client: MongoClient[Doc] = MongoClient(mongo_url)
    try:
        for service, collection, make in history(n, district, grid):
            target = client[f"{db_prefix}_{service}"][collection]
            for start in range(0, n, BATCH):
                target.insert_many([make(i) for i in range(start, min(n, start + BATCH))], ordered=False)
        for service, collection, docs in settled(n):
            for start in range(0, len(docs), BATCH):
                client[f"{db_prefix}_{service}"][collection].insert_many(docs[start:start + BATCH], ordered=False)
    finally:
        client.close()
