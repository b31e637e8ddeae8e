"""Poison never blocks, and refused means unchanged, on a real nats-server: a body that can never be an
event is a dead letter on its first delivery whatever its headers; a call that cannot be read gets an
error reply, never silence; a dead letter that cannot be replayed is refused clearly and can be discarded."""

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from contracts import Envelope, event_subject
from contracts.events import RequestCancelled
from contracts.wire import MAX_CALL_BYTES
from services.common.bus import envelope_json, on_event
from services.common.config import BusSettings
from services.common.runtime import Service
from tests.conftest import Bus, eventually
from tests.test_bus_reliability import cancelled

pytestmark = pytest.mark.service
JSON = {"content-type": "application/json"}
SUBJECT = event_subject("request.cancelled", "d1")
DEAD_LETTERS = "linli.api.probe.dead_letters"


class Handled:
    def __init__(self) -> None:
        self.ids: list[str] = []


@pytest.fixture
async def probe(settings: BusSettings) -> AsyncIterator[tuple[Service, Handled]]:
    # Few ack-pending slots: poison that held on to them would stop the consumer at once.
    small = replace(settings, max_ack_pending=10, max_deliver=20, ack_wait=30)
    service = Service.create("probe", small)
    handled = Handled()

    @on_event(service.broker, small, "probe", "request.cancelled")
    async def handle(event: Envelope[RequestCancelled]) -> None:
        handled.ids.append(event.data.request_id)

    await service.start()
    yield service, handled
    await service.stop()


def poison() -> dict[str, bytes]:
    valid = envelope_json(cancelled("r-poison", "ok"))
    wrong_type = json.loads(valid)
    wrong_type["type"] = "linli.request.created"
    return {
        "not-json": b"{not json",
        "truncated": valid[: len(valid) // 2],
        "deep": b"[" * 1000 + b"]" * 1000,
        "deep-object": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "binary": b"\xff\xfe\x00\x01",
        "empty": b"",
        "wrong-type": json.dumps(wrong_type).encode(),
        "string-for-reason": valid.replace(b'"reason":"ok"', b'"reason":5').replace(b'"reason": "ok"', b'"reason": 5'),
        "too-large": valid[:-1] + b', "pad": "' + b"x" * 300_000 + b'"}',
    }


async def letters(bus: Bus, **query: Any) -> list[dict[str, Any]]:
    return (await bus.call(DEAD_LETTERS, {"action": "list", "limit": 500, **query}))["dead_letters"]


async def test_a_poison_event_sent_as_json_is_a_dead_letter_on_its_first_delivery(
    probe: tuple[Service, Handled], bus: Bus
) -> None:
    service, handled = probe
    js = bus.nc.jetstream()
    bodies = poison()
    for name, body in bodies.items():
        await js.publish(SUBJECT, body, headers={**JSON, "Nats-Msg-Id": f"poison-{name}"})
    await service.outbox.send([cancelled("r-after", "ok")])

    found = await eventually(lambda: _at_least(letters(bus), len(bodies)), timeout=20)
    assert {letter["reason"] for letter in found} == {"terminated"}
    assert {letter["deliveries"] for letter in found} == {1}
    assert not any(letter["replayable"] for letter in found)
    await eventually(lambda: "r-after" in handled.ids)
    assert handled.ids == ["r-after"]


async def _at_least(rows: Any, count: int) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await rows
    return found if len(found) >= count else None


async def test_a_flood_of_poison_does_not_hold_back_the_event_behind_it(
    probe: tuple[Service, Handled], bus: Bus
) -> None:
    service, handled = probe
    js = bus.nc.jetstream()
    flood = 300
    for n in range(flood):
        await js.publish(SUBJECT, b'{"specversion": "1.0", "id": ' + b"[" * 40 * (n % 2) + b"oops",
                         headers={**JSON, "Nats-Msg-Id": f"flood-{n}"})
    await service.outbox.send([cancelled("r-behind", "ok")])

    await eventually(lambda: "r-behind" in handled.ids, timeout=60)
    info = await js.consumer_info("LINLI", "probe-request-cancelled")
    assert info.num_redelivered == 0  # each poison message was delivered once, and ended there
    assert handled.ids == ["r-behind"]
    await eventually(lambda: _count(service, flood), timeout=60)


async def _count(service: Service, expected: int) -> bool:
    return await service.db["dead_letters"].count_documents({}) == expected


async def test_an_unparseable_dead_letter_is_refused_replay_and_is_discarded_with_who_and_why(
    probe: tuple[Service, Handled], bus: Bus
) -> None:
    service, handled = probe
    truncated = envelope_json(cancelled("r-cut", "ok"))[:40]
    await bus.nc.jetstream().publish(SUBJECT, truncated, headers={**JSON, "Nats-Msg-Id": "cut-1"})
    letter = (await eventually(lambda: letters(bus)))[0]
    assert letter["body"] == truncated.decode() and "invalid_event" in letter["problem"]

    replay = await bus.call(DEAD_LETTERS, {"action": "replay", "id": letter["_id"], "operator": "李", "reason": "r"})
    assert replay["error"]["code"] == "not_replayable"
    assert replay["error"]["details"]["id"] == letter["_id"]
    unsaid = await bus.call(DEAD_LETTERS, {"action": "discard", "id": letter["_id"]})
    assert unsaid["error"]["code"] == "invalid_request"
    assert [row["_id"] for row in await letters(bus)] == [letter["_id"]]  # the refusals changed nothing

    gone = await bus.call(DEAD_LETTERS, {"action": "discard", "id": letter["_id"], "operator": "李主任",
                                         "reason": "a half-written test message"})
    assert gone == {"discarded": letter["_id"], "operator": "李主任", "reason": "a half-written test message"}
    assert await letters(bus) == []
    [kept] = await letters(bus, discarded=True)
    assert (kept["_id"], kept["discarded_by"], kept["discard_reason"]) == (
        letter["_id"], "李主任", "a half-written test message")
    again = await bus.call(DEAD_LETTERS, {"action": "discard", "id": letter["_id"], "operator": "x", "reason": "y"})
    assert again["operator"] == "李主任"  # discarding twice is the first discard
    missing = await bus.call(DEAD_LETTERS, {"action": "replay", "id": "probe-request-cancelled:999"})
    assert missing["error"]["code"] == "not_found"
    assert handled.ids == []


@pytest.mark.parametrize(("body", "code"), [
    (b"[" * 1000 + b"]" * 1000, "invalid_request"),
    (b'{"action": ' + b'{"a":' * 1000 + b"1" + b"}" * 1001, "invalid_request"),
    (b'{"action": "list", "limit": ' + b"9" * (MAX_CALL_BYTES + 10) + b"}", "too_large"),
    (b"\xff\xfe\x00garbage", "invalid_request"),
    (b'{"action": "list", "limit": true}', "invalid_request"),
    (b'{"action": {"$gt": ""}}', "invalid_request"),
], ids=["deep-list", "deep-object", "too-large", "binary", "bool-limit", "operator-object"])
async def test_a_call_that_cannot_be_read_gets_an_error_reply_never_silence(
    probe: tuple[Service, Handled], bus: Bus, body: bytes, code: str
) -> None:
    for headers in (None, JSON):
        reply = await bus.nc.request(DEAD_LETTERS, body, timeout=5, headers=headers)
        assert json.loads(reply.data)["error"]["code"] == code
