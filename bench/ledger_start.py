"""What the ledger's first repair sweep after a start costs over a long history, with and without the stored mark.

    python -m bench.ledger_start [--history 20000 100000]

For each history size, on an nx-27017 of its own: stores the ledger's part of `bench.loop`'s history (every
entry posted a day ago, every account at its chain's head, the proofs and ratings) without the sweep's mark, as a database from before
the mark left it. Then starts a ledger (indexes built first, not counted) and counts its first sweep: that is
what every start cost before the mark, since a start swept every entry. It then starts a ledger again and counts
its first sweep, which looks back from the mark the first one stored. Printed per sweep: the commands sent, the
entries and accounts read, and nx-27017's CPU time; and the same for the start's own steps (Bank.start, with
the indexes already built). Counts, and one CPU figure to compare within a run.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient, MongoClient

from bench.loop.floor import cpu_seconds
from bench.loop.seed import BATCH, history, settled
from linli.embedded import start_mongo
from services.common.bus import Outbox
from services.common.config import BusSettings
from services.common.runtime import CommandCounter
from services.ledger.bank import Bank
from services.ledger.config import LedgerSettings
from services.ledger.store import LedgerStore

Doc = dict[str, Any]


def store_history(mongo_url: str, n: int) -> None:
    client: MongoClient[Doc] = MongoClient(mongo_url)
    try:
        db = client["linli_ledger"]
        for service, collection, make in history(n, "beibei", "quanwai-01"):
            if service == "ledger" and collection in ("entries", "proofs", "ratings"):
                for start in range(0, n, BATCH):
                    db[collection].insert_many([make(i) for i in range(start, min(n, start + BATCH))], ordered=False)
        for service, collection, docs in settled(n):
            if (service, collection) == ("ledger", "accounts"):
                for start in range(0, len(docs), BATCH):
                    db[collection].insert_many(docs[start:start + BATCH], ordered=False)
    finally:
        client.close()


async def first_sweep(mongo_url: str, pid: int) -> dict[str, Any]:
    reads = CommandCounter()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url, event_listeners=[reads])
    try:
        db = client["linli_ledger"]
        settings = LedgerSettings(bus=BusSettings(mongo_url=mongo_url), signing_key_path="", trusted_keys={})
        bank = Bank(LedgerStore(db), Outbox(db, NatsBroker()), settings)
        await bank.store.ensure_indexes()  # built by the first start only: not what is counted
        reads.counts.clear()
        cpu = cpu_seconds(pid)
        await bank.start()
        start_ms, start_commands = 1000 * (cpu_seconds(pid) - cpu), sum(reads.counts.values())
        mark = await bank.store.swept_through()
        reads.clear()
        cpu, at = cpu_seconds(pid), time.monotonic()
        await bank.swept(mark)
        return {"mark": mark, "start_ms": start_ms, "start_commands": start_commands, "commands": sum(reads.counts.values()), "getMore": reads.counts["getMore"],
                "entries": reads.documents["entries"], "accounts": reads.documents["accounts"],
                "cpu_ms": 1000 * (cpu_seconds(pid) - cpu), "wall_s": time.monotonic() - at}
    finally:
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, nargs="+", default=[20000])
    args = parser.parse_args()
    for n in args.history:
        mongo = start_mongo(Path(tempfile.mkdtemp(prefix="linli-ledger-start-")))
        try:
            store_history(mongo.url, n)
            for label in ("without a mark (every start before it)", "with the stored mark"):
                r = await first_sweep(mongo.url, mongo.process.pid)
                print(f"{n:,} entries, first sweep {label}: {r['commands']} commands ({r['getMore']} getMore), "
                      f"{r['entries']:,} entries and {r['accounts']:,} accounts read, nx-27017 CPU "
                      f"{r['cpu_ms']:.0f} ms, {r['wall_s']:.2f} s (the start before it: {r['start_commands']} commands, "
                      f"nx-27017 CPU {r['start_ms']:.0f} ms)")
        finally:
            mongo.stop()


if __name__ == "__main__":
    asyncio.run(main())
