"""Unit costs: each bare operation run serially on the idle servers."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any, Awaitable, Callable

import nats
from nats.js.api import AckPolicy, ConsumerConfig
from pymongo import AsyncMongoClient

from bench.latency.plan import CATEGORIES, DISTRICT, FLOOR_ECHO, FLOOR_MATCHER_DB, FLOOR_STREAM, FLOOR_UNITS_DB, FREE
from services.common.bus import settled


# ---------------------------------------------------------------- unit costs: each bare operation, serially


UNIT_OPS = ["nats request-reply", "insert_one", "find_one", "find_one_and_update", "find().to_list",
            "aggregate", "update_one", "delete_one", "js.publish (PubAck)", "js.publish + pull delivery"]
PER_REQUEST = {"nats request-reply": 1, "insert_one": 6, "find_one": 2, "find_one_and_update": 2, "find().to_list": 1,
               "aggregate": 1, "update_one": 3, "delete_one": 2, "js.publish (PubAck)": 2, "js.publish + pull delivery": 1}


async def unit_costs(nats_url: str, mongo_url: str, samples: int) -> dict[str, list[float]]:
    responder = await nats.connect(nats_url)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    db, matcher = mongo[FLOOR_UNITS_DB], mongo[FLOOR_MATCHER_DB]
    ops, cas = db["ops"], db["cas"]
    times: dict[str, list[float]] = {name: [] for name in UNIT_OPS}
    rng = random.Random(7)

    async def timed(name: str, op: Callable[[], Awaitable[Any]]) -> Any:
        t = time.perf_counter()
        out = await op()
        times[name].append((time.perf_counter() - t) * 1000)
        return out

    async def echo(msg: Any) -> None:
        await msg.respond(b'{"ok":true}')

    try:
        await responder.subscribe(FLOOR_ECHO, cb=echo)
        await settled(responder)
        await cas.create_index([("volunteer_id", 1), ("holder", 1)])
        await cas.insert_many([{"_id": i, "volunteer_id": f"v{i % 50}", "holder": FREE} for i in range(samples)])
        await js.add_consumer(FLOOR_STREAM, ConsumerConfig(durable_name="floor-unit", filter_subject="benchfloor.unit.hop",
                                                           ack_policy=AckPolicy.EXPLICIT))
        hop = await js.pull_subscribe("benchfloor.unit.hop", durable="floor-unit", stream=FLOOR_STREAM)
        for i in range(samples):
            await timed("nats request-reply", lambda: nc.request(FLOOR_ECHO, b'{"x":1}', timeout=5))
            doc = {"_id": f"u{i}", "state": "open", "payload": "x" * 400, "n": i}
            await timed("insert_one", lambda: ops.insert_one(doc))
            await timed("find_one", lambda: ops.find_one({"_id": f"u{i}"}))
            await timed("find_one_and_update", lambda: cas.find_one_and_update(
                {"volunteer_id": f"v{i % 50}", "holder": FREE}, {"$set": {"holder": f"a{i}"}}))
            skill = rng.choice(CATEGORIES)
            vols = await timed("find().to_list", lambda: matcher["volunteers"].find(
                {"district": DISTRICT, "skills": {"$in": [skill, f"{skill}.x"]}}).to_list())

            async def agg() -> dict[str, int]:
                pipeline = [{"$match": {"volunteer_id": {"$in": [v["_id"] for v in vols]}, "holder": FREE}},
                            {"$group": {"_id": "$volunteer_id", "n": {"$sum": 1}}}]
                return {row["_id"]: row["n"] async for row in await matcher["slots"].aggregate(pipeline)}

            await timed("aggregate", agg)
            await timed("update_one", lambda: ops.update_one({"_id": f"u{i}", "state": "open"},
                                                             {"$set": {"state": "offered"}}))
            await timed("delete_one", lambda: ops.delete_one({"_id": f"u{i}"}))
            body = json.dumps({"id": str(uuid.uuid4()), "data": {"x": "y" * 500}}).encode()
            await timed("js.publish (PubAck)", lambda: js.publish(
                "benchfloor.unit.pub", body, stream=FLOOR_STREAM, headers={"Nats-Msg-Id": str(uuid.uuid4())}))
            # A pull request already waiting (as a consumer that is caught up), then the publish it delivers.
            fetch = asyncio.create_task(hop.fetch(1, timeout=5))
            await asyncio.sleep(0.002)
            t = time.perf_counter()
            await js.publish("benchfloor.unit.hop", body, stream=FLOOR_STREAM, headers={"Nats-Msg-Id": str(uuid.uuid4())})
            msgs = await fetch
            times["js.publish + pull delivery"].append((time.perf_counter() - t) * 1000)
            for m in msgs:
                await m.ack()
        return times
    finally:
        await responder.close()
        await nc.close()
        await mongo.close()
