"""Matching benchmarks.

  python bench/matching.py rank  [--rosters 10000,100000] [--grids 2000] [--samples 50]
      Time to rank the candidates for one request, with rosters of each size spread over the grids
      (Wuchuan county: 50,000+ volunteers in 1,453 grids). The path timed is the matcher's own:
      the nearby stage's volunteer query, the free-slot aggregate, the rating history, and the score.
      It should not grow with the roster: the query reads only the request's grid and its neighbours
      through the (district, grids) index.

  python bench/matching.py throughput [--matchers 1,2,3] [--requests 300]
      Matches per second with 1, 2 and 3 matcher processes on this machine: a burst of requests is
      submitted through linli.api.intake.submit to the whole system, and the clock stops when the
      last one has its outcome (volunteer.assigned or request.unmatched).
"""

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import AsyncMongoClient  # noqa: E402

from contracts import API  # noqa: E402
from linli.client import Client  # noqa: E402
from linli.embedded import start_mongo  # noqa: E402
from linli.system import System  # noqa: E402
from services.matcher import scoring  # noqa: E402
from services.matcher.config import MatcherSettings  # noqa: E402
from services.matcher.store import FREE, MatcherStore, member_key  # noqa: E402

SKILLS = ["repair", "haircut", "elderly", "meals", "tutoring", "health", "legal", "counselling", "employment"]


def synthetic_places(grids: int) -> scoring.Places:
    # Ten grids to a community, a hundred to a street; each grid borders the next ones in its community.
    about = {}
    for g in range(grids):
        community, street = g // 10, g // 100
        neighbours = [f"g{n:04d}" for n in (g - 1, g + 1) if 0 <= n < grids and n // 10 == community]
        about[f"g{g:04d}"] = {"community": f"c{community}", "street": f"s{street}", "neighbours": neighbours}
    return scoring.places_from({"county": about})


def members(volunteers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for v in volunteers:
        keys = [member_key("grid", "county", g) for g in v["grids"]] + [member_key("skill", "county", s) for s in v["skills"]]
        rows += [{"_id": f"{key}|{v['_id']}", "key": key, "volunteer_id": v["_id"]} for key in keys]
    return rows


async def seed(store: MatcherStore, volunteers: int, grids: int, rng: random.Random) -> None:
    batch_v, batch_s = [], []
    for n in range(volunteers):
        vid = f"v{n:06d}"
        capacity = rng.choice([1, 1, 2, 3])
        batch_v.append({"_id": vid, "district": "county", "grids": [f"g{rng.randrange(grids):04d}"],
                        "skills": rng.sample(SKILLS, 2), "capacity": capacity, "attributes": [],
                        "availability": [], "away": [], "recent_work": rng.random() * 4, "recent_at": time.time()})
        batch_s += [{"_id": f"{vid}:{i}", "volunteer_id": vid, "i": i, "holder": FREE} for i in range(capacity)]
        if len(batch_v) == 5000:
            await store.members.insert_many(members(batch_v))
            await store.volunteers.insert_many(batch_v)
            await store.slots.insert_many(batch_s)
            batch_v, batch_s = [], []
            print(f"  seeded {n + 1:,}/{volunteers:,} volunteers", end="\r", flush=True)
    if batch_v:
        await store.members.insert_many(members(batch_v))
        await store.volunteers.insert_many(batch_v)
        await store.slots.insert_many(batch_s)
    print(f"  seeded {volunteers:,} volunteers over {grids:,} grids            ")


async def rank_once(store: MatcherStore, places: scoring.Places, rules: scoring.Rules, request: dict[str, Any],
                    zone: ZoneInfo) -> int:
    stage = rules.stages["routine"][0]
    grids = places.grids_within(request["district"], request["grid"], stage.tiers)
    pool = await store.volunteers_near(request["district"], request["service"], request["category"], grids)
    ids = [v["_id"] for v in pool]
    free = await store.free_slots(pool)
    histories = await store.histories(request["resident_ref"], ids)
    ranked, _ = scoring.rank(request, pool, free, histories, places, rules, time.time(), zone)
    return len(ranked)


async def bench_rank(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="linli-rank-"))
    mongo = start_mongo(data)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url)
    rules = scoring.Rules.load(MatcherSettings().rules_path)
    zone = ZoneInfo("Asia/Shanghai")
    rows = []
    try:
        for size in [int(s) for s in args.rosters.split(",")]:
            grids = size // args.per_grid if args.per_grid else args.grids
            places = synthetic_places(grids)
            store = MatcherStore(client[f"rank_{size}"])
            await store.ensure_indexes()
            rng = random.Random(size)
            started = time.perf_counter()
            await seed(store, size, grids, rng)
            seeded = time.perf_counter() - started
            timings, considered = [], []
            for _ in range(args.samples):
                request = {"_id": "r", "district": "county", "grid": f"g{rng.randrange(grids):04d}",
                           "service": "repair.plumbing", "category": "repair", "urgency": "routine", "tried": [],
                           "needs": [], "resident_ref": "p-1", "round": 1}
                t0 = time.perf_counter()
                considered.append(await rank_once(store, places, rules, request, zone))
                timings.append((time.perf_counter() - t0) * 1000)
            timings.sort()
            rows.append((size, grids, seeded, statistics.median(timings), timings[int(0.95 * (len(timings) - 1))],
                         statistics.mean(considered)))
    finally:
        await client.close()
        mongo.stop()
    print(f"\nrank one request ({args.samples} samples each, nearby stage: the grid and its neighbours)")
    print(f"{'roster':>10} {'grids':>7} {'seed s':>8} {'p50 ms':>8} {'p95 ms':>8} {'candidates':>11}")
    for size, grids, seeded, p50, p95, cands in rows:
        print(f"{size:>10,} {grids:>7,} {seeded:>8.1f} {p50:>8.2f} {p95:>8.2f} {cands:>11.1f}")
    base, big = rows[0], rows[-1]
    print(f"p50 ratio {big[0]:,} vs {base[0]:,} volunteers: {big[3] / base[3]:.2f}x "
          f"for {big[0] / base[0]:.0f}x the roster")
    print("reads: grid_members by its indexed `key` (one equality per grid of the stage), volunteers and "
          "slots by _id, served by (resident_ref, volunteer_id)")


async def one_burst(matchers: int, requests: int) -> tuple[float, int, int]:
    data = Path(tempfile.mkdtemp(prefix="linli-tp-"))
    system = System.start(data, replicas={"matcher": matchers},
                          env={"MATCHER_OFFER_TTL": "900", "LINLI_LOG_LEVEL": "WARNING"})
    try:
        client = await Client.connect(system.nats_url)
        outcomes: dict[str, float] = {}
        registered = asyncio.Event()
        count = {"registered": 0}

        async def see(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind in ("linli.volunteer.assigned", "linli.request.unmatched"):
                outcomes.setdefault(event["data"]["request_id"], time.perf_counter())
            elif kind == "linli.volunteer.registered":
                count["registered"] += 1
                if count["registered"] == 60:
                    registered.set()

        await client.on_events(see)
        grids = ["quanwai-01", "quanwai-02", "quanwai-03", "xinglong-01", "chaoyang-01"]
        for n in range(60):
            await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
                "name": f"v{n}", "phone": f"1380{n:07d}", "district": "beibei", "grids": [grids[n % 5]],
                "skills": ["repair", "elderly"], "capacity": 20})
        await asyncio.wait_for(registered.wait(), 60)
        await asyncio.sleep(2)
        started = time.perf_counter()
        ids = await asyncio.gather(*[
            client.call(API.INTAKE_SUBMIT, {
                "idempotency_key": f"tp-{uuid.uuid4()}", "district": "beibei", "grid": grids[n % 5],
                "service": "repair.plumbing", "resident": {"name": "r", "phone": f"1360{n:07d}"}}, timeout=120)
            for n in range(requests)])
        wanted = {r["request_id"] for r in ids}
        deadline = time.perf_counter() + 300
        while not wanted <= outcomes.keys():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(wanted - outcomes.keys())} requests had no outcome: LOST")
            await asyncio.sleep(0.1)
            print(f"  {matchers} matcher(s): {len(wanted & outcomes.keys())}/{requests} matched", end="\r", flush=True)
        elapsed = max(outcomes[r] for r in wanted) - started
        await client.close()
        return elapsed, len(wanted), os.cpu_count() or 0
    finally:
        system.stop()


async def bench_throughput(args: argparse.Namespace) -> None:
    rows = []
    for matchers in [int(m) for m in args.matchers.split(",")]:
        elapsed, done, _ = await one_burst(matchers, args.requests)
        rows.append((matchers, done, elapsed))
    print(f"\nburst of {args.requests} requests through linli.api.intake.submit, 60 volunteers")
    print(f"{'matchers':>9} {'requests':>9} {'seconds':>8} {'matches/s':>10}")
    for matchers, done, elapsed in rows:
        print(f"{matchers:>9} {done:>9} {elapsed:>8.2f} {done / elapsed:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    rank = sub.add_parser("rank")
    rank.add_argument("--rosters", default="10000,100000")
    rank.add_argument("--grids", type=int, default=2000)
    rank.add_argument("--per-grid", type=int, default=0,
                      help="keep this many volunteers per grid (grids grow with the roster) instead of --grids")
    rank.add_argument("--samples", type=int, default=50)
    tp = sub.add_parser("throughput")
    tp.add_argument("--matchers", default="1,2,3")
    tp.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(f"{' '.join(sys.argv)}  ({platform.python_version()}, {os.cpu_count()} cores)")
    asyncio.run(bench_rank(args) if args.what == "rank" else bench_throughput(args))


if __name__ == "__main__":
    main()
