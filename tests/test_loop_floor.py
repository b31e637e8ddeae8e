"""The benchmark's floor plays whole loops: every write it counts lands, every event it publishes is delivered
to each consumer on the loop's path and acknowledged, and it counts what it does."""

from typing import Any

import nats
import pytest
from pymongo import AsyncMongoClient

from bench.loop import floor
from linli.embedded import Server

pytestmark = pytest.mark.service


async def test_the_floor_counts_19_writes_12_publishes_and_11_deliveries_and_leaves_every_loop_finished(
    nats_server: Server, mongo_server: Server
) -> None:
    measured = await floor.measure(nats_server.url, mongo_server.url, mongo_server.process.pid,
                                   nats_server.process.pid, loops=2, concurrent=2)
    assert (measured["commands"], measured["publishes"], measured["deliveries"]) == (19, 12, 11)

    played = 3 + 2 + 8 * 2  # warm-up, one at a time, then 8 rounds of 2 at once
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.url)
    nc = await nats.connect(nats_server.url)
    try:
        def db(service: str) -> Any:
            return mongo[f"{floor.DB}_{service}"]

        assert await db("intake")["requests"].count_documents({"status": "rated"}) == played
        assert await db("matcher")["assignments"].count_documents({"state": "completed"}) == played
        assert await db("matcher")["slots"].count_documents({"holder": ""}) == played
        assert await db("notifier")["notifications"].count_documents({}) == 5 * played
        assert await db("ledger")["entries"].count_documents({}) == played
        js = nc.jetstream()
        assert (await js.stream_info(floor.STREAM)).state.messages == 12 * played
        for service, kind in floor.DELIVERIES:
            info = await js.consumer_info(floor.STREAM, f"{service}-{kind.replace('.', '-')}")
            assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        await nc.close()
        await mongo.close()
