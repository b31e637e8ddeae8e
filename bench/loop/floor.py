"""The floor of one whole loop: the nx-27017 and JetStream operations the loop cannot do without, executed
against the same servers the services then run on (in databases and a stream of their own), and timed.

What it counts, per loop, and why that set is minimal. The loop persists 19 state changes and moves 12
events; each state change is one durable write, each event one JetStream publish (with its Nats-Msg-Id,
so a repeat is dropped) and one pull-and-ack per consumer on the loop's path (11 deliveries):

    intake    5 writes: insert the request (it carries request.created); update it when it is offered,
                        accepted and completed; the rating (a compare-and-set carrying request.rated)
    matcher   6 writes: claim a slot (the compare-and-set that arbitrates between replicas); insert the
                        assignment under an _id derived from the request and round (a duplicate key means
                        "already placed"; it carries volunteer.assigned); accept and complete (each a
                        compare-and-set carrying its events); release the slot; the served pair the rating
                        leaves for the next ranking
    ledger    3 writes: advance the account (find_one_and_update returns the chain head, nothing re-read);
                        insert the entry under a key derived from the hours (it carries points.earned);
                        insert the rating
    notifier  5 writes: one insert per notification (offer, accepted details, volunteer coming, please rate,
                        points earned), each written once as delivered on the console channel and carrying
                        its notification.delivered

Nothing is read: every decision comes from the event, the caller, memory (the roster) or the document a
compare-and-set returns, and a repeat shows itself as a duplicate key or a compare-and-set that matched
nothing. Left out, because they are not per loop: the marks that events were published (batched, one
command per relay pass), the sweeps, and the care and feed consumers, which are not on the loop's path.
Dropping any write above loses a state change a crash must not lose; dropping a publish or delivery
loses an event a service on the path needs.

Run one loop at a time it gives the wall time of a loop with no service code at all, and nx-27017's and
nats-server's CPU per loop (from /proc); run `concurrent` at a time it gives the loops per second these
servers reach with one Python process doing only these operations.
"""

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from pymongo import AsyncMongoClient, ReturnDocument


STREAM, PREFIX, DB = "LOOPFLOOR", "loopfloor", "loopfloor"
# (consumer, event) for every delivery on the loop's path, as in kiosk.CONSUMERS.
DELIVERIES = [
    ("matcher", "request.created"), ("intake", "volunteer.assigned"), ("notifier", "volunteer.assigned"),
    ("intake", "assignment.accepted"), ("notifier", "assignment.accepted"), ("intake", "assignment.completed"),
    ("notifier", "assignment.completed"), ("ledger", "hours.logged"), ("notifier", "points.earned"),
    ("matcher", "request.rated"), ("ledger", "request.rated"),
]
WRITES = {"intake": 5, "matcher": 6, "ledger": 3, "notifier": 5}
PUBLISHES = 12
Doc = dict[str, Any]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def envelope(kind: str, data: Doc) -> tuple[str, bytes]:
    """An event of the services' CloudEvents shape and size, built with json only."""
    event_id = str(uuid.uuid4())
    body = {"specversion": "1.0", "id": event_id, "source": "bench/floor", "type": f"linli.{kind}",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "subject": data.get("request_id"),
            "datacontenttype": "application/json", "dataschema": f"urn:linli:schema:{kind}:1",
            "district": "beibei", "correlationid": data.get("request_id"), "causationid": None, "data": data}
    return event_id, json.dumps(body, ensure_ascii=False).encode()


@dataclass
class Floor:
    nc: NATS
    js: JetStreamContext
    mongo: AsyncMongoClient[Doc]
    commands: int = 0
    publishes: int = 0
    deliveries: int = 0

    def col(self, service: str, name: str) -> Any:
        return self.mongo[f"{DB}_{service}"][name]

    def event(self, kind: str, data: Doc) -> Doc:
        """An event to store with the state change that causes it, and to publish once that is written."""
        event_id, body = envelope(kind, data)
        self.publishes += 1
        return {"id": event_id, "kind": kind, "body": body}

    async def send(self, events: list[Doc]) -> None:
        for event in events:
            await self.js.publish(f"{PREFIX}.{event['kind']}", event["body"], stream=STREAM,
                                  headers={"Nats-Msg-Id": event["id"], "content-type": "application/json"})

    async def consume(self, subs: dict[tuple[str, str], Any], service: str, kind: str) -> None:
        """One delivery: a pull, the message, its ack (the message may be another loop's: the cost is the same)."""
        while True:
            try:
                msgs = await subs[(service, kind)].fetch(1, timeout=5)
                break
            except nats.errors.TimeoutError:
                continue
        for msg in msgs:
            await msg.ack()
        self.deliveries += 1

    async def write(self, coro: Any) -> Any:
        self.commands += 1
        return await coro

    async def loop(self, subs: dict[tuple[str, str], Any]) -> None:
        rid = f"r-{uuid.uuid4()}"
        aid, vol = f"a-{rid}-1", f"v-{uuid.uuid4().hex[:8]}"
        notifications = self.col("notifier", "notifications")

        async def notify(kind: str) -> None:
            event = self.event("notification.delivered", {"notification_id": f"{rid}:{kind}", "kind": kind})
            await self.write(notifications.insert_one({"_id": f"{rid}:{kind}", "kind": kind, "status": "delivered",
                                                       "recipient": f"volunteer:{vol}", "text": "x" * 120,
                                                       "created": time.time(), "events": [event]}))
            await self.send([event])

        # submit
        created = self.event("request.created", {"request_id": rid, "district": "beibei",
                                                         "grid": "quanwai-01", "service": "repair.plumbing"})
        await self.write(self.col("intake", "requests").insert_one({
            "_id": rid, "status": "submitted", "district": "beibei", "grid": "quanwai-01",
            "service": "repair.plumbing", "description": "厨房水管漏水", "created": time.time(),
            "resident": {"name": "王秀英", "phone": "13800138000"}, "events": [created]}))
        await self.send([created])
        # matcher places it
        await self.consume(subs, "matcher", "request.created")
        # The volunteer's free slot (upserted here: the floor keeps no roster of its own).
        await self.write(self.col("matcher", "slots").find_one_and_update({"_id": f"{vol}:0", "holder": ""},
                                                              {"$set": {"holder": aid}}, upsert=True))
        assigned = self.event("volunteer.assigned", {"request_id": rid, "assignment_id": aid,
                                                             "volunteer_id": vol})
        await self.write(self.col("matcher", "assignments").insert_one({
            "_id": aid, "request_id": rid, "volunteer_id": vol, "state": "offered", "created": time.time(),
            "events": [assigned]}))
        await self.send([assigned])
        await self.consume(subs, "intake", "volunteer.assigned")
        await self.write(self.col("intake", "requests").update_one({"_id": rid}, {"$set": {"status": "offered"}}))
        await self.consume(subs, "notifier", "volunteer.assigned")
        await notify("offer")
        # accept
        accepted = self.event("assignment.accepted", {"request_id": rid, "assignment_id": aid})
        await self.write(self.col("matcher", "assignments").find_one_and_update(
            {"_id": aid, "state": "offered"}, {"$set": {"state": "accepted"}, "$push": {"events": accepted}},
            return_document=ReturnDocument.AFTER))
        await self.send([accepted])
        await self.consume(subs, "intake", "assignment.accepted")
        await self.write(self.col("intake", "requests").update_one({"_id": rid}, {"$set": {"status": "accepted"}}))
        await self.consume(subs, "notifier", "assignment.accepted")
        await notify("accepted_details")
        await notify("volunteer_coming")
        # complete -> hours -> points
        completed = self.event("assignment.completed", {"request_id": rid, "assignment_id": aid})
        hours = self.event("hours.logged", {"request_id": rid, "volunteer_id": vol, "hours": "1.5"})
        await self.write(self.col("matcher", "assignments").find_one_and_update(
            {"_id": aid, "state": "accepted"}, {"$set": {"state": "completed"},
                                                "$push": {"events": {"$each": [completed, hours]}}}))
        await self.write(self.col("matcher", "slots").update_one({"_id": f"{vol}:0", "holder": aid},
                                                                 {"$set": {"holder": ""}}))
        await self.send([completed, hours])
        await self.consume(subs, "intake", "assignment.completed")
        await self.write(self.col("intake", "requests").update_one({"_id": rid}, {"$set": {"status": "completed"}}))
        await self.consume(subs, "notifier", "assignment.completed")
        await notify("please_rate")
        await self.consume(subs, "ledger", "hours.logged")
        account = await self.write(self.col("ledger", "accounts").find_one_and_update(
            {"_id": vol}, {"$inc": {"seq": 1, "hours_cents": 150, "points_cents": 150}}, upsert=True,
            return_document=ReturnDocument.AFTER))
        points = self.event("points.earned", {"request_id": rid, "volunteer_id": vol})
        await self.write(self.col("ledger", "entries").insert_one({
            "_id": f"hours:{rid}/{vol}", "volunteer_id": vol, "seq": account["seq"], "hours_cents": 150,
            "points_cents": 150, "hash": uuid.uuid4().hex, "events": [points]}))
        await self.send([points])
        await self.consume(subs, "notifier", "points.earned")
        await notify("points_earned")
        # rate
        rated = self.event("request.rated", {"request_id": rid, "stars": 5})
        await self.write(self.col("intake", "requests").update_one({"_id": rid, "status": "completed"},
                                                       {"$set": {"status": "rated"}, "$push": {"events": rated}}))
        await self.send([rated])
        await self.consume(subs, "matcher", "request.rated")
        await self.write(self.col("matcher", "served").insert_one({"_id": f"{rid}:{vol}", "volunteer_id": vol,
                                                                   "stars": 5}))
        await self.consume(subs, "ledger", "request.rated")
        await self.write(self.col("ledger", "ratings").insert_one({"_id": f"{rid}/{vol}", "volunteer_id": vol,
                                                                   "stars": 5}))


async def setup(nc: NATS, mongo: AsyncMongoClient[Doc]) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], storage=StorageType.FILE,
                                     num_replicas=1, duplicate_window=600))
    for service, kind in DELIVERIES:
        await js.add_consumer(STREAM, ConsumerConfig(
            durable_name=f"{service}-{kind.replace('.', '-')}", filter_subject=f"{PREFIX}.{kind}",
            ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=1000))
    for service in WRITES:
        await mongo.drop_database(f"{DB}_{service}")


async def measure(nats_url: str, mongo_url: str, mongo_pid: int, nats_pid: int, loops: int,
                  concurrent: int = 16) -> dict[str, Any]:
    """`loops` loops one at a time (wall time and servers' CPU per loop), then 8 x `concurrent` at once."""
    nc = await nats.connect(nats_url, name="bench-floor")
    mongo: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url)
    try:
        await setup(nc, mongo)
        js = nc.jetstream()

        async def subscriptions() -> dict[tuple[str, str], Any]:
            return {(s, k): await js.pull_subscribe(f"{PREFIX}.{k}", durable=f"{s}-{k.replace('.', '-')}",
                                                    stream=STREAM) for s, k in DELIVERIES}

        floor = Floor(nc, js, mongo)
        subs = await subscriptions()
        for _ in range(3):  # connections, prepared files
            await floor.loop(subs)
        floor.commands = floor.publishes = floor.deliveries = 0
        walls: list[float] = []
        cpu = (cpu_seconds(mongo_pid), cpu_seconds(nats_pid))
        for _ in range(loops):
            at = time.monotonic()
            await floor.loop(subs)
            walls.append(time.monotonic() - at)
        mongo_cpu, nats_cpu = cpu_seconds(mongo_pid) - cpu[0], cpu_seconds(nats_pid) - cpu[1]
        per_loop = {"commands": floor.commands / loops, "publishes": floor.publishes / loops,
                    "deliveries": floor.deliveries / loops}

        workers = [await subscriptions() for _ in range(concurrent)]
        burst = 8 * concurrent
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(burst):
            queue.put_nowait(i)

        async def worker(own: dict[tuple[str, str], Any]) -> None:
            while not queue.empty():
                queue.get_nowait()
                await floor.loop(own)

        started = time.monotonic()
        await asyncio.gather(*(worker(w) for w in workers))
        saturated = burst / (time.monotonic() - started)
        walls.sort()
        return {**per_loop, "wall_ms": 1000 * sum(walls) / loops, "wall_p50_ms": 1000 * walls[len(walls) // 2],
                "mongo_cpu_ms": 1000 * mongo_cpu / loops, "nats_cpu_ms": 1000 * nats_cpu / loops,
                "loops_per_s": saturated, "concurrent": concurrent, "loops": loops}
    finally:
        await nc.close()
        await mongo.close()


