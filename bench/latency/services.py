"""The services run: the four services as processes, driven through linli.api.intake.submit."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import nats
from pymongo import AsyncMongoClient

from bench.latency.cpu import all_processes, cpu_delta, cpu_snapshot, foreign_cpu, our_pids
from bench.latency.plan import FREE, Req, Volunteer, log
from bench.latency.tracking import CallFn, Result, Tracker, drive, summarize
from contracts import API
from linli.client import Client
from linli.system import System
from services.common.bus import settled


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
        await settled(observer)

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
