"""Ratings that close the loop: a bad rating reopens the request at intake and disputes the hours in the ledger."""

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from contracts import API, new_event
from contracts.events import AssignmentAccepted, AssignmentCompleted
from linli import ledger_cli
from linli.client import caught_up
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.ledger import handlers
from tests.conftest import Bus, eventually, stored_events
from tests.test_ledger_service import (
    balance,
    hours,
    kinds,
    ledger,
    ledger_settings,
    open_account,
    publish,
    rated,
    started,
)

pytestmark = pytest.mark.service
__all__ = ["ledger"]


@pytest.fixture
async def intake(settings: BusSettings) -> AsyncIterator[Service]:
    service = build_intake(IntakeSettings(bus=settings, announce_after=0.5))
    await service.start()
    yield service
    await service.stop()


async def completed_request(intake: Service, ledger: Service, bus: Bus, volunteer_id: str, amount: str) -> str:
    """A request served and logged: what the matcher's events would have done to intake and the ledger."""
    request_id = (await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "resident": {"name": "王秀英", "phone": "13800138000"},
    }))["request_id"]
    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": f"a-{uuid.uuid4()}"}
    await intake.outbox.send([
        new_event(data, source="linli/matcher", district="beibei", subject=request_id, correlationid=request_id)
        for data in (AssignmentAccepted(**ids), AssignmentCompleted(**ids, hours=Decimal(amount)))
    ])
    await publish(bus, hours(volunteer_id, amount, request_id=request_id))
    await eventually(lambda: _status_is(bus, request_id, "completed"))
    await bus.wait_for("points.earned", request_id=request_id)
    return request_id


async def _status_is(bus: Bus, request_id: str, status: str) -> dict[str, Any] | None:
    view = await bus.call(API.INTAKE_STATUS, {"request_id": request_id})
    return view if view["status"] == status else None


async def review(bus: Bus) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await bus.call(API.LEDGER_REVIEW, {}))["items"]
    return items


async def test_two_stars_reopen_the_request_and_dispute_its_hours(intake: Service, ledger: Service, bus: Bus) -> None:
    await open_account(bus, ledger, "v-sloppy")
    request_id = await completed_request(intake, ledger, bus, "v-sloppy", "1.5")

    view = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 2, "comment": "还在漏水"})
    again = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 2, "comment": "还在漏水"})

    assert view["status"] == again["status"] == "reopened" and view["stars"] == 2
    assert view["history"][-1]["status"] == "reopened"
    assert view["history"][-1]["note"] == "reopened for an operator's review: 2 stars: 还在漏水"
    reopened = (await bus.wait_for("request.reopened", request_id=request_id))[0]
    assert reopened["data"] == {"request_id": request_id, "volunteer_id": "v-sloppy", "stars": 2,
                                "reason": "reopened for an operator's review: 2 stars: 还在漏水"}
    [disputed] = await eventually(lambda: review(bus))
    assert (disputed["request_id"], disputed["state"], disputed["hours"], disputed["stars"], disputed["done"]) == (
        request_id, "disputed", "1.50", 2, True)
    assert await ledger.db["entries"].count_documents({"request_id": request_id, "kind": "confirm"}) == 0
    assert len(await stored_events(bus.nc, "request.reopened")) == 1

    reversed_ = await bus.call(API.LEDGER_ADJUST, {
        "volunteer_id": "v-sloppy", "hours": "-1.5", "points": "-15", "request_id": request_id,
        "reason": "resident says the leak was not fixed; hours reversed", "operator": "op-wang",
        "idempotency_key": f"reverse-{request_id}",
    })
    assert (reversed_["kind"], reversed_["balance_hours"], reversed_["balance_points"]) == ("adjust", "0.00", "0.00")
    assert await review(bus) == []
    balance = await bus.call(API.LEDGER_BALANCE, {"volunteer_id": "v-sloppy"})
    assert (balance["hours"], balance["points"], balance["ratings"]) == ("0.00", "0.00", 1)


async def test_not_done_reopens_even_with_five_stars_until_an_operator_confirms(
    intake: Service, ledger: Service, bus: Bus
) -> None:
    request_id = await completed_request(intake, ledger, bus, "v-kind", "1")

    view = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "done": False})
    changed = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5})

    assert view["status"] == "reopened" and "not done" in view["history"][-1]["note"]
    assert changed["error"]["code"] == "already_rated"
    [rated] = await bus.wait_for("request.rated", request_id=request_id)
    assert rated["data"]["done"] is False
    [disputed] = await eventually(lambda: review(bus))
    assert (disputed["state"], disputed["done"]) == ("disputed", False)
    assert await ledger.db["entries"].count_documents({"request_id": request_id, "kind": "bonus"}) == 0

    confirmed = await bus.call(API.LEDGER_CONFIRM, {"request_id": request_id, "operator": "op-wang",
                                                    "reason": "visited: it was done"})
    assert confirmed["kind"] == "confirm" and confirmed["reason"] == "confirmed by op-wang: visited: it was done"
    assert await review(bus) == []


async def test_a_good_rating_confirms_the_hours(intake: Service, ledger: Service, bus: Bus) -> None:
    request_id = await completed_request(intake, ledger, bus, "v-good", "2")

    view = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 4, "comment": "好"})

    assert view["status"] == "rated" and [h["status"] for h in view["history"]][-2:] == ["completed", "rated"]
    confirm = await eventually(
        lambda: ledger.db["entries"].find_one({"request_id": request_id, "kind": "confirm"}), timeout=15)
    assert (confirm["volunteer_id"], confirm["category"], confirm["cause"]) == ("v-good", "repair",
                                                                                 bus.of_type("request.rated")[0]["id"])
    assert bus.of_type("request.reopened") == [] and await review(bus) == []


async def test_a_redispatched_request_is_rated_again_for_the_second_volunteer(
    ledger: Service, bus: Bus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = f"r-{uuid.uuid4()}"
    for volunteer_id in ("v-first", "v-second"):
        await open_account(bus, ledger, volunteer_id)
    await publish(bus, hours("v-first", "1.5", request_id=request_id))
    await bus.wait_for("points.earned", volunteer_id="v-first")
    await publish(bus, rated("v-first", request_id, 2))
    await eventually(lambda: review(bus))

    # Reopened, sent out again, and served by someone else, who is then rated on the same request.
    await publish(bus, hours("v-second", "2", request_id=request_id))
    await bus.wait_for("points.earned", volunteer_id="v-second")
    await publish(bus, rated("v-second", request_id, 5))
    await publish(bus, rated("v-second", request_id, 3))  # a second rating of the same service is ignored
    await caught_up(bus.nc, "ledger", "request.rated")

    [disputed] = await review(bus)
    assert (disputed["request_id"], disputed["volunteer_id"], disputed["state"], disputed["hours"],
            disputed["stars"]) == (request_id, "v-first", "disputed", "1.50", 2)
    assert [kind for _, kind, _, _ in await kinds(ledger, "v-second")] == ["credit", "confirm", "bonus"]
    assert [kind for _, kind, _, _ in await kinds(ledger, "v-first")] == ["credit"]
    first, second = await balance(bus, "v-first"), await balance(bus, "v-second")
    assert (first["hours"], first["points"], first["ratings"], first["average_stars"]) == ("1.50", "15.00", 1, "2.00")
    assert (second["hours"], second["points"], second["ratings"], second["average_stars"]) == (
        "2.00", "25.00", 1, "5.00")

    ambiguous = await bus.call(API.LEDGER_CONFIRM, {"request_id": request_id, "operator": "op-wang"})
    assert ambiguous["error"]["code"] == "volunteer_required"
    assert ambiguous["error"]["details"]["volunteers"] == ["v-first", "v-second"]
    monkeypatch.setenv("NATS_URL", ledger.settings.nats_url)
    parser = argparse.ArgumentParser(prog="linli")
    ledger_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ledger", "confirm", request_id, "--volunteer", "v-first", "--operator", "op-wang",
                              "--reason", "visited: it was fixed"])
    assert await asyncio.to_thread(ledger_cli.run, args) == 0
    confirmed = json.loads(capsys.readouterr().out)
    assert (confirmed["kind"], confirmed["volunteer_id"]) == ("confirm", "v-first")
    assert await review(bus) == []


async def test_ratings_and_proofs_kept_on_the_request_alone_before_still_count(
    settings: BusSettings, bus: Bus
) -> None:
    # What a ledger from before re-dispatch left: a credited request, its 1-star rating and its disputed proof,
    # keyed on the request id alone.
    first = await started(ledger_settings(settings))
    logged = hours("v-old", "1")
    await publish(bus, logged)
    await bus.wait_for("points.earned", volunteer_id="v-old")
    request_id = logged.data.request_id
    proof = await first.db["proofs"].find_one({"volunteer_id": "v-old"})
    await first.db["proofs"].delete_many({})
    await first.db["proofs"].insert_one({k: v for k, v in {**proof, "_id": request_id, "disputed": True,
                                                            "stars": 1}.items() if k != "request_id"})
    rating = {k: v for k, v in handlers.rating(rated("v-old", request_id, 1)).items() if k != "request_id"}
    await first.db["ratings"].insert_one({**rating, "_id": request_id})
    await first.stop()

    ledger = await started(ledger_settings(settings))
    try:
        await publish(bus, rated("v-old", request_id, 5))  # the same service rated again: ignored
        await caught_up(bus.nc, "ledger", "request.rated")
        [disputed] = await review(bus)
        assert (disputed["request_id"], disputed["volunteer_id"], disputed["stars"]) == (request_id, "v-old", 1)
        view = await balance(bus, "v-old")
        assert (view["ratings"], view["average_stars"], view["points"]) == (1, "1.00", "10.00")
        confirmed = await bus.call(API.LEDGER_CONFIRM, {"request_id": request_id, "operator": "op-wang"})
        assert (confirmed["kind"], confirmed["volunteer_id"]) == ("confirm", "v-old")
        assert await review(bus) == []
        assert await ledger.db["proofs"].count_documents({}) == 1
    finally:
        await ledger.stop()
