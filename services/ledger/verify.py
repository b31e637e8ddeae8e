"""Recompute every chain and every balance straight from the database, and report any mismatch.

python -m services.ledger verify [--mongo-url URL] [--db NAME] [--checkpoints FILE] [--public-key PEM];
exits 1 when anything does not add up.

Every chain is also checked against the signed checkpoints: those in the database, and those given in FILE
(the ledger.checkpoint events someone kept, one JSON object a line). A chain edited and rehashed by whoever
can write the database still passes the hash walk; it fails against a checkpoint published before the edit.
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.config import BusSettings
from services.ledger import checkpoints, signing
from services.ledger.chain import ChainTotals, Problem, check_chain, check_projection
from services.ledger.store import Doc, LedgerStore


@dataclass
class Report:
    volunteers: int = 0
    entries: int = 0
    items: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        head = f"{self.volunteers} account(s), {self.entries} entries, {self.items} stock item(s)"
        return [
            f"ledger verify: {head}: " + ("OK" if self.ok else f"{len(self.problems)} MISMATCH(ES)")
            + f" ({self.checkpoints} checkpoint(s))",
            *(f"  MISMATCH {problem}" for problem in self.problems),
            *(f"  note: {note}" for note in self.notes),
        ]


async def verify(db: AsyncDatabase[Doc], anchors: Iterable[Mapping[str, Any]] = (),
                 public_key: str | None = None) -> Report:
    store, report = LedgerStore(db), Report()
    chains: dict[str, ChainTotals] = {}
    by_volunteer: dict[str, list[Doc]] = {}
    async for entry in store.all_entries():
        by_volunteer.setdefault(entry["volunteer_id"], []).append(entry)
        report.entries += 1
    for volunteer_id, entries in by_volunteer.items():
        chains[volunteer_id], problems = check_chain(volunteer_id, entries)
        report.problems += problems
    accounts = await store.all_accounts()
    # The database's own sums, as a second opinion on the walk above.
    sums = await store.totals_by_volunteer()
    for volunteer_id in sorted(set(chains) | set(accounts)):
        walked = chains.get(volunteer_id, ChainTotals())
        summed = sums.get(volunteer_id, {})
        if (summed.get("hours_cents", 0), summed.get("points_cents", 0)) != (walked.hours_cents, walked.points_cents):
            report.problems.append(Problem(volunteer_id, "", None, "aggregated sums differ from the chain"))
        report.problems += check_projection(volunteer_id, walked, accounts.get(volunteer_id))
        behind = walked.seq - int(accounts.get(volunteer_id, {}).get("seq", 0))
        if behind > 0:
            report.notes.append(f"account {volunteer_id} is {behind} entries behind its chain (the sweep rolls it on)")
    report.volunteers = len(set(chains) | set(accounts))
    report.items = await check_stock(store, report)
    check_spends(by_volunteer, await store.all_redemptions(), report)
    await check_checkpoints(store, by_volunteer, list(anchors), public_key, report)
    return report


async def check_checkpoints(store: LedgerStore, by_volunteer: Mapping[str, list[Doc]],
                            anchors: list[Mapping[str, Any]], pinned: str | None, report: Report) -> None:
    stored = await store.all_checkpoints()
    public = pinned or await stored_public_key(store)
    if public is None:
        report.notes.append("no public key to check checkpoint signatures with (give --public-key)")
    hashes = {v: {int(e["seq"]): str(e.get("hash")) for e in entries} for v, entries in by_volunteer.items()}
    for doc in sorted(stored.values(), key=lambda d: str(d["at"])):
        problems = checkpoints.check_checkpoint(doc, public) if public else []
        report.problems += problems or checkpoints.check_against_chains(doc, hashes)
    for anchor in anchors:
        report.problems += checkpoints.check_anchor(anchor, stored.get(anchor["checkpoint_id"]), pinned)
    report.checkpoints = len(stored)


async def stored_public_key(store: LedgerStore) -> str | None:
    found = await store.keys.find_one({"_id": "signing"})
    return signing.public_pem(signing.load_private(str(found["pem"]).encode("ascii"))) if found else None


def read_anchors(path: str | None) -> list[dict[str, Any]]:
    """Published checkpoints, one a line: whole ledger.checkpoint events or just their data."""
    if not path:
        return []
    with open(path, encoding="utf-8") as lines:
        docs = [json.loads(line) for line in lines if line.strip()]
    return [doc.get("data", doc) for doc in docs]


async def check_stock(store: LedgerStore, report: Report) -> int:
    last: dict[str, Doc] = {}
    async for move in store.stock_chains():
        before = last.get(move["item_id"])
        expected_seq, stock = (before["seq"] + 1, before["stock_after"]) if before else (1, 0)
        if move["seq"] != expected_seq or move["stock_after"] != stock + move["delta"] or move["stock_after"] < 0:
            report.problems.append(Problem(f"item {move['item_id']}", move["_id"], move["seq"],
                                           "stock movement does not follow from the one before"))
        last[move["item_id"]] = move
    return len(last)


def check_spends(by_volunteer: Mapping[str, list[Doc]], redemptions: Mapping[str, Doc], report: Report) -> None:
    """Points spent belong to a redemption that was done, or were refunded."""
    for volunteer_id, entries in by_volunteer.items():
        spends: dict[str, int] = {}
        for entry in entries:
            if entry["kind"] == "spend":
                key = entry.get("redemption_id", "")
                spends[key] = spends.get(key, 0) + entry["points_cents"]
        for redemption_id, net in spends.items():
            red: Mapping[str, Any] = redemptions.get(redemption_id, {})
            settled = red.get("state") == "done" or (red.get("state") == "refused" and red.get("undone"))
            if settled and net != (-red["cost_cents"] if red["state"] == "done" else 0):
                report.problems.append(Problem(volunteer_id, redemption_id, None,
                                               f"points spent ({net}) do not match the {red['state']} redemption"))
            elif not red:
                report.problems.append(Problem(volunteer_id, redemption_id, None, "points spent with no redemption"))


async def run(mongo_url: str, database: str, anchors: Iterable[Mapping[str, Any]] = (),
              public_key: str | None = None) -> Report:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=10_000)
    try:
        return await verify(client[database], anchors, public_key)
    finally:
        await client.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mongo-url", default=os.environ.get("MONGO_URL"), help="default: MONGO_URL")
    parser.add_argument("--db", help="the ledger's database (default: <LINLI_DB_PREFIX>_ledger)")
    parser.add_argument("--checkpoints", help="ledger.checkpoint events kept outside the database, one JSON a line")
    parser.add_argument("--public-key", help="the ledger's public key (PEM file) the checkpoints must be signed with")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ledger verify", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return report_and_exit_code(args.mongo_url or BusSettings().mongo_url, args.db or BusSettings().database("ledger"),
                                args.checkpoints, args.public_key)


def report_and_exit_code(mongo_url: str, database: str, checkpoints_path: str | None = None,
                         public_key_path: str | None = None) -> int:
    public = open(public_key_path, encoding="ascii").read() if public_key_path else None
    return report(mongo_url, database, read_anchors(checkpoints_path), public)


def report(mongo_url: str, database: str, anchors: Iterable[Mapping[str, Any]] = (), public: str | None = None) -> int:
    found = asyncio.run(run(mongo_url, database, anchors, public))
    for line in found.lines():
        print(line)
    return 0 if found.ok else 1


if __name__ == "__main__":
    sys.exit(main())
