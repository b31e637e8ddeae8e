"""A request.created a dead matcher took and never acknowledged is handed to a live one well before LINLI_ACK_WAIT."""

from contextlib import suppress
from dataclasses import replace

import nats.errors
import pytest

from contracts import API
from contracts.subjects import STREAM
from services.common.bus import consumer_name
from services.common.config import BusSettings
from services.common.runtime import Service
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, eventually
from tests.test_matcher_service import intake, register, roster_ready, submit  # noqa: F401

pytestmark = pytest.mark.service
ACK_WAIT = 120.0  # every other consumer's: far longer than any wait below


async def test_a_request_a_dead_matcher_took_before_storing_it_is_offered_once_without_waiting_for_ack_wait(
    intake: Service, bus: Bus, settings: BusSettings  # noqa: F811
) -> None:
    matcher_settings = MatcherSettings(bus=replace(settings, ack_wait=ACK_WAIT), offer_ttl=600, sweep_interval=0.2)
    # The consumer as a matcher from before MATCHER_ACK_WAIT made it: the live one below must shorten its wait.
    first = build_matcher(replace(matcher_settings, ack_wait=ACK_WAIT))
    await first.start()
    volunteer = await register(bus, "13900000901", ["quanwai-01"], ["elderly"], capacity=2)
    await roster_ready(first, 1)
    await first.stop()

    # A replica as it is when SIGKILLed: it has pulled the event from the shared consumer and will never ack it.
    js = bus.nc.jetstream()
    dead = await js.pull_subscribe_bind(durable=consumer_name("matcher", "request.created"), stream=STREAM)
    request_id = await submit(bus, grid="quanwai-01", service="elderly.escort")
    with suppress(nats.errors.TimeoutError):
        await dead.fetch(1, timeout=5)  # or the stopped replica's last pull took it, which is the same

    async def held_unacked() -> bool:
        info = await js.consumer_info(STREAM, consumer_name("matcher", "request.created"))
        return bool(info.num_pending == 0 and info.num_ack_pending == 1)

    await eventually(held_unacked, timeout=10)
    await dead.unsubscribe()

    live = build_matcher(matcher_settings)
    await live.start()
    try:
        offer = (await bus.wait_for("volunteer.assigned", request_id=request_id, timeout=60))[0]["data"]
        assert offer["volunteer_id"] == volunteer

        async def all_acked() -> bool:  # the event's every delivery handled: a repeat had its chance to offer again
            info = await js.consumer_info(STREAM, consumer_name("matcher", "request.created"))
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await eventually(all_acked, timeout=60)
        explained = await bus.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
        assert [(o["volunteer_id"], o["state"], o["round"]) for o in explained["offers"]] == [(volunteer, "offered", 1)]
        assert len({e["data"]["assignment_id"] for e in bus.of_type("volunteer.assigned", request_id=request_id)}) == 1
    finally:
        await live.stop()
