"""Ranking against a large roster: the matcher's in-memory roster against the database path it replaced.

    python -m bench.ranking [--volunteers 100000] [--grids 2000] [--samples 300]

In a temp directory: starts nx-27017 and nats-server, seeds --volunteers volunteers over --grids grids (a tenth of
their slots taken), then, in this process and on the same server:

- ranks --samples requests in random grids both ways, alternating: `memory` is the matcher's own step
  (SharedRoster.catch_up, then Dispatch.ranked: the pool, free slots and this week's counts from memory,
  the resident's ratings from the database); `database` is the read path the matcher used before the roster
  (grid_members by key, volunteers and slots by _id, the same ratings and weeks), scored by the same
  scoring.rank; and `memory, no reads` is the memory path's own share (pool and scoring, without its two
  reads). Prints
  p50/p95 and the MongoDB commands and documents returned per ranking, from a command listener;
- loads the roster three times each way (SharedRoster.load from the snapshot, load_profiles from the
  profiles themselves) and prints the medians, and the memory the roster keeps (tracemalloc);
- starts `python -m services.matcher` as a process on that database: once with no snapshot (a first start),
  once with one; and once on an empty database. Prints the seconds from spawning it to ready
  (LINLI_READY_FILE: its roster is loaded and its consumers are subscribed), until it has read the
  profiles in the background, and its RSS at each point.
"""

import argparse
import asyncio
import gc
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient, monitoring

from bench.matching import SKILLS, members, synthetic_places
from linli.embedded import Server, start_mongo, start_nats
from services.common.bus import Outbox
from services.common.config import BusSettings
from services.matcher import scoring
from services.matcher.config import MatcherSettings
from services.matcher.dispatch import Dispatch
from services.matcher.roster import SharedRoster
from services.matcher.store import FREE, MatcherStore

DISTRICT = "county"
TARGET_P50_MS, TARGET_READY_S = 3.0, 10.0


class Commands(monitoring.CommandListener):
    """Commands sent and documents returned, as the server answered them."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        if isinstance(cursor, dict):
            self.documents += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> tuple[int, int]:
        sent, documents = sum(self.sent.values()), self.documents
        self.sent, self.documents = Counter(), 0
        return sent, documents


def rss_kib(pid: int | None = None) -> int:
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def seed(store: MatcherStore, volunteers: int, grids: int, rng: random.Random) -> None:
    await store.ensure_indexes()
    batch_v: list[dict[str, Any]] = []
    batch_s: list[dict[str, Any]] = []
    for n in range(volunteers):
        vid = f"v{n:06d}"
        capacity = rng.choice([1, 1, 2, 3])
        batch_v.append({"_id": vid, "district": DISTRICT, "grids": [f"g{rng.randrange(grids):04d}"],
                        "skills": rng.sample(SKILLS, 2), "capacity": capacity, "team": "", "attributes": [],
                        "availability": [], "away": [], "recent_work": rng.random() * 4, "recent_at": time.time(),
                        "updated": time.time()})
        batch_s += [{"_id": f"{vid}:{i}", "volunteer_id": vid, "i": i,
                     "holder": f"a-seeded-{vid}-{i}" if rng.random() < 0.1 else FREE} for i in range(capacity)]
        if len(batch_v) == 5000 or n == volunteers - 1:
            await store.members.insert_many(members(batch_v))
            await store.volunteers.insert_many(batch_v)
            await store.slots.insert_many(batch_s)
            batch_v, batch_s = [], []
            print(f"  seeded {n + 1:,}/{volunteers:,} volunteers", end="\r", flush=True)
    print()


async def rank_from_database(dispatch: Dispatch, request: dict[str, Any], grids: list[str] | None) -> int:
    """The matcher's ranking before the roster was held in memory: every volunteer read for every request."""
    store = dispatch.store
    pool = await store.volunteers_near(request["district"], request["service"], request["category"], grids)
    ids = [v["_id"] for v in pool]
    free = await store.free_slots(pool)
    histories = await store.histories(request["resident_ref"], ids)
    weeks = await store.weeks_of(ids, dispatch.week(request["district"]))
    ranked, _ = scoring.rank(request, pool, free, histories, dispatch.places, dispatch.rules, time.time(),
                             dispatch.zone(request["district"]), True, weeks)
    return len(ranked)


async def rank_from_memory(dispatch: Dispatch, request: dict[str, Any], grids: list[str] | None) -> int:
    await dispatch.roster.catch_up()
    ranked, _ = await dispatch.ranked(request, None, grids, True)
    return len(ranked)


async def rank_in_memory_only(dispatch: Dispatch, request: dict[str, Any], grids: list[str] | None) -> int:
    """The memory path's own share: its pool, free slots, weeks and scoring, without its two reads."""
    memory = dispatch.roster.memory
    pool = memory.near(request["district"], request["service"], request["category"], grids)
    ids = [v["_id"] for v in pool]
    ranked, _ = scoring.rank(request, pool, memory.free(ids), {}, dispatch.places, dispatch.rules, time.time(),
                             dispatch.zone(request["district"]), True, memory.week_of(ids, dispatch.week(DISTRICT)))
    return len(ranked)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def rankings(dispatch: Dispatch, listener: Commands, grids: int, samples: int,
                   rng: random.Random) -> dict[str, dict[str, float]]:
    stage = dispatch.rules.stages["routine"][0]
    ways = {"memory": rank_from_memory, "database": rank_from_database, "memory, no reads": rank_in_memory_only}
    timed: dict[str, list[float]] = {way: [] for way in ways}
    sent: dict[str, list[int]] = {way: [] for way in ways}
    returned: dict[str, list[int]] = {way: [] for way in ways}
    ranked: dict[str, list[int]] = {way: [] for way in ways}
    for n in range(samples):
        grid = f"g{rng.randrange(grids):04d}"
        request = {"_id": f"r{n}", "district": DISTRICT, "grid": grid, "service": "repair.plumbing",
                   "category": "repair", "urgency": "routine", "tried": [], "needs": [], "resident_ref": "p-1",
                   "round": 1}
        within = dispatch.places.grids_within(DISTRICT, grid, stage.tiers)
        order = ("memory", "database") if n % 2 else ("database", "memory")
        for way in (*order, "memory, no reads"):
            listener.take()
            started = time.perf_counter()
            ranked[way].append(await ways[way](dispatch, request, within))
            timed[way].append((time.perf_counter() - started) * 1000)
            commands, documents = listener.take()
            sent[way].append(commands)
            returned[way].append(documents)
    assert ranked["memory"] == ranked["database"] == ranked["memory, no reads"], "the paths ranked different candidates"
    return {way: {"p50": statistics.median(timed[way]), "p95": percentile(timed[way], 0.95),
                  "commands": statistics.mean(sent[way]), "documents": statistics.mean(returned[way]),
                  "candidates": statistics.mean(ranked[way])} for way in timed}


async def loads(store: MatcherStore, times: int) -> dict[str, float]:
    """Seconds to load the roster from the profiles and from the snapshot (medians), and what it keeps."""
    seconds: dict[str, list[float]] = {"profiles": [], "snapshot": []}
    volunteers = 0
    for _ in range(times):
        for way in seconds:
            roster = SharedRoster(store)
            started = time.perf_counter()
            await (roster.load_profiles() if way == "profiles" else roster.load())
            seconds[way].append(time.perf_counter() - started)
            volunteers = len(roster.memory)
            del roster
    gc.collect()
    tracemalloc.start()
    roster = SharedRoster(store)
    await roster.load()
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"profiles_s": statistics.median(seconds["profiles"]), "snapshot_s": statistics.median(seconds["snapshot"]),
            "volunteers": volunteers, "kept_mb": kept / 2**20, "peak_mb": peak / 2**20}


def matcher_process(nats: Server, mongo: Server, prefix: str, work: Path, settles: bool = False) -> dict[str, float]:
    """Seconds from spawning a matcher process to its ready file and its RSS then (MB); then, if it started
    from a snapshot, seconds until it has read the profiles themselves in the background, and its RSS then."""
    ready = work / f"ready-{prefix}"
    ready.unlink(missing_ok=True)
    output = work / f"matcher-{prefix}-{time.monotonic_ns()}.log"
    env = {**os.environ, "NATS_URL": nats.url, "MONGO_URL": mongo.url, "LINLI_DB_PREFIX": prefix,
           "LINLI_AUTH": "off", "LINLI_READY_FILE": str(ready), "LINLI_LOG_LEVEL": "INFO"}
    started = time.perf_counter()
    with output.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.matcher"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
    figures: dict[str, float] = {}
    try:
        while not ready.exists():
            if process.poll() is not None or time.perf_counter() - started > 300:
                raise RuntimeError(f"the matcher on {prefix} never became ready; see {output}")
            time.sleep(0.02)
        figures["ready_s"] = time.perf_counter() - started
        figures["ready_rss_mb"] = rss_kib(process.pid) / 1024
        while settles and "read from their profiles" not in output.read_text(errors="replace"):
            if process.poll() is not None or time.perf_counter() - started > 300:
                break
            time.sleep(0.05)
        if settles and process.poll() is None:
            figures["exact_s"] = time.perf_counter() - started
            time.sleep(0.5)
            figures["exact_rss_mb"] = rss_kib(process.pid) / 1024
        return figures
    finally:
        process.terminate()
        process.wait(30)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="linli-ranking-"))
    nats, mongo = start_nats(work), start_mongo(work)
    listener = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url, event_listeners=[listener])
    try:
        settings = MatcherSettings(bus=BusSettings(nats_url=nats.url, mongo_url=mongo.url, db_prefix="bench"))
        store = MatcherStore(client[settings.bus.database("matcher")])
        rng = random.Random(7)
        started = time.perf_counter()
        await seed(store, args.volunteers, args.grids, rng)
        seeded = time.perf_counter() - started
        places = synthetic_places(args.grids)
        dispatch = Dispatch(store, Outbox(store.volunteers.database, NatsBroker()), settings,
                            scoring.Rules.load(settings.rules_path), places, roster=SharedRoster(store))
        await dispatch.start()
        ranks = await rankings(dispatch, listener, args.grids, args.samples, rng)
        memory = await loads(store, 3)
        await store.snapshots.delete_many({})  # a matcher's first start: nothing packed yet
        first = matcher_process(nats, mongo, "bench", work)
        again = matcher_process(nats, mongo, "bench", work, settles=True)
        empty = matcher_process(nats, mongo, "empty", work)
    finally:
        await client.close()
        nats.stop()
        mongo.stop()
        shutil.rmtree(work, ignore_errors=True)

    per = 100_000 / args.volunteers
    print(f"\n{' '.join(sys.argv)}  (Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"nx-27017 and nats-server embedded)")
    print(f"{args.volunteers:,} volunteers in {args.grids:,} grids, seeded in {seeded:.0f} s; "
          f"{args.samples} requests, nearby stage (the grid and its neighbours)")
    print(f"\n{'ranking one request':<22} {'p50 ms':>7} {'p95 ms':>7} {'commands':>9} {'documents':>10} "
          f"{'candidates':>11}")
    for way, row in ranks.items():
        print(f"{way:<22} {row['p50']:>7.2f} {row['p95']:>7.2f} {row['commands']:>9.1f} {row['documents']:>10.1f} "
              f"{row['candidates']:>11.1f}")
    print(f"  target p50 <= {TARGET_P50_MS} ms: {'met' if ranks['memory']['p50'] <= TARGET_P50_MS else 'NOT met'}")
    print(f"\nroster load in this process, {memory['volunteers']:,.0f} volunteers: "
          f"{memory['snapshot_s']:.2f} s from the snapshot (with the taken slots and the log since), "
          f"{memory['profiles_s']:.2f} s from the profiles themselves")
    print(f"roster memory per 100,000 volunteers: {memory['kept_mb'] * per:.0f} MB kept (tracemalloc), "
          f"{memory['peak_mb'] * per:.0f} MB at the peak of loading")
    print(f"matcher process, spawned to ready: {again['ready_s']:.1f} s from the snapshot "
          f"(target <= {TARGET_READY_S} s: "
          f"{'met' if again['ready_s'] <= TARGET_READY_S else 'NOT met'}), {first['ready_s']:.1f} s on its first "
          f"start, with no snapshot yet; from the snapshot, the profiles themselves were read "
          f"{again.get('exact_s', float('nan')):.1f} s after spawning")
    print(f"matcher process RSS: {again['ready_rss_mb']:.0f} MB when ready from the snapshot, "
          f"{again.get('exact_rss_mb', float('nan')):.0f} MB once the profiles are read, "
          f"{first['ready_rss_mb']:.0f} MB "
          f"on a first start; {empty['ready_rss_mb']:.0f} MB with an empty roster")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volunteers", type=int, default=100_000)
    parser.add_argument("--grids", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
