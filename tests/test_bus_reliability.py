"""The shared consumer machinery on a real nats-server: retries with delay, dead letters, replay, outbox relay."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts import API, Envelope, new_event
from contracts.events import RequestCancelled
from services.common.bus import on_event
from services.common.config import BusSettings
from services.common.runtime import Service
from tests.conftest import Bus, eventually
from tests.test_ledger_service import ledger_settings, started

pytestmark = pytest.mark.service


class Flaky:
    def __init__(self) -> None:
        self.healthy = False
        self.attempts: dict[str, int] = {}
        self.handled: list[str] = []


@pytest.fixture
async def probe(settings: BusSettings) -> AsyncIterator[tuple[Service, Flaky]]:
    service = Service.create("probe", settings)
    flaky = Flaky()

    @on_event(service.broker, settings, "probe", "request.cancelled")
    async def handle(event: Envelope[RequestCancelled]) -> None:
        async with service.inbox.once("probe", event) as first:
            flaky.attempts[event.data.request_id] = flaky.attempts.get(event.data.request_id, 0) + 1
            if not flaky.healthy and event.data.reason == "needs a dependency":
                raise ConnectionError("dependency down")
            if first:
                flaky.handled.append(event.data.request_id)

    await service.start()
    yield service, flaky
    await service.stop()


def cancelled(request_id: str, reason: str) -> Envelope[Any]:
    return new_event(RequestCancelled(request_id=request_id, reason=reason), source="test", district="d1",
                     subject=request_id, correlationid=request_id)


async def dead_letters(bus: Bus) -> list[dict[str, Any]]:
    return (await bus.call("linli.api.probe.dead_letters", {"action": "list"}))["dead_letters"]


async def test_a_failing_event_is_retried_then_dead_lettered_and_replayable(
    probe: tuple[Service, Flaky], bus: Bus, settings: BusSettings
) -> None:
    service, flaky = probe
    await service.outbox.send([cancelled("r-stuck", "needs a dependency"), cancelled("r-fine", "ok")])

    await eventually(lambda: "r-fine" in flaky.handled)  # the stuck one does not block the one behind it
    letters = await eventually(lambda: dead_letters(bus), timeout=20)
    assert flaky.attempts["r-stuck"] == settings.max_deliver
    assert letters[0]["reason"] == "max_deliveries" and letters[0]["consumer"] == "probe-request-cancelled"
    assert json.loads(letters[0]["body"])["data"]["request_id"] == "r-stuck"

    flaky.healthy = True
    assert letters[0]["replayable"] and letters[0]["problem"] == ""
    replay = await bus.call("linli.api.probe.dead_letters", {
        "action": "replay", "id": letters[0]["_id"], "operator": "王工", "reason": "the dependency is back",
    })
    assert replay["replays"] == 1
    await eventually(lambda: "r-stuck" in flaky.handled)
    assert flaky.handled.count("r-stuck") == 1
    replayed = (await dead_letters(bus))[0]
    assert (replayed["replayed_by"], replayed["replay_reason"]) == ("王工", "the dependency is back")


async def test_a_malformed_event_is_dead_lettered_at_once(probe: tuple[Service, Flaky], bus: Bus) -> None:
    service, flaky = probe
    js = bus.nc.jetstream()
    await js.publish("linli.evt.request.cancelled.d1", b'{"type": "linli.request.cancelled", "data": {}}',
                     headers={"Nats-Msg-Id": "garbage-1"})
    await service.outbox.send([cancelled("r-after", "ok")])

    letters = await eventually(lambda: dead_letters(bus))
    assert letters[0]["reason"] == "terminated" and "garbage" not in letters[0]["_id"]
    await eventually(lambda: "r-after" in flaky.handled)
    assert flaky.attempts.get("r-after") == 1


async def test_the_relay_publishes_what_a_crash_left_in_the_outbox(
    probe: tuple[Service, Flaky], bus: Bus
) -> None:
    service, flaky = probe
    event = cancelled("r-orphan", "ok")
    await service.outbox.store([event])  # stored, then the process died before publishing

    await eventually(lambda: "r-orphan" in flaky.handled, timeout=10)
    assert await service.outbox.entries.count_documents({}) == 0
    assert [e["id"] for e in bus.of_type("request.cancelled", request_id="r-orphan")][:1] == [event.id]


async def test_a_service_answers_as_soon_as_it_has_started_and_always_stops(settings: BusSettings, bus: Bus) -> None:
    """Started and stopped many times over: before, a call right after the start now and then found no
    responder, and a stop now and then waited for ever on a background loop that had swallowed its
    cancellation."""
    for _ in range(40):
        ledger = await started(ledger_settings(settings))  # its sweep loop runs every 0.2 s
        try:
            assert "public_key" in await bus.call(API.LEDGER_PUBLIC_KEY, {})
        finally:
            await asyncio.wait_for(ledger.stop(), 30)
