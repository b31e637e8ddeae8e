"""Under supervision every process comes back: a SIGKILLed service or nats-server is started again, and the
loop works afterwards."""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from nats.aio.client import Client as NATS

from contracts import API
from linli.client import Client, caught_up
from linli.embedded import listening
from linli.system import FRONTS, SERVICES, Backoff, System
from services.common.runtime import health_subject
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def announced() -> list[str]:
    return []


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, announced: list[str]) -> Iterator[System]:
    running = System.start(
        tmp_path_factory.mktemp("supervised"),
        supervise=True,
        announce=announced.append,
        env={"MATCHER_OFFER_TTL": "600", "MATCHER_SWEEP_INTERVAL": "0.3", "MATCHER_LEASE": "3",
             "LINLI_ACK_WAIT": "3"},
    )
    yield running
    running.stop()


async def answers(nc: NATS, service: str, instance: str | None = None) -> dict[str, object] | None:
    try:
        reply = await nc.request(health_subject(service, instance), b"{}", timeout=1)
    except Exception:  # not there yet: no responders, a timeout, or the connection still reconnecting
        return None
    answer: dict[str, object] = json.loads(reply.data)
    return answer


async def status_is(client: Bus, request_id: str, status: str) -> bool:
    return (await client.call(API.INTAKE_STATUS, {"request_id": request_id})).get("status") == status


async def an_offer_follows_a_request(client: Bus) -> None:
    district = "supervised-loop"  # each call adds a volunteer; those before it are busy with their own offer
    volunteer = (await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "吴芳", "phone": f"139{uuid.uuid4().int % 10**8:08d}", "district": district, "grids": ["g1"], "skills": ["elderly"],
        "capacity": 1,
    }))["volunteer_id"]
    await caught_up(client.nc, "matcher", "volunteer.registered")
    request_id = (await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": district, "grid": "g1", "service": "elderly.visit",
        "resident": {"name": "王奶奶", "phone": "13800003333"},
    }))["request_id"]
    offer = (await client.wait_for("volunteer.assigned", request_id=request_id, timeout=30))[0]["data"]
    assert offer["volunteer_id"] == volunteer


def test_the_delay_before_a_restart_doubles_up_to_a_cap_and_starts_over_after_a_steady_run() -> None:
    backoff = Backoff()
    delays = [backoff.after_exit() for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.started -= 60  # as if the last start had run for a minute
    assert backoff.after_exit() == 0.5


async def test_every_process_answers_a_health_call_with_its_instance_and_pid(system: System, client: Bus) -> None:
    for key, process in system.processes.items():
        if key.rsplit("-", 1)[0] in FRONTS:
            continue  # the web answers over HTTP, below
        answer = await eventually(lambda key=key: answers(client.nc, key.rsplit("-", 1)[0], key))
        assert answer == {"service": key.rsplit("-", 1)[0], "instance": key, "pid": process.pid,
                          "started_at": answer["started_at"]}
    assert {(await answers(client.nc, name) or {}).get("service") for name in SERVICES} == set(SERVICES)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{system.web_url}/healthz")).json() == {"ok": True}


async def test_a_killed_service_comes_back_with_a_new_pid_and_the_loop_still_works(
    system: System, client: Bus, announced: list[str]
) -> None:
    for key in ("intake-0", "matcher-0"):
        old = system.processes[key].pid
        system.kill(key)
        await eventually(lambda key=key, old=old: system.ready_pid(key) not in (None, old), timeout=30)
        assert any(f"{key} (pid {old}) exited with code -9 (SIGKILL); starting it again in" in line
                   for line in announced), announced
    await an_offer_follows_a_request(client)


async def test_a_killed_nats_server_comes_back_on_its_port_with_its_stream_and_services_reconnect(
    system: System, client: Bus, announced: list[str]
) -> None:
    before = system.server("nats-server")
    stream_before = (await client.nc.jetstream().stream_info("LINLI")).state.messages
    console = await Client.connect(system.nats_url, reconnect=True)  # as `linli up` and `linli tail` hold one
    system.kill("nats-server")

    await eventually(lambda: system.server("nats-server").process.pid != before.process.pid
                     and listening(before.port), timeout=30)
    assert system.server("nats-server").port == before.port
    assert any(f"nats-server (pid {before.process.pid}) exited with code -9" in line for line in announced)
    for key in system.processes:
        if key.rsplit("-", 1)[0] not in FRONTS:
            await eventually(lambda key=key: answers(client.nc, key.rsplit("-", 1)[0], key), timeout=30)
    await eventually(lambda: web_connected(system), timeout=30)  # the web's pages reach the bus again
    assert (await client.nc.jetstream().stream_info("LINLI")).state.messages >= stream_before
    assert "categories" in await eventually(lambda: catalog(console), timeout=30)
    await console.close()
    await an_offer_follows_a_request(client)


async def web_connected(system: System) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{system.web_url}/healthz")).json() == {"ok": True}


async def catalog(console: Client) -> dict[str, object] | None:
    try:
        return await console.call(API.INTAKE_CATALOG, {}, timeout=1)
    except Exception:  # still reconnecting
        return None


def linli(*args: str, nats_url: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "linli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NATS_URL": nats_url})


def test_linli_health_exits_0_only_when_that_process_answers(system: System) -> None:
    answered = linli("health", "matcher", "--instance", "matcher-0", nats_url=system.nats_url)
    assert answered.returncode == 0 and "matcher matcher-0 (pid" in answered.stdout, answered
    unknown = linli("health", "matcher", "--instance", "matcher-9", "--timeout", "1", nats_url=system.nats_url)
    assert unknown.returncode == 1 and "did not answer" in unknown.stderr and "Traceback" not in unknown.stderr


async def test_a_killed_database_server_comes_back_on_its_port_with_its_data(
    system: System, client: Bus, announced: list[str]
) -> None:
    before = system.server("nx-27017")
    district = "supervised-db"
    kept = (await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": district, "grid": "g1", "service": "legal.advice",
        "resident": {"name": "李淑君", "phone": "13800002222"},
    }))["request_id"]
    await eventually(lambda: status_is(client, kept, "unmatched"), timeout=30)
    system.kill("nx-27017")

    await eventually(lambda: system.server("nx-27017").process.pid != before.process.pid
                     and listening(before.port), timeout=30)
    assert system.server("nx-27017").port == before.port
    assert any(f"nx-27017 (pid {before.process.pid}) exited with code -9" in line for line in announced)
    # what was written before the kill is still there, once intake has reconnected to the database
    await eventually(lambda: status_is(client, kept, "unmatched"), timeout=30)
    await an_offer_follows_a_request(client)
