import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import API, Envelope, event_subject, new_event
from contracts.envelope import derived_id
from contracts.events import HoursLogged, RequestRated, VolunteerRegistered
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.common.runtime import Service
from services.ledger import handlers
from services.ledger.app import build
from services.ledger.config import LedgerSettings
from tests.conftest import Bus, eventually, stored_events

pytestmark = pytest.mark.service


@pytest.fixture
async def ledger(settings: BusSettings) -> AsyncIterator[Service]:
    service = build(LedgerSettings(bus=settings, points_per_hour=Decimal("10"), category_rates={"elderly": Decimal("12")}))
    await service.start()
    yield service
    await service.stop()


def event(data: BaseModel, about: str) -> Envelope[Any]:
    return new_event(data, source="linli/test", district="beibei", subject=about, correlationid=about)


def hours(volunteer_id: str, amount: str, category: str = "repair") -> Envelope[Any]:
    request_id = f"r-{uuid.uuid4()}"
    return event(
        HoursLogged(volunteer_id=volunteer_id, request_id=request_id, assignment_id=f"a-{uuid.uuid4()}",
                    hours=Decimal(amount), category=category),
        request_id,
    )


async def publish(bus: Bus, envelope: Envelope[Any], msg_id: str | None = None) -> None:
    # A msg id other than the event id slips past JetStream's de-duplication: the consumer has to catch it.
    await bus.nc.jetstream().publish(
        event_subject(envelope.short_type, envelope.district), envelope_json(envelope),
        headers={"Nats-Msg-Id": msg_id or envelope.id},
    )


async def settled(bus: Bus, durable: str) -> None:
    async def done() -> bool:
        info = await bus.nc.jetstream().consumer_info("LINLI", durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(done, timeout=5)


async def balance(bus: Bus, volunteer_id: str) -> dict[str, Any]:
    return await bus.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer_id})


async def test_the_same_event_delivered_twice_is_credited_once(ledger: Service, bus: Bus) -> None:
    logged = hours("v-once", "1.25")
    await publish(bus, logged, "copy-1")
    await publish(bus, logged, "copy-2")

    await bus.wait_for("points.earned", volunteer_id="v-once", timeout=5)
    await settled(bus, "ledger-hours-logged")
    assert await balance(bus, "v-once") == {
        "volunteer_id": "v-once", "hours": "1.25", "points": "12.50", "services": 1, "ratings": 0,
        "average_stars": None,
    }
    kept = await stored_events(bus.nc, "points.earned")
    assert len(kept) == 1
    earned = kept[0]
    assert earned["id"] == derived_id("points.earned", derived_id("ledger.entry", logged.id))
    assert (earned["causationid"], earned["correlationid"]) == (logged.id, logged.data.request_id)
    assert earned["data"]["points"] == "12.50" and earned["data"]["balance_points"] == "12.50"
    assert await ledger.db["entries"].count_documents({"volunteer_id": "v-once"}) == 1


async def test_an_entry_stored_before_a_crash_is_not_credited_again_but_is_announced(
    ledger: Service, bus: Bus
) -> None:
    logged = hours("v-crash", "2")
    tariff = handlers.Tariff(Decimal("10"), {})
    # What a process killed after the entry write leaves: no inbox record, nothing published.
    await ledger.db["entries"].insert_one(handlers.credit_entry(logged, tariff, posted=1.0))

    await publish(bus, logged)

    [earned] = await bus.wait_for("points.earned", volunteer_id="v-crash", timeout=5)
    assert earned["data"]["balance_points"] == "20.00"
    assert (await balance(bus, "v-crash"))["points"] == "20.00"
    assert await ledger.db["entries"].count_documents({"volunteer_id": "v-crash"}) == 1


async def test_balance_sums_several_entries_exactly(ledger: Service, bus: Bus) -> None:
    for amount, category in [("1.25", "repair"), ("2.5", "elderly"), ("0.1", "repair"), ("0.2", "repair")]:
        await publish(bus, hours("v-sum", amount, category))

    found = await bus.wait_for("points.earned", volunteer_id="v-sum", count=4, timeout=5)
    assert [e["data"]["balance_points"] for e in found] == ["12.50", "42.50", "43.50", "45.50"]
    assert await balance(bus, "v-sum") == {
        "volunteer_id": "v-sum", "hours": "4.05", "points": "45.50", "services": 4, "ratings": 0,
        "average_stars": None,
    }


async def test_a_malformed_event_does_not_block_the_one_behind_it(ledger: Service, bus: Bus) -> None:
    subject = event_subject("hours.logged", "beibei")
    await bus.nc.jetstream().publish(subject, b"{not json", headers={"Nats-Msg-Id": "garbage"})
    too_long = json.loads(envelope_json(hours("v-bad", "1")))
    too_long["data"]["hours"] = "30"
    await bus.nc.jetstream().publish(subject, json.dumps(too_long).encode(), headers={"Nats-Msg-Id": "too-long"})
    await publish(bus, hours("v-good", "1.5"))

    await bus.wait_for("points.earned", volunteer_id="v-good", timeout=5)
    assert (await balance(bus, "v-good"))["points"] == "15.00"
    assert (await balance(bus, "v-bad"))["services"] == 0


async def test_ratings_are_counted_once_per_request_and_averaged(ledger: Service, bus: Bus) -> None:
    ratings = [event(RequestRated(request_id=f"r-{n}", volunteer_id="v-stars", stars=s), f"r-{n}")
               for n, s in enumerate([5, 4, 4])]
    for rated in ratings:
        await publish(bus, rated)
    await publish(bus, ratings[0], "copy")
    await publish(bus, event(RequestRated(request_id="r-9", volunteer_id="v-other", stars=1), "r-9"))

    await settled(bus, "ledger-request-rated")
    view = await balance(bus, "v-stars")
    assert (view["ratings"], view["average_stars"]) == (3, "4.33")
    assert (view["hours"], view["points"], view["services"]) == ("0.00", "0.00", 0)


async def test_a_registered_volunteer_gets_one_account(ledger: Service, bus: Bus) -> None:
    registered = event(
        VolunteerRegistered(volunteer_id="v-new", district="beibei", grids=["g1"], skills=["repair"], capacity=1),
        "v-new",
    )
    await publish(bus, registered)
    await publish(bus, registered, "copy")

    await settled(bus, "ledger-volunteer-registered")
    accounts = await ledger.db["accounts"].find({}).to_list()
    assert [(a["_id"], a["district"]) for a in accounts] == [("v-new", "beibei")]


async def test_an_unknown_volunteer_has_a_zero_balance(ledger: Service, bus: Bus) -> None:
    assert await balance(bus, "v-nobody") == {
        "volunteer_id": "v-nobody", "hours": "0.00", "points": "0.00", "services": 0, "ratings": 0,
        "average_stars": None,
    }


@pytest.mark.parametrize("payload", [{}, {"volunteer_id": "  "}, b"\xff not json"])
async def test_a_bad_balance_call_gets_a_clear_error(ledger: Service, bus: Bus, payload: dict[str, Any] | bytes) -> None:
    reply = await bus.call(API.LEDGER_BALANCE, payload)
    assert reply["error"]["code"] == "invalid_request" and reply["error"]["message"]
