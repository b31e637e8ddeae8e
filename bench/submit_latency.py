#!/usr/bin/env python
"""Submit latency and throughput of Linli, against the floor of the bare operations one request needs.

    python bench/submit_latency.py --requests 300 --rate 50 [--matchers 1] [--volunteers 50]

What it does, in one run and one temp directory:

1. Starts a real nats-server and nx-27017 (MongoDB wire, SQLite-backed) on free ports, then the four
   services as processes (linli.system.System, MATCHER_OFFER_TTL set high so offers never lapse).
2. SERVICES: registers volunteers, waits for their volunteer.registered events and for the matcher's
   capacity slots, then submits N requests open-loop at R/s (sends scheduled at fixed intervals, never
   waiting for a reply before the next). Latencies are measured from each request's *scheduled* send time
   (no coordinated omission) to: the submit reply, the request.created event and the first
   volunteer.assigned / request.unmatched event seen by a subscriber on linli.evt.>.
3. Stops the services. UNIT COSTS: each bare operation run serially on the idle servers.
4. FLOOR: the same operations the intake and matcher perform for one request, with bare nats-py and
   PyMongo's AsyncMongoClient, no FastStream, no pydantic, no services code on the path: one floor
   "intake" process answering core-NATS requests (like intake, one message at a time), K floor "matcher"
   processes each running MATCHER_WORKERS pull loops on one durable consumer (like the matcher's workers).
   Same N, same rate, same volunteers, same indexes, same servers.
5. Prints a table, the overhead ratios, CPU seconds per process, and exits non-zero if any request had
   no outcome within --timeout (LOST) or a submit failed.

Operations for one request, submit -> volunteer.assigned, as read from commit 21160fb (re-count them when
the intake's submit or the matcher's place/offer change, and keep the floor below in step):

  Client: 1 core NATS request-reply, linli.api.intake.submit (linli/client.py Client.call -> nc.request).

  intake submit (services/intake/app.py submit, one message at a time: FastStream core subscriber, cb=consume):
    requests.insert_one                       IntakeStore.add_request
    status_changes.insert_one                 IntakeStore.add_request -> record_change
    outbox.insert_one                         announce -> Outbox.send -> Outbox.store
    outbox.find_one                           Outbox.publish_stored
    JetStream publish request.created         Outbox.publish_stored: broker.publish(stream=LINLI, Nats-Msg-Id) awaits PubAck
    outbox.delete_one                         Outbox.publish_stored
    requests.update_one                       announce -> IntakeStore.mark_announced
    = 3 insert_one, 1 find_one, 1 delete_one, 1 update_one, 1 JS publish; then the reply.

  matcher request_created (services/matcher/app.py; durable pull consumer "matcher-request-created",
  PullSub(batch 8, timeout 2 s), MATCHER_WORKERS=4 handlers per replica, explicit ack):
    1 pull-consume hop (fetch + ack)          services/common/bus.py on_event
    requests.insert_one                       MatcherStore.add_request
    requests.find_one_and_update  (CAS)       place -> MatcherStore.claim
    volunteers.find(...).to_list              place -> MatcherStore.skilled_volunteers
    slots.aggregate ($match/$group)           place -> MatcherStore.free_slots
    slots.find_one_and_update     (CAS)       place -> MatcherStore.reserve (1 when the best candidate has room)
    assignments.insert_one                    offer -> MatcherStore.add_assignment
    requests.update_one           (CAS)       offer -> MatcherStore.move_request
    outbox.insert_one                         offer -> Outbox.send -> store
    outbox.find_one                           Outbox.publish_stored
    JetStream publish volunteer.assigned      Outbox.publish_stored
    outbox.delete_one                         Outbox.publish_stored
    assignments.update_one                    offer -> MatcherStore.mark_announced
    = 3 insert_one, 1 find_one, 2 find_one_and_update, 1 find, 1 aggregate, 2 update_one, 1 delete_one,
      1 JS publish, 1 pull hop.

  Total: 1 NATS request-reply, 2 JetStream publishes (with Nats-Msg-Id), 1 pull-consume hop, 17 Mongo ops:
  6 insert_one, 2 find_one, 2 find_one_and_update, 1 find, 1 aggregate, 3 update_one, 2 delete_one.
  Not on the path but in the same run: notifier (volunteer.assigned -> ~10 Mongo ops, an intake.contact call
  for an uncached volunteer, an outbox publish of notification.delivered), ledger (idle here) and every
  service's outbox relay / matcher sweep once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import yaml  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig  # noqa: E402
from pymongo import AsyncMongoClient, ReturnDocument  # noqa: E402

from contracts import API  # noqa: E402
from linli.client import Client  # noqa: E402
from linli.embedded import Server, start_mongo, start_nats, tool  # noqa: E402
from linli.system import SERVICES, System  # noqa: E402

DISTRICT = "benchdist"
GRIDS = [f"g-{n:02d}" for n in range(5)]
CATEGORIES = ["repair", "elderly", "meals", "tutoring", "health"]
FREE = ""

# The floor's own names: a separate stream and databases on the same servers.
FLOOR_STREAM = "BENCHFLOOR"
FLOOR_EVT = "benchfloor.evt"  # events: benchfloor.evt.<entity>.<verb>.<district>
FLOOR_SUBMIT = "benchfloorapi.submit"  # outside the stream's subjects, a core request like intake.submit
FLOOR_ECHO = "benchfloorapi.echo"
FLOOR_INTAKE_DB = "benchfloor_intake"
FLOOR_MATCHER_DB = "benchfloor_matcher"
FLOOR_UNITS_DB = "benchfloor_units"
FLOOR_DURABLE = "floor-matcher"

OUTCOMES = ("volunteer.assigned", "request.unmatched")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------- workload


@dataclass(frozen=True)
class Volunteer:
    name: str
    phone: str
    grid: str
    skills: list[str]
    capacity: int

    def call(self) -> dict[str, Any]:
        return {"name": self.name, "phone": self.phone, "district": DISTRICT, "grids": [self.grid],
                "skills": self.skills, "capacity": self.capacity}


@dataclass(frozen=True)
class Req:
    key: str  # the idempotency key; the request id is what the submit reply says
    payload: dict[str, Any]


def write_places(data_dir: Path) -> Path:
    """The bench's district and grids, for intake to accept (LINLI_PLACES): the same grid or the district."""
    path = data_dir / "places.yaml"
    grids = {g: {"name": f"基准网格{g[-2:]}"} for g in GRIDS}
    path.write_text(yaml.safe_dump({DISTRICT: {"name": "基准测试区", "grids": grids}}, allow_unicode=True),
                    encoding="utf-8")
    return path


def volunteers_plan(count: int, capacity: int) -> list[Volunteer]:
    # Each volunteer: one grid, two categories; every category is covered by ~2/5 of the roster.
    return [
        Volunteer(f"志愿者{i}", f"139{i:08d}", GRIDS[i % len(GRIDS)],
                  [CATEGORIES[(i // len(GRIDS)) % 5], CATEGORIES[(i // len(GRIDS) + 2) % 5]], capacity)
        for i in range(count)
    ]


def requests_plan(count: int, tag: str, rng: random.Random) -> list[Req]:
    catalog = yaml.safe_load((ROOT / "services" / "intake" / "catalog.yaml").read_text(encoding="utf-8"))
    items = {c["id"]: [item["id"] for item in c["items"]] for c in catalog["categories"]}
    plan = []
    for i in range(count):
        category = rng.choice(CATEGORIES)
        key = f"bench-{tag}-{i:06d}"
        payload = {
            "idempotency_key": key, "district": DISTRICT, "grid": rng.choice(GRIDS),
            "service": rng.choice(items[category]), "description": f"基准测试请求 {i}: 需要上门帮忙",
            "urgency": rng.choice(["routine", "soon", "urgent"]), "channel": rng.choice(["kiosk", "hotline", "app"]),
            "resident": {"name": f"居民{i}", "phone": f"138{i:08d}", "address": f"泉外园{i % 30}栋{i % 6}单元{i % 900}"},
        }
        plan.append(Req(key, payload))
    return plan


# ---------------------------------------------------------------- measurement


@dataclass
class Tracker:
    """Times, on one clock (perf_counter), of everything seen for each request.

    Sends and replies are keyed by idempotency key, events by request id; the submit reply joins them, so an
    event seen before its reply still counts.
    """

    label: str
    scheduled: dict[str, float] = field(default_factory=dict)  # key ->
    sent: dict[str, float] = field(default_factory=dict)  # key ->
    replied: dict[str, float] = field(default_factory=dict)  # key ->
    rid: dict[str, str] = field(default_factory=dict)  # key -> request id
    errors: dict[str, str] = field(default_factory=dict)  # key ->
    created: dict[str, float] = field(default_factory=dict)  # request id ->
    outcome: dict[str, tuple[float, str]] = field(default_factory=dict)  # request id ->
    registered: set[str] = field(default_factory=set)

    def outcome_of(self, key: str) -> tuple[float, str] | None:
        rid = self.rid.get(key)
        return self.outcome.get(rid) if rid else None

    async def on_msg(self, msg: Any) -> None:
        now = time.perf_counter()
        tokens = msg.subject.split(".")
        if len(tokens) < 5:
            return
        kind = f"{tokens[2]}.{tokens[3]}"
        if kind not in OUTCOMES and kind not in ("request.created", "volunteer.registered"):
            return
        data = json.loads(msg.data).get("data", {})
        if kind == "volunteer.registered":
            self.registered.add(data.get("volunteer_id", ""))
            return
        rid = data.get("request_id", "")
        if kind == "request.created":
            self.created.setdefault(rid, now)
        elif rid not in self.outcome:
            self.outcome[rid] = (now, kind)


@dataclass
class Result:
    label: str
    n: int
    rate: float
    reply: list[float]
    created: list[float]
    e2e: list[float]
    matcher_part: list[float]
    assigned: int
    unmatched: int
    lost: list[str]
    errors: dict[str, str]
    throughput: float
    achieved_rate: float
    send_lag_max: float
    backlog_at_last_send: int
    wall: float
    cpu: dict[str, float]
    foreign: list[tuple[float, str]] = field(default_factory=list)


CallFn = Callable[[Req], Awaitable[dict[str, Any]]]


async def drive(tracker: Tracker, plan: list[Req], rate: float, call: CallFn, timeout: float,
                progress: bool = True) -> tuple[float, float, float, int]:
    """Open loop: schedule each send at start + i/rate; wait for every outcome or the timeout.

    Returns (first scheduled time, last scheduled time, time the last outcome was seen, backlog at last send).
    """
    loop_tasks: set[asyncio.Task[None]] = set()
    keys = [r.key for r in plan]

    async def one(req: Req, at: float) -> None:
        tracker.sent[req.key] = time.perf_counter()
        try:
            reply = await call(req)
            tracker.replied[req.key] = time.perf_counter()
            if not reply.get("request_id"):
                tracker.errors[req.key] = f"unexpected reply {reply}"
            else:
                tracker.rid[req.key] = reply["request_id"]
        except Exception as exc:  # a timeout or a refused call
            tracker.errors[req.key] = repr(exc)

    def outcomes() -> list[str]:
        return [o[1] for k in keys if (o := tracker.outcome_of(k))]

    def done() -> int:
        return len(outcomes())

    async def report() -> None:
        begin = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            seen = outcomes()
            log(f"[{tracker.label:8} {time.perf_counter() - begin:5.1f}s] sent {sum(1 for k in keys if k in tracker.sent)}/{len(keys)}"
                f"  replied {sum(1 for k in keys if k in tracker.replied)}"
                f"  created {sum(1 for k in keys if tracker.rid.get(k) in tracker.created)}"
                f"  assigned {seen.count('volunteer.assigned')}  unmatched {seen.count('request.unmatched')}"
                f"  errors {sum(1 for k in keys if k in tracker.errors)}")

    reporter = asyncio.create_task(report()) if progress else None
    try:
        start = time.perf_counter() + 0.05
        for i, req in enumerate(plan):
            at = start + i / rate
            tracker.scheduled[req.key] = at
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(req, at))
            loop_tasks.add(task)
            task.add_done_callback(loop_tasks.discard)
        last = start + (len(plan) - 1) / rate
        backlog = len(plan) - done()
        deadline = last + timeout
        while done() < len(plan) and time.perf_counter() < deadline:
            if not loop_tasks and done() + sum(1 for k in keys if k in tracker.errors) >= len(plan):
                break  # every request either has its outcome or failed to submit
            await asyncio.sleep(0.02)
        seen = [o[0] for k in keys if (o := tracker.outcome_of(k))]
        return start, last, max(seen) if seen else time.perf_counter(), backlog
    finally:
        if reporter:
            reporter.cancel()
        for task in list(loop_tasks):
            task.cancel()


def summarize(tracker: Tracker, plan: list[Req], rate: float, window: tuple[float, float, float, int],
              cpu: dict[str, float]) -> Result:
    start, last, end, backlog = window
    keys = [r.key for r in plan]
    sched, rid = tracker.scheduled, tracker.rid
    ms = 1000.0
    reply = [(tracker.replied[k] - sched[k]) * ms for k in keys if k in tracker.replied]
    created = [(tracker.created[rid[k]] - sched[k]) * ms for k in keys if rid.get(k) in tracker.created]
    e2e = [(o[0] - sched[k]) * ms for k in keys if (o := tracker.outcome_of(k))]
    matcher_part = [(o[0] - tracker.created[rid[k]]) * ms for k in keys
                    if (o := tracker.outcome_of(k)) and rid[k] in tracker.created]
    kinds = [o[1] for k in keys if (o := tracker.outcome_of(k))]
    lost = [rid.get(k, f"{k} (no reply)") for k in keys if not tracker.outcome_of(k)]
    lags = [(tracker.sent[k] - sched[k]) * ms for k in keys if k in tracker.sent]
    sends = [tracker.sent[k] for k in keys if k in tracker.sent]
    achieved = (len(sends) - 1) / (max(sends) - min(sends)) if len(sends) > 1 and max(sends) > min(sends) else math.nan
    outcomes = len(kinds)
    return Result(
        label=tracker.label, n=len(keys), rate=rate, reply=reply, created=created, e2e=e2e, matcher_part=matcher_part,
        assigned=kinds.count("volunteer.assigned"), unmatched=kinds.count("request.unmatched"), lost=lost,
        errors={k: e for k, e in tracker.errors.items() if k in set(keys)},
        throughput=outcomes / (end - start) if end > start else math.nan, achieved_rate=achieved,
        send_lag_max=max(lags) if lags else math.nan, backlog_at_last_send=backlog, wall=end - start, cpu=cpu,
    )


# ---------------------------------------------------------------- CPU accounting (Linux /proc)

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """utime+stime of pid and (unless it is this script, the parent of everything) its live descendants."""
    if not descendants:
        t = os.times()
        return t.user + t.system
    try:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / TICK
            except (OSError, IndexError, ValueError):
                pass
            todo.extend(children.get(p, []))
        return total
    except OSError:
        return math.nan


MACHINE = "(whole machine busy)"
STEAL = "(hypervisor steal)"


def machine_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot, from /proc/stat: what else ran, and what the host took."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (f[0] + f[1] + f[2] + f[5] + f[6]) / TICK, f[7] / TICK
    except (OSError, ValueError, IndexError):
        return math.nan, math.nan


def all_processes() -> dict[int, tuple[str, float]]:
    """pid -> (command, CPU seconds) for every process, to name what else ran during a measurement."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = stat.rsplit(")", 1)[1].split()
                found[int(entry)] = (cmd.strip()[:70] or stat.split("(", 1)[1].rsplit(")", 1)[0],
                                     (int(fields[11]) + int(fields[12])) / TICK)
            except (OSError, IndexError, ValueError):
                continue
    return found


def foreign_cpu(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                ours: set[int]) -> list[tuple[float, str]]:
    """CPU seconds of processes that are not this benchmark's, busiest first (those that ended are not seen)."""
    used = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before[pid][1] if pid in before else cpu
        if delta > 0.05:
            used.append((delta, f"{pid} {cmd}"))
    return sorted(used, reverse=True)


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: cpu_seconds(pid, descendants=pid != os.getpid()) for name, pid in pids.items()}
    snap[MACHINE], snap[STEAL] = machine_seconds()
    return snap


def our_pids(pids: dict[str, int]) -> set[int]:
    """The measured processes and their descendants."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    ours, todo = set(), list(pids.values())
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(tree.get(pid, []))
    return ours


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


# ---------------------------------------------------------------- services phase


async def measured_run(tracker: Tracker, plan: list[Req], args: argparse.Namespace, call: CallFn,
                       pids: dict[str, int]) -> Result:
    """The timed part of a phase: drive the plan and take the CPU each process and the rest of the machine used."""
    everyone = all_processes()
    before = cpu_snapshot(pids)
    window = await drive(tracker, plan, args.rate, call, args.timeout)
    after = cpu_snapshot(pids)
    result = summarize(tracker, plan, args.rate, window, cpu_delta(before, after))
    result.foreign = foreign_cpu(everyone, all_processes(), our_pids(pids))
    return result


async def services_phase(system: System, args: argparse.Namespace, vols: list[Volunteer], warm: list[Req],
                         plan: list[Req], pids: dict[str, int], matcher_db: str) -> Result:
    client = await Client.connect(system.nats_url)
    observer = await nats.connect(system.nats_url, name="bench-observer")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(system.mongo_url)
    tracker = Tracker("services")
    try:
        await observer.subscribe("linli.evt.>", cb=tracker.on_msg)
        await observer.flush()

        # Volunteers: a few calls at a time, then their events, then the matcher's capacity slots.
        t0 = time.perf_counter()
        gate = asyncio.Semaphore(8)
        ids: list[str] = []

        async def register(v: Volunteer) -> None:
            async with gate:
                ids.append((await client.call(API.INTAKE_REGISTER_VOLUNTEER, v.call(), timeout=30))["volunteer_id"])

        await asyncio.gather(*(register(v) for v in vols))
        want_slots = sum(v.capacity for v in vols)
        slots = mongo[matcher_db]["slots"]
        deadline = time.perf_counter() + 120
        last_print = 0.0
        while True:
            seen = len(tracker.registered & set(ids))
            have = await slots.count_documents({"holder": FREE})
            if seen >= len(ids) and have >= want_slots:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"roster not ready after 120 s: {seen}/{len(ids)} registered events, "
                                   f"{have}/{want_slots} matcher slots")
            if time.perf_counter() - last_print > 1.0:
                log(f"[setup] volunteer.registered seen {seen}/{len(ids)}; matcher free slots {have}/{want_slots}")
                last_print = time.perf_counter()
            await asyncio.sleep(0.2)
        log(f"[setup] {len(ids)} volunteers registered, {want_slots} slots in the matcher after "
            f"{time.perf_counter() - t0:.1f} s; settling {args.settle} s")
        await asyncio.sleep(args.settle)

        async def call(req: Req) -> dict[str, Any]:
            return await client.call(API.INTAKE_SUBMIT, req.payload, timeout=args.timeout)

        if warm:
            log(f"[services] warm-up: {len(warm)} requests at 10/s (not counted)")
            warm_tracker = Tracker("warm-up")
            sub = await observer.subscribe("linli.evt.>", cb=warm_tracker.on_msg)
            await drive(warm_tracker, warm, 10.0, call, args.timeout, progress=False)
            await sub.unsubscribe()
            if sum(1 for r in warm if warm_tracker.outcome_of(r.key)) < len(warm):
                log("[services] warning: some warm-up requests had no outcome")
            await asyncio.sleep(0.5)

        return await measured_run(tracker, plan, args, call, pids)
    finally:
        await client.close()
        await observer.close()
        await mongo.close()


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
    await nc.flush()
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
        await observer.flush()

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
        await responder.flush()
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


# ---------------------------------------------------------------- report


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def machine_info() -> list[str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nats_version = subprocess.run([tool("nats-server"), "--version"], capture_output=True, text=True,
                                      timeout=10).stdout.strip()
    except Exception:
        nats_version = "?"

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    head = git("rev-parse", "--short", "HEAD")
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "services", "contracts", "linli").splitlines()]
    if not head:
        code = f"code: {ROOT} (not a git checkout)"
    else:
        code = f"code: {ROOT} at {head}" + (f", with uncommitted changes in {len(dirty)} file(s): "
                                            + ", ".join(dirty[:6]) + (" …" if len(dirty) > 6 else "") if dirty else ", clean")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"machine: nproc={affinity} ({model or platform.processor() or '?'}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"versions: {nats_version}, nx-27017 {version('nx-27017')}, pymongo {version('pymongo')}, "
        f"nats-py {version('nats-py')}, faststream {version('faststream')}, pydantic {version('pydantic')}",
        code,
    ]


def print_report(args: argparse.Namespace, svc: Result | None, floor: Result | None,
                 units: dict[str, list[float]] | None, vols: list[Volunteer], warm: int) -> None:
    out = print
    workers = args.env_map.get("MATCHER_WORKERS", os.environ.get("MATCHER_WORKERS", "4"))
    out()
    out("=" * 78)
    out("Linli submit latency — results")
    out("=" * 78)
    out("command: " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))
    for line in machine_info():
        out(line)
    out(f"workload: {args.requests} requests open-loop at {args.rate:g}/s (+{warm} warm-up at 10/s, not counted); "
        f"matchers={args.matchers} x {workers} workers; {len(vols)} volunteers x capacity {args.capacity} "
        f"in {len(GRIDS)} grids, 2 of {len(CATEGORIES)} categories each; outcome timeout {args.timeout:g} s")
    if args.env_map:
        out(f"extra service env: {args.env_map}")
    if args.floor_intake_concurrency != 1:
        out(f"floor intake handles {args.floor_intake_concurrency} submits at once (the intake service: 1)")
    out("latencies in ms from each request's scheduled send time; percentiles nearest-rank")
    out()
    cols = [("services", svc), ("floor", floor)]
    head = f"{'':34}" + "".join(f"{name:>12}" for name, r in cols if r) + (f"{'svc/floor':>12}" if svc and floor else "")
    out(head)

    def row(label: str, get: Callable[[Result], float], digits: int = 1, show_ratio: bool = True) -> None:
        line = f"{label:34}"
        values = []
        for _, r in cols:
            if r:
                v = get(r)
                values.append(v)
                line += f"{fmt(v, digits):>12}"
        if svc and floor and show_ratio:
            line += f"{ratio(values[0], values[1]):>12}"
        out(line)

    for p in (50, 95, 99):
        row(f"submit reply p{p}", lambda r, p=p: pct(r.reply, p))
    for p in (50, 95):
        row(f"submit -> request.created p{p}", lambda r, p=p: pct(r.created, p))
    for p in (50, 95):
        row(f"created -> outcome p{p}", lambda r, p=p: pct(r.matcher_part, p))
    for p in (50, 95, 99):
        row(f"submit -> assigned p{p}", lambda r, p=p: pct(r.e2e, p))
    row("submit -> assigned max", lambda r: max(r.e2e) if r.e2e else math.nan)
    row("throughput (outcomes/s)", lambda r: r.throughput)
    row("achieved send rate (/s)", lambda r: r.achieved_rate, show_ratio=False)
    row("max send lag (ms)", lambda r: r.send_lag_max, show_ratio=False)
    row("backlog at last send (requests)", lambda r: float(r.backlog_at_last_send), 0, show_ratio=False)
    row("assigned", lambda r: float(r.assigned), 0, show_ratio=False)
    row("unmatched", lambda r: float(r.unmatched), 0, show_ratio=False)
    row("LOST (no outcome)", lambda r: float(len(r.lost)), 0, show_ratio=False)
    row("submit errors", lambda r: float(len(r.errors)), 0, show_ratio=False)
    row("wall, first send -> last outcome (s)", lambda r: r.wall, 2, show_ratio=False)
    if svc and floor:
        out()
        out(f"overhead: submit->assigned p50 {ratio(pct(svc.e2e, 50), pct(floor.e2e, 50))} the floor's, "
            f"submit reply p50 {ratio(pct(svc.reply, 50), pct(floor.reply, 50))}; "
            f"throughput {ratio(svc.throughput, floor.throughput)} the floor's")

    for r in (svc, floor):
        if r and r.cpu:
            out()
            cpu = dict(r.cpu)
            busy = cpu.pop(MACHINE, math.nan)
            steal = cpu.pop(STEAL, math.nan)
            out(f"CPU during the {r.label} run ({r.wall:.1f} s wall): process, CPU s, % of one core, CPU ms/request")
            for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
                out(f"  {name:18}{sec:8.2f}{100 * sec / r.wall if r.wall else math.nan:8.0f}%"
                    f"{1000 * sec / r.n:10.1f}")
            total = sum(v for v in cpu.values() if not math.isnan(v))
            out(f"  {'total':18}{total:8.2f}{100 * total / r.wall if r.wall else math.nan:8.0f}%{1000 * total / r.n:10.1f}"
                f"   (machine: {os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%)")
            others = busy - total
            out(f"  {'other processes':18}{others:8.2f}{100 * others / r.wall if r.wall else math.nan:8.0f}%"
                f"   (machine busy {fmt(busy, 2)} s incl. kernel; over ~10% means other work disturbed the figures)")
            out(f"  {'hypervisor steal':18}{steal:8.2f}{100 * steal / r.wall if r.wall else math.nan:8.0f}%"
                f"   (vCPU time the host gave to others; over ~10% means the figures were disturbed)")
            for sec, who in r.foreign[:3]:
                out(f"    {sec:6.2f} s  {who}")

    if units:
        out()
        out(f"unit costs, each op serially on idle servers ({args.unit_samples} samples): p50 / p99 ms, x per request")
        est = 0.0
        for name in UNIT_OPS:
            values = units[name]
            est += PER_REQUEST[name] * pct(values, 50)
            out(f"  {name:30}{fmt(pct(values, 50), 2):>8}{fmt(pct(values, 99), 2):>8}   x{PER_REQUEST[name]}")
        # Critical path to volunteer.assigned: half the request leg, then the ops before each publish.
        m = {name: pct(units[name], 50) for name in UNIT_OPS}
        path = (0.5 * m["nats request-reply"] + 6 * m["insert_one"] + 2 * m["find_one"] + 2 * m["find_one_and_update"]
                + m["find().to_list"] + m["aggregate"] + m["update_one"] + m["js.publish (PubAck)"]
                + m["js.publish + pull delivery"])
        reply = (m["nats request-reply"] + 3 * m["insert_one"] + m["find_one"] + m["js.publish (PubAck)"]
                 + m["delete_one"] + m["update_one"])
        out(f"  sum of all ops for one request: {est:.1f} ms; serial critical path to the reply {reply:.1f} ms, "
            f"to volunteer.assigned {path:.1f} ms")
    if svc and svc.errors:
        out()
        out("first submit errors: " + "; ".join(f"{k}: {v}" for k, v in list(svc.errors.items())[:3]))
    for r in (svc, floor):
        if r and r.lost:
            out(f"{r.label}: LOST {len(r.lost)} request(s) with no outcome within {args.timeout:g} s, e.g. "
                + ", ".join(r.lost[:5]))
    out("=" * 78)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", "-n", type=int, default=300, help="requests measured (default 300)")
    parser.add_argument("--rate", "-r", type=float, default=50.0, help="requests per second, open loop (default 50)")
    parser.add_argument("--matchers", "-k", type=int, default=1, help="matcher replicas (default 1)")
    parser.add_argument("--volunteers", "-v", type=int, default=None,
                        help="volunteers (default 50, more if N+warm-up exceeds 2/3 of the slots)")
    parser.add_argument("--capacity", type=int, default=20, help="open assignments per volunteer, 1..20 (default 20)")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted requests first, at 10/s (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds after the last send before a request without outcome is LOST (default 30)")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds after the roster is ready (default 1.5)")
    parser.add_argument("--unit-samples", type=int, default=200, help="samples per op for unit costs (default 200)")
    parser.add_argument("--skip-floor", action="store_true", help="services only")
    parser.add_argument("--skip-services", action="store_true", help="floor and unit costs only")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the services, e.g. MATCHER_WORKERS=8 (repeatable)")
    parser.add_argument("--floor-intake-concurrency", type=int, default=1, metavar="C",
                        help="submits the floor intake handles at once (default 1, as the intake service does)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-data", action="store_true", help="keep the temp dir (logs) even on success")
    args = parser.parse_args(argv)
    if not 1 <= args.capacity <= 20:
        parser.error("--capacity must be 1..20 (RegisterVolunteer)")
    if args.rate <= 0 or args.requests < 1 or args.matchers < 1:
        parser.error("--rate, --requests and --matchers must be positive")
    args.env_map = dict(item.split("=", 1) for item in args.env)
    if args.volunteers is None:
        args.volunteers = max(50, math.ceil(1.5 * (args.requests + args.warmup) / args.capacity))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    vols = volunteers_plan(args.volunteers, args.capacity)
    slots = sum(v.capacity for v in vols)
    if args.requests + args.warmup > slots:
        log(f"warning: {args.requests + args.warmup} requests for {slots} slots: offers never lapse, expect unmatched")
    tag = uuid.uuid4().hex[:6]
    warm = requests_plan(args.warmup, f"{tag}-warm", rng)
    plan = requests_plan(args.requests, tag, rng)
    floor_warm = requests_plan(args.warmup, f"{tag}-fwarm", rng)
    floor_plan = requests_plan(args.requests, f"{tag}-floor", rng)

    data_dir = Path(tempfile.mkdtemp(prefix="linli-bench-"))
    servers: list[Server] = []
    system: System | None = None
    children = Children()
    svc = floor = None
    units = None
    ok = False
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        log(f"[setup] data and logs in {data_dir}")
        servers.append(start_nats(data_dir))
        servers.append(start_mongo(data_dir))
        nats_url, mongo_url = servers[0].url, servers[1].url
        server_pids = {s.name: s.process.pid for s in servers}
        env = {"MATCHER_OFFER_TTL": "1000000", "LINLI_PLACES": str(write_places(data_dir)), **args.env_map}
        prefix = env.get("LINLI_DB_PREFIX", os.environ.get("LINLI_DB_PREFIX", "linli"))

        if not args.skip_services:
            # System.start, step by step, so that a process spawned before a failed start is still stopped.
            system = System(data_dir, nats_url, mongo_url, env=env)
            for name in SERVICES:
                for n in range(args.matchers if name == "matcher" else 1):
                    system.spawn(name, n)
            system.wait_ready()
            log(f"[setup] NATS {nats_url}, MongoDB {mongo_url}; "
                + ", ".join(f"{k} (pid {p.pid})" for k, p in system.processes.items()))
            pids = {**{k: p.pid for k, p in system.processes.items()}, **server_pids, "bench (this)": os.getpid()}
            svc = asyncio.run(services_phase(system, args, vols, warm, plan, pids, f"{prefix}_matcher"))
            system.stop()
            system = None

        if not args.skip_floor:
            asyncio.run(floor_setup(nats_url, mongo_url, vols))
            log(f"[units] {args.unit_samples} serial samples of each bare operation")
            units = asyncio.run(unit_costs(nats_url, mongo_url, args.unit_samples))
            floor = asyncio.run(floor_phase(nats_url, mongo_url, args, floor_warm, floor_plan, children,
                                            {**server_pids, "bench (this)": os.getpid()}))
        ok = True
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything")
    finally:
        children.stop()
        if system is not None:
            system.stop()
        for server in reversed(servers):
            server.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if interrupted:
        log(f"logs kept in {data_dir}")
        return 130
    print_report(args, svc, floor, units, vols, args.warmup)
    bad = [r for r in (svc, floor) if r and (r.lost or r.errors)]
    if ok and not bad and not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"logs kept in {data_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
