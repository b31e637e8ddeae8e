"""The floor: what intake and the matcher do for one request, with bare nats-py and PyMongo."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from pymongo import AsyncMongoClient, ReturnDocument

from bench.latency.plan import (
    DISTRICT,
    FLOOR_DURABLE,
    FLOOR_EVT,
    FLOOR_INTAKE_DB,
    FLOOR_MATCHER_DB,
    FLOOR_STREAM,
    FLOOR_SUBMIT,
    FLOOR_UNITS_DB,
    FREE,
    Req,
    Volunteer,
    log,
)
from bench.latency.services import measured_run
from bench.latency.tracking import Result, Tracker, drive
from services.common.bus import settled


# ---------------------------------------------------------------- floor: bare nats-py + PyMongo


def floor_request_id(district: str, key: str) -> str:
    return "r-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"request/{district}/{key}"))


def floor_assignment_id(request_id: str, round_: int) -> str:
    return "a-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"assignment/{request_id}/{round_}"))


@dataclass(frozen=True)
class Candidate:
    volunteer_id: str
    same_grid: bool
    load: float


def floor_rank(request: dict[str, Any], volunteers: list[dict[str, Any]], free: dict[str, int]) -> list[Candidate]:
    """The matcher's ranking as of 21160fb (handlers.rank): skilled, free, not tried; same grid, least loaded, id."""
    tried = set(request.get("tried", []))
    candidates = [
        Candidate(v["_id"], request["grid"] in v["grids"], 1 - free.get(v["_id"], 0) / v["capacity"])
        for v in volunteers
        if v["district"] == request["district"]
        and (request["service"] in v["skills"] or request["category"] in v["skills"])
        and v["_id"] not in tried and free.get(v["_id"], 0) > 0
    ]
    return sorted(candidates, key=lambda c: (not c.same_grid, c.load, c.volunteer_id))


def floor_event(kind: str, data: dict[str, Any], subject_id: str) -> tuple[str, str, bytes]:
    """An envelope of the same shape and size as the services' CloudEvents, built with json only."""
    event_id = str(uuid.uuid4())
    body = json.dumps({
        "specversion": "1.0", "id": event_id, "source": "bench/floor", "type": f"linli.{kind}",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "subject": subject_id,
        "datacontenttype": "application/json", "dataschema": f"urn:linli:schema:{kind}:1", "district": DISTRICT,
        "correlationid": subject_id, "causationid": None, "data": data,
    }, ensure_ascii=False)
    return event_id, f"{FLOOR_EVT}.{kind}.{DISTRICT}", body.encode()


async def outbox_send(outbox: Any, js: Any, event_id: str, subject: str, body: bytes) -> None:
    """Outbox.send for one event: insert_one, find_one, js.publish with Nats-Msg-Id, delete_one."""
    await outbox.insert_one({"_id": event_id, "subject": subject, "body": body.decode(), "created": time.time()})
    entry = await outbox.find_one({"_id": event_id})
    await js.publish(entry["subject"], entry["body"].encode(), stream=FLOOR_STREAM,
                     headers={"Nats-Msg-Id": entry["_id"], "content-type": "application/json"})
    await outbox.delete_one({"_id": event_id})


async def _child_wait(stop: Any) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.1)


async def floor_intake(nats_url: str, mongo_url: str, concurrency: int, ready: Any, stop: Any) -> None:
    nc = await nats.connect(nats_url, name="floor-intake")
    js = nc.jetstream()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    db = mongo[FLOOR_INTAKE_DB]
    requests, changes, outbox = db["requests"], db["status_changes"], db["outbox"]

    async def submit(msg: Any) -> None:
        try:
            call = json.loads(msg.data)
            rid = floor_request_id(call["district"], call["idempotency_key"])
            now = time.time()
            doc = {"_id": rid, "fingerprint": call["idempotency_key"], "district": call["district"],
                   "grid": call["grid"], "service": call["service"], "category": call["service"].split(".")[0],
                   "urgency": call["urgency"], "description": call["description"], "window_start": None,
                   "window_end": None, "channel": call["channel"], "resident": call["resident"],
                   "status": "submitted", "rank": 0, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "created": now, "announced": False}
            await requests.insert_one(doc)                                              # insert_one 1
            await changes.insert_one({"_id": f"{rid}:submitted", "request_id": rid, "status": "submitted",
                                      "at": doc["created_at"], "note": "received", "seq": now})  # insert_one 2
            data = {k: doc[k] for k in ("district", "grid", "service", "category", "urgency", "description",
                                        "window_start", "window_end", "channel")}
            event = floor_event("request.created", {"request_id": rid, **data}, rid)
            await outbox_send(outbox, js, *event)          # insert_one 3, find_one, JS publish, delete_one
            await requests.update_one({"_id": rid}, {"$set": {"announced": True}})     # update_one
            await msg.respond(json.dumps({"request_id": rid, "status": "submitted"}).encode())
        except Exception as exc:
            await msg.respond(json.dumps({"error": {"code": "internal", "message": repr(exc)}}).encode())

    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def dispatch(msg: Any) -> None:  # --floor-intake-concurrency > 1: what a concurrent intake would do
        await gate.acquire()
        task = asyncio.create_task(submit(msg))
        running.add(task)
        task.add_done_callback(lambda t: (running.discard(t), gate.release()))

    # By default one message at a time, as FastStream's core subscriber (nats-py cb, no max_workers) runs intake.
    await nc.subscribe(FLOOR_SUBMIT, queue="floor-intake", cb=submit if concurrency <= 1 else dispatch)
    await settled(nc)
    ready.set()
    try:
        await _child_wait(stop)
    finally:
        await nc.drain()
        await mongo.close()


async def floor_matcher(nats_url: str, mongo_url: str, workers: int, ready: Any, stop: Any) -> None:
    nc = await nats.connect(nats_url, name="floor-matcher")
    js = nc.jetstream()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    db = mongo[FLOOR_MATCHER_DB]
    volunteers, slots, requests, assignments, outbox = (
        db["volunteers"], db["slots"], db["requests"], db["assignments"], db["outbox"])

    async def handle(msg: Any) -> None:
        event = json.loads(msg.data)
        d = event["data"]
        rid = d["request_id"]
        now = time.time()
        await requests.insert_one({"_id": rid, "district": d["district"], "grid": d["grid"], "service": d["service"],
                                   "category": d["category"], "urgency": d["urgency"], "state": "open", "round": 0,
                                   "tried": [], "cause": event["id"], "opened": now, "created": now})  # insert_one 1
        request = await requests.find_one_and_update(                                                   # CAS 1
            {"_id": rid, "state": "open"}, {"$set": {"state": "placing", "lease": now + 30}, "$inc": {"round": 1}},
            return_document=ReturnDocument.AFTER)
        if request is None:
            return
        vols = await volunteers.find(                                                                   # find
            {"district": request["district"], "skills": {"$in": [request["service"], request["category"]]}}).to_list()
        pipeline = [{"$match": {"volunteer_id": {"$in": [v["_id"] for v in vols]}, "holder": FREE}},
                    {"$group": {"_id": "$volunteer_id", "n": {"$sum": 1}}}]
        free = {row["_id"]: row["n"] async for row in await slots.aggregate(pipeline)}                # aggregate
        aid = floor_assignment_id(rid, request["round"])
        placing = {"state": "placing", "round": request["round"]}
        for candidate in floor_rank(request, vols, free):
            if await slots.find_one_and_update({"volunteer_id": candidate.volunteer_id, "holder": FREE},   # CAS 2
                                               {"$set": {"holder": aid}}) is not None:
                assignment = {"_id": aid, "request_id": rid, "volunteer_id": candidate.volunteer_id,
                              "district": request["district"], "service": request["service"],
                              "grid": request["grid"], "urgency": request["urgency"], "state": "offered",
                              "created": now, "expires": now + 1e6, "announced": False}
                await assignments.insert_one(assignment)                                              # insert_one 2
                await requests.update_one({"_id": rid, **placing},                                    # update_one 1
                                          {"$set": {"state": "offered", "assignment_id": aid}})
                data = {"request_id": rid, "volunteer_id": candidate.volunteer_id, "assignment_id": aid,
                        "expires_at": "2099-01-01T00:00:00+00:00", "service": request["service"],
                        "category": request["category"], "grid": request["grid"], "urgency": request["urgency"]}
                await outbox_send(outbox, js, *floor_event("volunteer.assigned", data, rid))  # insert 3, find_one, pub, delete
                await assignments.update_one({"_id": aid}, {"$set": {"announced": True}})            # update_one 2
                return
        await requests.update_one({"_id": rid, **placing}, {"$set": {"state": "unmatched"}})
        await outbox_send(outbox, js, *floor_event("request.unmatched", {"request_id": rid, "reason": "full",
                                                                          "tried": []}, rid))

    async def worker(sub: Any) -> None:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                try:
                    await handle(msg)
                    await msg.ack()
                except Exception as exc:
                    print(f"floor-matcher: {exc!r}", file=sys.stderr)
                    await msg.nak()

    subs = [await js.pull_subscribe(f"{FLOOR_EVT}.request.created.*", durable=FLOOR_DURABLE, stream=FLOOR_STREAM)
            for _ in range(workers)]
    tasks = [asyncio.create_task(worker(sub)) for sub in subs]
    ready.set()
    try:
        await _child_wait(stop)
        await asyncio.wait(tasks, timeout=3)
    finally:
        for task in tasks:
            task.cancel()
        await nc.close()
        await mongo.close()


def _child_main(role: str, nats_url: str, mongo_url: str, workers: int, ready: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, also on Ctrl-C
    if role == "intake":
        asyncio.run(floor_intake(nats_url, mongo_url, workers, ready, stop))
    else:
        asyncio.run(floor_matcher(nats_url, mongo_url, workers, ready, stop))


@dataclass
class Children:
    procs: list[tuple[str, Any, Any]] = field(default_factory=list)  # (name, process, stop event)

    def stop(self) -> None:
        for _, proc, stop in self.procs:
            stop.set()
        for name, proc, _ in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.procs.clear()


async def floor_setup(nats_url: str, mongo_url: str, vols: list[Volunteer]) -> None:
    """The floor's stream, durable consumer, databases and indexes, like the services' start-up steps."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        try:
            await js.delete_stream(FLOOR_STREAM)
        except Exception:
            pass
        await js.add_stream(StreamConfig(name=FLOOR_STREAM, subjects=["benchfloor.>"], storage=StorageType.FILE,
                                         num_replicas=1, duplicate_window=600))
        await js.add_consumer(FLOOR_STREAM, ConsumerConfig(
            durable_name=FLOOR_DURABLE, filter_subject=f"{FLOOR_EVT}.request.created.*", ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30, max_deliver=8, max_ack_pending=1000))
        for name in (FLOOR_INTAKE_DB, FLOOR_MATCHER_DB, FLOOR_UNITS_DB):
            await mongo.drop_database(name)
        intake, matcher = mongo[FLOOR_INTAKE_DB], mongo[FLOOR_MATCHER_DB]
        # The indexes IntakeStore, MatcherStore and Outbox create.
        await intake["requests"].create_index([("announced", 1), ("created", 1)])
        await intake["status_changes"].create_index([("request_id", 1), ("seq", 1)])
        await intake["outbox"].create_index("created")
        await matcher["volunteers"].create_index([("district", 1), ("skills", 1)])
        await matcher["slots"].create_index([("volunteer_id", 1), ("holder", 1)])
        await matcher["slots"].create_index("holder")
        await matcher["requests"].create_index([("state", 1), ("lease", 1)])
        await matcher["assignments"].create_index([("state", 1), ("expires", 1)])
        await matcher["assignments"].create_index([("volunteer_id", 1), ("state", 1)])
        await matcher["outbox"].create_index("created")
        # The same roster as the services got, written directly.
        docs = [{"_id": f"fv-{i:05d}", "district": DISTRICT, "grids": [v.grid], "skills": sorted(v.skills),
                 "capacity": v.capacity, "updated": time.time()} for i, v in enumerate(vols)]
        await matcher["volunteers"].insert_many(docs)
        await matcher["slots"].insert_many([{"_id": f"{d['_id']}:{i}", "volunteer_id": d["_id"], "i": i, "holder": FREE}
                                            for d in docs for i in range(d["capacity"])])
    finally:
        await nc.close()
        await mongo.close()


async def floor_phase(nats_url: str, mongo_url: str, args: argparse.Namespace, warm: list[Req], plan: list[Req],
                      children: Children, server_pids: dict[str, int]) -> Result:
    ctx = mp.get_context("spawn")
    workers = int(args.env_map.get("MATCHER_WORKERS", os.environ.get("MATCHER_WORKERS", "4")))
    roles = [("floor-intake", "intake", args.floor_intake_concurrency)] + [(f"floor-matcher-{k}", "matcher", workers) for k in range(args.matchers)]
    readies = []
    for name, role, w in roles:
        ready, stop = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_child_main, args=(role, nats_url, mongo_url, w, ready, stop), name=name, daemon=True)
        proc.start()
        children.procs.append((name, proc, stop))
        readies.append((name, ready))
    for name, ready in readies:
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError(f"{name} did not start")
    pids = {**{name: proc.pid for name, proc, _ in children.procs}, **server_pids}
    log(f"[floor] 1 intake process ({args.floor_intake_concurrency} submit(s) at a time), "
        f"{args.matchers} matcher process(es) x {workers} pull loops")

    nc = await nats.connect(nats_url, name="bench-floor-client")
    observer = await nats.connect(nats_url, name="bench-floor-observer")
    tracker = Tracker("floor")
    try:
        await observer.subscribe(f"{FLOOR_EVT}.>", cb=tracker.on_msg)
        await settled(observer)

        async def call(req: Req) -> dict[str, Any]:
            reply = await nc.request(FLOOR_SUBMIT, json.dumps(req.payload).encode(), timeout=args.timeout)
            answer: dict[str, Any] = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(str(answer["error"]))
            return answer

        if warm:
            warm_tracker = Tracker("warm-up")
            sub = await observer.subscribe(f"{FLOOR_EVT}.>", cb=warm_tracker.on_msg)
            await drive(warm_tracker, warm, 10.0, call, args.timeout, progress=False)
            await sub.unsubscribe()
            await asyncio.sleep(0.5)
        return await measured_run(tracker, plan, args, call, pids)
    finally:
        await nc.close()
        await observer.close()
