"""Three matcher processes against one stream: no double-booking and nothing lost, even with one SIGKILLed."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from contracts import API
from linli.client import caught_up
from linli.system import System
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.system
GRIDS = ["quanwai-01", "quanwai-02", "quanwai-03", "xinglong-01", "chaoyang-01"]
VOLUNTEERS, CAPACITY, REQUESTS = 30, 2, 300


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.start(
        tmp_path_factory.mktemp("scale"),
        replicas={"matcher": 3},
        env={"MATCHER_OFFER_TTL": "900", "MATCHER_SWEEP_INTERVAL": "0.5", "MATCHER_LEASE": "3",
             "LINLI_ACK_WAIT": "3", "LINLI_LOG_LEVEL": "WARNING"},  # readiness must not depend on the log
    )
    yield running
    running.stop()


async def burst(system: System, client: Bus, kill_after: int | None) -> None:
    district = "burst-calm" if kill_after is None else "burst-killed"  # each in tests/samples/places.yaml
    volunteers = [
        (await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": f"志愿者{n}", "phone": f"1380{n:07d}", "district": district, "grids": [GRIDS[n % len(GRIDS)]],
            "skills": ["repair", "elderly"], "capacity": CAPACITY,
        }))["volunteer_id"]
        for n in range(VOLUNTEERS)
    ]
    await client.wait_for("volunteer.registered", count=VOLUNTEERS, timeout=30)
    await caught_up(client.nc, "matcher", "volunteer.registered")

    async def one(n: int) -> str:
        reply = await client.call(API.INTAKE_SUBMIT, {
            "idempotency_key": f"burst-{uuid.uuid4()}", "district": district, "grid": GRIDS[n % len(GRIDS)],
            "service": "repair.plumbing" if n % 2 else "elderly.visit",
            "resident": {"name": "居民", "phone": f"1360{n:07d}"},
        }, timeout=30)
        return str(reply["request_id"])

    requests: list[str] = []
    for start in range(0, REQUESTS, 50):
        requests += await asyncio.gather(*[one(n) for n in range(start, start + 50)])
        if kill_after is not None and len(requests) >= kill_after and "matcher-1" in system.processes:
            system.kill("matcher-1")
            del system.processes["matcher-1"]

    async def settled() -> bool:
        outcome = {e["data"]["request_id"] for e in client.of_type("volunteer.assigned") + client.of_type("request.unmatched")}
        return outcome >= set(requests)

    try:
        await eventually(settled, timeout=90, interval=0.5)
    except AssertionError:
        outcome = {e["data"]["request_id"] for e in client.of_type("volunteer.assigned") + client.of_type("request.unmatched")}
        stuck = [(r, (await client.call(API.MATCHER_EXPLAIN, {"request_id": r})).get("state")) for r in requests
                 if r not in outcome]
        raise AssertionError(f"{len(stuck)} request(s) without an outcome: {stuck[:10]}") from None
    await asyncio.sleep(2.0)  # let any late duplicate or repair show itself

    open_work = {v: (await client.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": v}))["assignments"] for v in volunteers}
    assert max(len(work) for work in open_work.values()) <= CAPACITY, "a volunteer holds more than their capacity"
    live = Counter(a["request_id"] for work in open_work.values() for a in work)
    assert max(live.values()) == 1, "a request has two live assignments"
    assert sum(live.values()) == VOLUNTEERS * CAPACITY, "capacity left unused while requests went unmatched"
    states = Counter()
    for request_id in requests:
        states[(await client.call(API.MATCHER_EXPLAIN, {"request_id": request_id}))["state"]] += 1
    assert states == {"offered": VOLUNTEERS * CAPACITY, "unmatched": REQUESTS - VOLUNTEERS * CAPACITY}, states
    assert set(live) | {e["data"]["request_id"] for e in client.of_type("request.unmatched")} >= set(requests)


async def test_three_matchers_never_double_book_a_burst(system: System, client: Bus) -> None:
    await burst(system, client, kill_after=None)


async def test_a_matcher_killed_mid_burst_loses_nothing_and_double_books_nothing(system: System, client: Bus) -> None:
    await burst(system, client, kill_after=100)
