"""Hundreds of requests through the whole loop while every service and nats-server are SIGKILLed at random.

Residents submit, volunteers accept and complete, residents rate, all over linli.api.* the way a kiosk
and a volunteer's phone would, retrying a call that got no answer. The supervisor brings each killed
process back. Afterwards every request is rated, nobody was offered or given a request twice, and every
completion was credited exactly once. LINLI_CHAOS_SEED replays a run; the figures are printed."""

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import yaml
from nats.aio.client import Client as NATS

from contracts import API
from linli.client import caught_up
from linli.embedded import listening
from linli.system import FRONTS, System
from services.common.runtime import health_subject
from services.matcher import config as matcher_config
from services.ledger.verify import run as verify_ledger
from tests.conftest import stored_messages

pytestmark = pytest.mark.system

REQUESTS, AT_ONCE = 200, 12
VOLUNTEERS, CAPACITY = 16, 3
KILLS = 11
SERVERS = ("nats-server", "nx-27017")
TARGETS = ["intake-0", "matcher-0", "matcher-1", "notifier-0", "ledger-0", *SERVERS]
DISTRICT, GRID = "chaos", "g1"
SEED = int(os.environ.get("LINLI_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))


@pytest.fixture(scope="module")
def announced() -> list[str]:
    return []


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, announced: list[str]) -> Iterator[System]:
    # 200 requests on 16 volunteers is a month of work in minutes: the weekly fatigue limits are lifted, so
    # what is tested is the loop under faults, not the limits (which have tests of their own).
    folder = tmp_path_factory.mktemp("chaos")
    rules = yaml.safe_load(Path(matcher_config.__file__).with_name("matching.yaml").read_text(encoding="utf-8"))
    rules["fatigue"] = {"offers_per_week": 0, "hours_per_week": 0}
    (folder / "matching.yaml").write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    running = System.start(
        folder / "system",
        replicas={"matcher": 2},
        supervise=True,
        announce=announced.append,
        env={"MATCHER_RULES": str(folder / "matching.yaml"),
             "MATCHER_OFFER_TTL": "900", "MATCHER_SWEEP_INTERVAL": "0.5", "MATCHER_LEASE": "3",
             "LINLI_ACK_WAIT": "3", "LINLI_LOG_LEVEL": "WARNING", "LINLI_STOP_TIMEOUT": "3"},
    )
    yield running
    running.stop()


@dataclass
class Figures:
    kills: list[tuple[str, float]] = field(default_factory=list)  # what, seconds until it answered again
    retried_calls: int = 0
    submitted: dict[int, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    internal_errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    rated: int = 0


class Kiosk:
    """Calls as a kiosk or a volunteer's phone makes them: a call that gets no answer is made again,
    with the same idempotency key, until one comes."""

    def __init__(self, nc: NATS, figures: Figures) -> None:
        self.nc, self.figures = nc, figures

    async def call(self, subject: str, payload: dict[str, Any], patience: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + patience
        while True:
            try:
                reply = await self.nc.request(subject, json.dumps(payload).encode(), timeout=3)
                result: dict[str, Any] = json.loads(reply.data)
                if result.get("error", {}).get("code") != "internal":  # "internal" asks to try again
                    return result
                self.figures.internal_errors[f"{subject}: {result['error'].get('message')}"] += 1
            except (nats.errors.Error, asyncio.TimeoutError):  # no responders, timeout, reconnecting
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{subject} {payload} got no answer in {patience:.0f} s")
            self.figures.retried_calls += 1
            await asyncio.sleep(0.25)

    async def status(self, request_id: str) -> str:
        return str((await self.call(API.INTAKE_STATUS, {"request_id": request_id})).get("status"))

    async def until_status(self, request_id: str, wanted: str, patience: float = 120.0) -> None:
        deadline = time.monotonic() + patience
        while (status := await self.status(request_id)) != wanted:
            assert time.monotonic() < deadline, f"request {request_id} is {status}, not {wanted}"
            await asyncio.sleep(0.4)


async def resident(kiosk: Kiosk, n: int, figures: Figures) -> str:
    submitted = await kiosk.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"chaos-{SEED}-{n}", "district": DISTRICT, "grid": GRID, "service": "repair.plumbing",
        "description": "水龙头漏水", "channel": "kiosk", "resident": {"name": "居民", "phone": f"1380{n:07d}"},
    })
    assert "request_id" in submitted, submitted
    request_id = figures.submitted[n] = str(submitted["request_id"])
    await kiosk.until_status(request_id, "completed")
    await kiosk.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "好"})
    await kiosk.until_status(request_id, "rated")
    return request_id


async def volunteer(kiosk: Kiosk, volunteer_id: str, hours: str, stop: asyncio.Event) -> None:
    """Accepts every offer and reports every accepted job done."""
    while not stop.is_set():
        work = (await kiosk.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": volunteer_id})).get("assignments", [])
        for job in work:
            if job["status"] == "offered":
                await kiosk.call(API.MATCHER_RESPOND, {
                    "assignment_id": job["assignment_id"], "volunteer_id": volunteer_id, "accept": True})
            elif job["status"] == "accepted":
                await kiosk.call(API.MATCHER_COMPLETE, {
                    "assignment_id": job["assignment_id"], "volunteer_id": volunteer_id, "hours": hours})
        await asyncio.sleep(0.5)


async def answered_again(system: System, kiosk: Kiosk, target: str, old_pid: int) -> None:
    """A service is back when its new process says it is ready; a server when it listens on its old
    port and every process answers a health call again, and, for the database, intake reads from it."""
    while True:
        if target not in SERVERS:
            if system.ready_pid(target) not in (None, old_pid):
                return
        elif system.server(target).process.pid != old_pid and listening(system.server(target).port):
            if all([await answers(kiosk.nc, key) for key in list(system.processes)
                    if key.rsplit("-", 1)[0] not in FRONTS]) and (  # the web answers over HTTP
                target != "nx-27017" or await reads(kiosk.nc)
            ):
                return
        await asyncio.sleep(0.1)


async def reads(nc: NATS) -> bool:
    try:
        reply = await nc.request(API.INTAKE_STATUS, b'{"request_id": "r-none"}', timeout=1)
    except (nats.errors.Error, asyncio.TimeoutError):
        return False
    return bool(json.loads(reply.data).get("error", {}).get("code") == "not_found")


async def answers(nc: NATS, key: str) -> bool:
    try:
        await nc.request(health_subject(key.rsplit("-", 1)[0], key), b"{}", timeout=1)
        return True
    except (nats.errors.Error, asyncio.TimeoutError):
        return False


async def chaos(system: System, kiosk: Kiosk, plan: list[str], figures: Figures) -> None:
    for i, target in enumerate(plan):
        while figures.started < (i + 1) * REQUESTS // (len(plan) + 1):  # spread over the whole run
            await asyncio.sleep(0.1)
        process = system.server(target).process if target in SERVERS else system.processes[target]
        killed_at = time.monotonic()
        system.kill(target)
        await asyncio.wait_for(answered_again(system, kiosk, target, process.pid), 90)
        figures.kills.append((target, time.monotonic() - killed_at))


async def stored_events(nc: NATS) -> dict[str, list[dict[str, Any]]]:
    """Every event the stream kept, by type; one per event id."""
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for msg in await stored_messages(nc):
        event = json.loads(msg.data or b"{}")
        by_type.setdefault(event["type"].removeprefix("linli."), {})[event["id"]] = event
    return {kind: list(events.values()) for kind, events in by_type.items()}


async def settled_events(nc: NATS, requests: set[str], patience: float = 30.0) -> dict[str, list[dict[str, Any]]]:
    """The kept events, once every request has its points.earned, or as they are after `patience` s: an
    outbox that a crash left unpublished is re-sent by its relay within seconds."""
    deadline = time.monotonic() + patience
    while True:
        events = await stored_events(nc)
        earned = {e["data"]["request_id"] for e in events.get("points.earned", [])}
        if earned >= requests or time.monotonic() > deadline:
            return events
        await asyncio.sleep(1.0)


async def test_every_request_is_served_once_while_processes_are_killed_at_random(
    system: System, announced: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    plan = TARGETS + rng.choices(TARGETS, k=KILLS - len(TARGETS))
    rng.shuffle(plan)
    figures = Figures()
    with capsys.disabled():
        print(f"\nchaos run with seed {SEED} (LINLI_CHAOS_SEED={SEED} replays it): kills {plan}")
    async def expected(exc: Exception) -> None:
        pass  # the server is killed on purpose; the calls that fail meanwhile are counted instead

    nc = await nats.connect(system.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=expected)
    kiosk = Kiosk(nc, figures)
    began = time.monotonic()
    try:
        volunteers = [str((await kiosk.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": f"师傅{n}", "phone": f"1390{n:07d}", "district": DISTRICT, "grids": [GRID],
            "skills": ["repair"], "capacity": CAPACITY,
        }))["volunteer_id"]) for n in range(VOLUNTEERS)]
        await caught_up(nc, "matcher", "volunteer.registered")
        hours = {v: f"{1 + n % 4 * 0.5:.1f}" for n, v in enumerate(volunteers)}

        stop = asyncio.Event()
        phones = [asyncio.create_task(volunteer(kiosk, v, hours[v], stop)) for v in volunteers]
        killer = asyncio.create_task(chaos(system, kiosk, plan, figures))
        slots = asyncio.Semaphore(AT_ONCE)

        async def one(n: int) -> str:
            async with slots:
                figures.started += 1
                request_id = await resident(kiosk, n, figures)
                figures.rated += 1
                figures.finished.add(request_id)
                return request_id

        try:
            requests = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(REQUESTS)), killer), 210)
        except TimeoutError:
            stuck = {r: (await kiosk.call(API.MATCHER_EXPLAIN, {"request_id": r})).get("state")
                     for r in set(figures.submitted.values()) - figures.finished}
            raise AssertionError(f"seed {SEED}: {figures.rated} of {REQUESTS} rated after 210 s, kills so far "
                                 f"{figures.kills}; the matcher's view of those not rated: {stuck}") from None
        finally:
            stop.set()
            killer.cancel()
            await asyncio.gather(*phones, killer, return_exceptions=True)
        requests = requests[:REQUESTS]
        duration = time.monotonic() - began

        # A request is rated before the ledger has necessarily credited it: a ledger killed near the end
        # gets its unacknowledged events back only after the ack wait. Wait for it to catch up.
        await caught_up(nc, "ledger", "hours.logged", timeout=90)
        events = await settled_events(nc, set(requests))
        offers = Counter((e["data"]["request_id"], e["data"]["volunteer_id"]) for e in events["volunteer.assigned"])
        accepted = Counter(e["data"]["request_id"] for e in events["assignment.accepted"])
        completed = {e["data"]["request_id"]: e["data"] for e in events["assignment.completed"]}
        credited = Counter(e["data"]["request_id"] for e in events["hours.logged"])
        earned = Counter(e["data"]["request_id"] for e in events["points.earned"])
        balances = {v: await kiosk.call(API.LEDGER_BALANCE, {"volunteer_id": v}) for v in volunteers}
        books = await verify_ledger(system.mongo_url, "linli_ledger")
    finally:
        await nc.close()

    with capsys.disabled():
        print(f"chaos run, seed {SEED}: {len(requests)} requests rated in {duration:.0f} s, "
              f"{len(figures.kills)} kills, {figures.retried_calls} calls made again")
        print("  kills per process: " + ", ".join(f"{k} {n}" for k, n in sorted(Counter(plan).items())))
        print("  back after (s):    " + ", ".join(f"{k} {s:.1f}" for k, s in figures.kills))
        print(f"  books:             {books.lines()[0]}")
        for error, n in figures.internal_errors.items():
            print(f"  answered 'try again' {n}x: {error}")

    assert len(figures.kills) == KILLS and len(announced) >= KILLS
    assert len(set(requests)) == REQUESTS
    assert max(offers.values()) == 1, [pair for pair, n in offers.items() if n > 1]
    assert set(accepted) == set(requests) and max(accepted.values()) == 1
    for kind, seen in (("assignment.completed", completed), ("hours.logged", credited), ("points.earned", earned)):
        assert set(seen) == set(requests), (
            f"seed {SEED}: {len(set(requests) - set(seen))} request(s) without {kind}, "
            f"{len(set(seen) - set(requests))} unknown: {sorted(set(requests) ^ set(seen))[:5]}")
    assert max(credited.values()) == 1 and max(earned.values()) == 1
    for v in volunteers:
        done = sum(Decimal(c["hours"]) for c in completed.values() if c["volunteer_id"] == v)
        assert Decimal(balances[v]["hours"]) == done, (v, balances[v], done)
        assert balances[v]["services"] == sum(1 for c in completed.values() if c["volunteer_id"] == v)
    assert books.ok, books.lines()
