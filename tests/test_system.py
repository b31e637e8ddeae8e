"""The four services as separate processes, driven only through linli.api.* calls and linli.evt.* events."""

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from contracts import API
from linli.client import caught_up
from linli.embedded import Server, start_mongo
from linli.system import FRONTS, SERVICES, System
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.start(
        tmp_path_factory.mktemp("system"),
        replicas={"matcher": 2},
        # Offers outlive every test, so each volunteer's open work can be counted at the end; a killed
        # replica's unacknowledged messages and placements come back after a few seconds.
        env={"MATCHER_OFFER_TTL": "600", "MATCHER_SWEEP_INTERVAL": "0.3", "MATCHER_LEASE": "3",
             "LINLI_ACK_WAIT": "3", "LEDGER_CATEGORY_RATES": "elderly=12"},
    )
    yield running
    running.stop()


async def test_from_registration_to_a_credited_rated_service(system: System, client: Bus) -> None:
    district = "system-flow"  # a district of its own, in tests/samples/places.yaml
    volunteer = (await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "郑阿姨", "phone": "13911112222", "district": district, "grids": ["tieling-07"],
        "skills": ["elderly"], "capacity": 1,
    }))["volunteer_id"]
    await client.wait_for("volunteer.registered", volunteer_id=volunteer)
    await caught_up(client.nc, "matcher", "volunteer.registered")  # the matchers' roster is built from it

    request_id = (await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"hotline-{uuid.uuid4()}", "district": district, "grid": "tieling-07",
        "service": "elderly.visit", "description": "独居老人，想有人来看看", "urgency": "soon",
        "channel": "hotline", "resident": {"name": "张奶奶", "phone": "13800001111", "address": "7栋"},
    }))["request_id"]

    offer = (await client.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
    assert offer["volunteer_id"] == volunteer
    await client.wait_for("notification.delivered", kind="offer")

    accepted = await client.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "accept": True,
    })
    assert accepted["status"] == "accepted"
    await eventually(lambda: _status(client, request_id, "accepted"))

    await client.call(API.MATCHER_COMPLETE, {
        "assignment_id": offer["assignment_id"], "volunteer_id": volunteer, "hours": "2.25", "note": "聊天、量血压",
    })
    earned = (await client.wait_for("points.earned", request_id=request_id))[0]["data"]
    assert Decimal(earned["points"]) == Decimal("27.00")  # 2.25 h at the configured 12 points an hour

    await eventually(lambda: _status(client, request_id, "completed"))
    rated = await client.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "很暖心"})
    assert rated["status"] == "rated"
    await client.wait_for("request.rated", request_id=request_id)

    balance = await eventually(lambda: _rated_balance(client, volunteer))
    assert Decimal(balance["hours"]) == Decimal("2.25") and Decimal(balance["points"]) == Decimal("27")
    assert balance["services"] == 1 and Decimal(balance["average_stars"]) == 5

    history = [h["status"] for h in (await client.call(API.INTAKE_STATUS, {"request_id": request_id}))["history"]]
    # "offered" too, unless intake read the acceptance first (they come through separate consumers)
    assert [s for s in history if s != "offered"] == ["submitted", "accepted", "completed", "rated"]
    # the whole chain of events belongs to the request
    for kind in ("request.created", "volunteer.assigned", "assignment.accepted", "assignment.completed",
                 "hours.logged", "points.earned", "request.rated"):
        assert client.of_type(kind, request_id=request_id)[0]["correlationid"] == request_id


async def test_a_request_nobody_can_take_reaches_an_operator(system: System, client: Bus) -> None:
    district = "system-unmatched"  # a district of its own, in tests/samples/places.yaml
    request_id = (await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": district, "grid": "g1",
        "service": "legal.advice", "urgency": "urgent", "resident": {"name": "李淑君", "phone": "13800002222"},
    }))["request_id"]
    unmatched = (await client.wait_for("request.unmatched", request_id=request_id))[0]["data"]
    assert unmatched["reason"] == "no volunteer is registered in this district"
    await client.wait_for("notification.delivered", kind="unmatched")
    assert (await eventually(lambda: _status(client, request_id, "unmatched")))["status"] == "unmatched"


async def test_a_killed_matcher_loses_no_request(system: System, client: Bus) -> None:
    district = "system-killed"  # a district of its own, in tests/samples/places.yaml
    volunteers = []
    for n in range(3):
        volunteers.append((await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": f"学生{n}", "phone": f"1370000{n:04d}", "district": district, "grids": ["g1"],
            "skills": ["tutoring"], "capacity": 2,
        }))["volunteer_id"])
    await client.wait_for("volunteer.registered", count=3, timeout=20)
    await caught_up(client.nc, "matcher", "volunteer.registered")
    requests = []
    for n in range(10):
        if n == 3:
            system.kill("matcher-0")
        reply = await client.call(API.INTAKE_SUBMIT, {
            "idempotency_key": f"app-{uuid.uuid4()}", "district": district, "grid": "g1",
            "service": "tutoring.homework", "resident": {"name": "家长", "phone": "13600000000"},
        })
        requests.append(reply["request_id"])

    async def settled() -> bool:
        done = {e["data"]["request_id"] for e in client.of_type("volunteer.assigned") + client.of_type("request.unmatched")}
        return done >= set(requests)

    await eventually(settled, timeout=60)
    await asyncio.sleep(1.0)
    open_work = {
        v: (await client.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": v}))["assignments"] for v in volunteers
    }
    assert all(len(work) <= 2 for work in open_work.values()), open_work
    live = [a["request_id"] for work in open_work.values() for a in work]
    assert len(live) == len(set(live)) == 6  # every slot used, no request offered twice
    # Only this test's requests: a replica's relay may publish an earlier event again, which the stream drops
    # but a plain subscriber like this one sees.
    unmatched = {e["data"]["request_id"] for e in client.of_type("request.unmatched")} & set(requests)
    assert set(live) | unmatched == set(requests) and not set(live) & unmatched
    system.spawn("matcher", 0)


async def _status(client: Bus, request_id: str, status: str) -> dict[str, object] | None:
    view = await client.call(API.INTAKE_STATUS, {"request_id": request_id})
    return view if view.get("status") == status else None


async def _rated_balance(client: Bus, volunteer: str) -> dict[str, object] | None:
    balance = await client.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer})
    return balance if balance.get("ratings") == 1 else None


def started_with_a_short_stop_timeout(data_dir: Path, nats_url: str, mongo_url: str) -> System:
    return System.start(data_dir, nats_url=nats_url, mongo_url=mongo_url,
                        env={"LINLI_DB_PREFIX": f"t{uuid.uuid4().hex[:10]}", "LINLI_STOP_TIMEOUT": "3"})


def assert_every_service_stops_cleanly_on_sigterm(running: System, within: float) -> None:
    """A service that hangs is killed by the deadline, and fails the test."""
    for process in running.processes.values():
        process.terminate()
    codes = {key: process.wait(within) for key, process in running.processes.items()}
    assert codes == {f"{name}-0": 0 for name in (*SERVICES, *FRONTS)}
    assert all(f"{key[:-2]} stopped" in running.log_of(key) for key in codes), {
        key: running.log_of(key)[-800:] for key in codes}


def test_every_service_stops_on_sigterm_while_the_database_does_not_answer(
    tmp_path: Path, nats_server: Server
) -> None:
    frozen = start_mongo(tmp_path / "mongo")  # its own server: this test stops it answering
    running = started_with_a_short_stop_timeout(tmp_path / "system", nats_server.url, frozen.url)
    try:
        frozen.process.send_signal(signal.SIGSTOP)  # still connected, never replies
        # With LINLI_STOP_TIMEOUT at 3 s, a stop needs about 6 s at most; compose waits 25 s.
        assert_every_service_stops_cleanly_on_sigterm(running, within=20)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        running.stop()
        frozen.stop()


def test_every_service_stops_on_sigterm_after_nats_has_gone(
    tmp_path: Path, nats_server: Server, mongo_server: Server
) -> None:
    running = started_with_a_short_stop_timeout(tmp_path / "system", nats_server.url, mongo_server.url)
    try:
        nats_server.stop()
        time.sleep(1)  # long enough for every connection to notice and start reconnecting
        assert_every_service_stops_cleanly_on_sigterm(running, within=60)
    finally:
        running.stop()
