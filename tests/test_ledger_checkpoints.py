"""Anchored chains: the ledger signs its chain heads and publishes them, so whoever can write its database
cannot rewrite a volunteer's history and rehash it without `verify` noticing."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from linli.cli import main as cli
from linli.ledger_cli import published_checkpoints
from services.common.bus import Outbox
from services.common.config import BusSettings
from services.common.runtime import CommandCounter, Service
from services.ledger import chain, checkpoints, signing
from services.ledger.bank import Bank
from services.ledger.store import LedgerStore
from services.ledger.verify import run as verify
from tests.conftest import Bus
from tests.test_ledger_service import adjust, ledger, ledger_settings, open_account, started

__all__ = ["ledger"]

Doc = dict[str, Any]


async def rewrite_and_rehash(db: AsyncDatabase[Doc], volunteer_id: str) -> None:
    """What someone who can write the database does: raise the first entry, then rehash every entry after it
    and move the account along, so the chain walk finds nothing wrong."""
    entries = await db["entries"].find({"volunteer_id": volunteer_id}).sort("seq", 1).to_list()
    head: Doc | None = None
    for n, entry in enumerate(entries):
        body = {k: v for k, v in entry.items() if k not in ("seq", "prev_hash", "balance_hours_cents",
                                                              "balance_points_cents", "hash")}
        if n == 0:
            body["points_cents"] += 100_000
        head = chain.link(body, head)
        await db["entries"].replace_one({"_id": entry["_id"]}, head)
    assert head is not None
    await db["accounts"].update_one({"_id": volunteer_id}, {"$set": {
        "head": head["hash"], "points_cents": head["balance_points_cents"], "hours_cents": head["balance_hours_cents"]}})


async def resign_checkpoints(db: AsyncDatabase[Doc]) -> None:
    """The same person goes further: new heads in every stored checkpoint, signed with the key in the database."""
    key = signing.load_private(str((await db["keys"].find_one({"_id": "signing"}))["pem"]).encode("ascii"))
    hashes = {(e["volunteer_id"], e["seq"]): e["hash"] for e in await db["entries"].find({}).to_list()}
    for doc in await db["checkpoints"].find({}).to_list():
        heads = {v: [seq, hashes[(v, seq)]] for v, (seq, _) in doc["heads"].items()}
        forged = checkpoints.new_checkpoint(key, doc["district"], datetime.fromisoformat(doc["at"]), heads)
        await db["checkpoints"].replace_one({"_id": doc["_id"]}, {**forged, "_id": doc["_id"]})


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_a_chain_rewritten_and_rehashed_after_a_checkpoint_fails_verify_naming_the_volunteer(
        settings: BusSettings, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = await started(ledger_settings(settings, checkpoint_interval=0.3))
    try:
        for volunteer_id in ("v-honest", "v-target"):
            await open_account(bus, ledger, volunteer_id)
            for points in ("10", "20"):
                assert "error" not in await adjust(bus, volunteer_id, points=points)
        [published] = await bus.wait_for("ledger.checkpoint", volunteers=2, entries=4)
    finally:
        await ledger.stop()  # from here on only the database is touched, as an intruder would
    anchor = published["data"]
    anchors_file = tmp_path / "checkpoints.jsonl"
    anchors_file.write_text(json.dumps(published) + "\n")
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[ledger.db.name]
    try:
        before = await verify(settings.mongo_url, db.name, [anchor])
        await rewrite_and_rehash(db, "v-target")
        rewritten = await verify(settings.mongo_url, db.name, [anchor])
        exit_code = await asyncio.to_thread(cli, ["ledger", "verify", "--mongo-url", settings.mongo_url, "--db", db.name,
                                                  "--checkpoints", str(anchors_file)])
        printed = capsys.readouterr().out
        await resign_checkpoints(db)
        resigned_alone = await verify(settings.mongo_url, db.name)
        resigned_anchored = await verify(settings.mongo_url, db.name, [anchor])
        from_bus = await published_checkpoints(settings.nats_url)
        resigned_from_bus = await verify(settings.mongo_url, db.name, from_bus)
    finally:
        await client.close()

    assert before.ok and before.checkpoints >= 1, before.lines()
    assert rewritten.problems and {p.volunteer_id for p in rewritten.problems} == {"v-target"}
    assert all("rewritten" in p.problem for p in rewritten.problems)
    assert exit_code == 1 and "MISMATCH" in printed and "v-target" in printed and "v-honest" not in printed
    # Re-signed with the key kept in the same database, the checkpoints inside it vouch for the forgery;
    # the checkpoint published before does not.
    assert resigned_alone.ok
    assert not resigned_anchored.ok
    assert any("published" in p.problem for p in resigned_anchored.problems)
    assert anchor["checkpoint_id"] in {c["checkpoint_id"] for c in from_bus} and not resigned_from_bus.ok


class Finds(CommandCounter):
    """The commands counted, and the collection and filter of each find."""

    def __init__(self) -> None:
        super().__init__()
        self.filters: list[tuple[str, Doc]] = []

    def started(self, event: Any) -> None:
        super().started(event)
        if event.command_name == "find":
            self.filters.append((str(event.command.get("find")), dict(event.command.get("filter", {}))))

    def clear(self) -> None:
        super().clear()
        self.filters.clear()


@pytest.mark.service
async def test_heads_already_signed_are_not_signed_again_and_no_earlier_checkpoint_is_read(
        ledger: Service, settings: BusSettings, bus: Bus) -> None:
    # The running ledger made the stream; this bank, with checkpoints of its own, is the one counted.
    reads = Finds()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongo_url, event_listeners=[reads])
    db = client[ledger.db.name]
    broker = NatsBroker(settings.nats_url)
    await broker.connect()
    bank = Bank(LedgerStore(db), Outbox(db, broker), ledger_settings(settings))
    try:
        await bank.start()
        await open_account(bus, ledger, "v-anchored")
        signed = []
        for points in ("10", "20", "30"):
            assert "error" not in await adjust(bus, "v-anchored", points=points)
            signed.append(await bank.checkpoint())
        reads.clear()

        again = await bank.checkpoint()

        assert again is None and all(signed) and len({doc["_id"] for doc in signed if doc}) == 3
        assert [(collection, list(query)) for collection, query in reads.filters if collection == "checkpoints"] == [
            ("checkpoints", ["_id"])]
    finally:
        await broker.stop()
        await client.close()


@pytest.mark.domain
def test_a_published_checkpoint_is_signed_over_what_it_says() -> None:
    key = signing.load_private(signing.new_private_pem())
    heads = {"v-1": [3, "a" * 64], "v-2": [1, "b" * 64]}
    doc = checkpoints.new_checkpoint(key, "beibei", datetime(2026, 12, 1, 8, 0, tzinfo=UTC), heads)
    public = signing.public_pem(key)
    published = checkpoints.checkpoint_event(doc).model_dump(mode="json")["data"]

    assert doc["volunteers"] == 2 and doc["entries"] == 4
    assert checkpoints.check_checkpoint(doc, public) == []
    assert checkpoints.check_anchor(published, doc, public) == []
    other = signing.public_pem(signing.load_private(signing.new_private_pem()))
    assert checkpoints.check_anchor(published, doc, other)  # another key did not sign it
    assert checkpoints.check_checkpoint({**doc, "heads": {**heads, "v-2": [1, "c" * 64]}}, public)
    assert checkpoints.check_against_chains(doc, {"v-1": {3: "a" * 64}, "v-2": {1: "b" * 64}}) == []
    [problem] = checkpoints.check_against_chains(doc, {"v-1": {3: "f" * 64}, "v-2": {1: "b" * 64}})
    assert problem.volunteer_id == "v-1" and problem.seq == 3
