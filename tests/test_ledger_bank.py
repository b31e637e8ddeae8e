"""The civilization bank: a catalogue of rewards, and redemptions that never overspend points or stock."""

import asyncio
import time
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from contracts import API
from contracts.calls import Redeem
from contracts.envelope import derived_id
from services.common.config import BusSettings
from services.common.runtime import Service
from services.ledger import chain, handlers
from tests.conftest import Bus, eventually, stored_events
from tests.test_ledger_service import adjust, balance, ledger, ledger_settings, open_account, started, verified

pytestmark = pytest.mark.service
__all__ = ["ledger"]

RICE = {"item_id": "goods.rice-5kg", "name": "大米 5kg", "kind": "goods", "points": "30", "stock": 10}


def redeem(
    volunteer_id: str, item_id: str = str(RICE["item_id"]), quantity: int = 1, key: str | None = None
) -> dict[str, Any]:
    return {"volunteer_id": volunteer_id, "item_id": item_id, "quantity": quantity,
            "idempotency_key": key or f"redeem-{uuid.uuid4()}"}


async def funded(bus: Bus, ledger: Service, volunteer_id: str, points: str) -> None:
    await open_account(bus, ledger, volunteer_id)
    assert "error" not in await adjust(bus, volunteer_id, points=points)


async def rice_redemption(bus: Bus, ledger: Service, volunteer_id: str, key: str, created: float) -> dict[str, Any]:
    """A redemption of one bag of rice by a volunteer with 100 points, as a ledger makes it; not yet stored."""
    await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    await funded(bus, ledger, volunteer_id, "100")
    item = await ledger.db["rewards"].find_one({"_id": RICE["item_id"]})
    return handlers.new_redemption(Redeem.model_validate(redeem(volunteer_id, key=key)), item, created)


async def stock_taken_by_a_crashed_attempt(ledger: Service, red: dict[str, Any]) -> None:
    head = await ledger.db["stock_moves"].find({"item_id": RICE["item_id"]}).sort("seq", -1).limit(1).to_list()
    take_id = derived_id("stock.take", red["_id"])
    await ledger.db["stock_moves"].insert_one(handlers.stock_move(RICE["item_id"], take_id, -1, head[0], red["_id"], 0))


async def points_spent_by_a_crashed_attempt(ledger: Service, red: dict[str, Any]) -> None:
    account = await ledger.db["accounts"].find_one({"_id": red["volunteer_id"]})
    last = await ledger.db["entries"].find_one({"volunteer_id": red["volunteer_id"], "seq": account["seq"]})
    await ledger.db["entries"].insert_one(chain.link(handlers.spend(red, account, time.time()), last))


async def stock(bus: Bus, item_id: str = RICE["item_id"]) -> int | None:
    items = (await bus.call(API.LEDGER_CATALOG_LIST, {"include_inactive": True}))["items"]
    return next(item["stock"] for item in items if item["item_id"] == item_id)


async def test_the_catalogue_lists_goods_courses_and_services(ledger: Service, bus: Bus) -> None:
    put = await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    await bus.call(API.LEDGER_CATALOG_PUT, {"item_id": "course.first-aid", "name": "急救培训", "kind": "course",
                                            "points": "50", "stock": 20})
    await bus.call(API.LEDGER_CATALOG_PUT, {"item_id": "service.haircut", "name": "理发", "kind": "service",
                                            "points": "10"})
    await bus.call(API.LEDGER_CATALOG_PUT, {"item_id": "goods.old", "name": "旧货", "kind": "goods", "points": "1",
                                            "stock": 1, "active": False})
    bad = await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "points": "0"})

    assert put == {"item_id": "goods.rice-5kg", "name": "大米 5kg", "kind": "goods", "points": "30.00", "stock": 10,
                   "active": True, "description": ""}
    assert bad["error"]["code"] == "invalid_request"
    listed = (await bus.call(API.LEDGER_CATALOG_LIST, {}))["items"]
    assert [(i["item_id"], i["stock"]) for i in listed] == [
        ("course.first-aid", 20), ("goods.rice-5kg", 10), ("service.haircut", None)]
    recounted = await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "stock": 4})
    assert recounted["stock"] == 4


async def test_a_redemption_spends_points_once_and_is_announced(ledger: Service, bus: Bus) -> None:
    await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    await funded(bus, ledger, "v-rice", "100")
    call = redeem("v-rice", quantity=2, key="kiosk-redeem-0001")

    first = await bus.call(API.LEDGER_REDEEM, call)
    again = await bus.call(API.LEDGER_REDEEM, call)
    reused = await bus.call(API.LEDGER_REDEEM, {**call, "quantity": 1})

    assert first == again and (first["points"], first["balance_points"], first["quantity"]) == ("60.00", "40.00", 2)
    assert reused["error"]["code"] == "idempotency_key_reused"
    [redeemed] = await bus.wait_for("points.redeemed", volunteer_id="v-rice")
    assert redeemed["data"] == {"redemption_id": first["redemption_id"], "volunteer_id": "v-rice",
                                "item_id": "goods.rice-5kg", "item_name": "大米 5kg", "quantity": 2,
                                "points": "60.00", "balance_points": "40.00"}
    assert redeemed["causationid"] == "kiosk-redeem-0001"
    spend = await ledger.db["entries"].find_one({"_id": first["entry_id"]})
    assert spend is not None and (spend["kind"], spend["points_cents"], spend["hours_cents"], spend["cause"]) == (
        "spend", -6000, 0, "kiosk-redeem-0001")
    assert (await balance(bus, "v-rice"))["points"] == "40.00" and await stock(bus) == 8
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "points.redeemed")) == 1


async def test_a_refused_redemption_changes_nothing(ledger: Service, bus: Bus) -> None:
    await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.last-one", "points": "1", "stock": 1})
    await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.withdrawn", "active": False})
    await funded(bus, ledger, "v-poor", "29.99")

    short = await bus.call(API.LEDGER_REDEEM, redeem("v-poor"))
    gone = await bus.call(API.LEDGER_REDEEM, redeem("v-poor", "goods.last-one", quantity=2))
    unknown = await bus.call(API.LEDGER_REDEEM, redeem("v-poor", "goods.nothing"))
    withdrawn = await bus.call(API.LEDGER_REDEEM, redeem("v-poor", "goods.withdrawn"))
    stranger = await bus.call(API.LEDGER_REDEEM, redeem("v-ghost"))

    assert [r["error"]["code"] for r in (short, gone, unknown, withdrawn, stranger)] == [
        "insufficient_points", "out_of_stock", "not_found", "item_unavailable", "not_found"]
    assert (await balance(bus, "v-poor"))["points"] == "29.99"
    assert (await stock(bus), await stock(bus, "goods.last-one")) == (10, 1)
    assert await ledger.db["entries"].count_documents({"kind": "spend"}) == 0


async def test_a_burst_of_redemptions_on_two_ledgers_never_overspends(
    ledger: Service, settings: BusSettings, bus: Bus
) -> None:
    second = await started(ledger_settings(settings))
    try:
        await bus.call(API.LEDGER_CATALOG_PUT, RICE)  # 10 bags
        await funded(bus, ledger, "v-burst", "210")  # enough for 7 bags at 30 points

        replies = await asyncio.gather(*(bus.call(API.LEDGER_REDEEM, redeem("v-burst")) for _ in range(50)))

        outcomes = Counter(r["error"]["code"] if "error" in r else "done" for r in replies)
        assert outcomes["done"] == 7 and sum(outcomes.values()) == 50
        assert set(outcomes) <= {"done", "insufficient_points", "out_of_stock"}, outcomes
        assert sorted(Decimal(r["balance_points"]) for r in replies if "error" not in r) == [
            Decimal(p) for p in (0, 30, 60, 90, 120, 150, 180)]
        assert (await balance(bus, "v-burst"))["points"] == "0.00"
        await eventually(lambda: _no_redemption_left_open(ledger), timeout=10)
        assert await stock(bus) == 3
        await bus.wait_for("points.redeemed", volunteer_id="v-burst", count=7)
        assert await verified(ledger) == []
    finally:
        await second.stop()


async def test_a_burst_from_many_volunteers_never_oversells(ledger: Service, settings: BusSettings, bus: Bus) -> None:
    second = await started(ledger_settings(settings))
    try:
        await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "stock": 5})
        volunteers = [f"v-many-{n}" for n in range(8)]
        for volunteer_id in volunteers:
            await funded(bus, ledger, volunteer_id, "60")

        calls = [redeem(v) for v in volunteers for _ in range(3)]
        replies = await asyncio.gather(*(bus.call(API.LEDGER_REDEEM, call) for call in calls))

        won = Counter(call["volunteer_id"] for call, reply in zip(calls, replies) if "error" not in reply)
        assert sum(won.values()) == 5 and await stock(bus) == 0
        assert {r["error"]["code"] for r in replies if "error" in r} <= {"out_of_stock", "insufficient_points"}
        for volunteer_id in volunteers:
            assert Decimal((await balance(bus, volunteer_id))["points"]) == 60 - 30 * won[volunteer_id]
        await eventually(lambda: _no_redemption_left_open(ledger), timeout=10)
        assert await verified(ledger) == []
    finally:
        await second.stop()


async def test_a_volunteer_who_cannot_pay_for_all_they_fired_holds_no_stock_from_others(
    ledger: Service, settings: BusSettings, bus: Bus
) -> None:
    second = await started(ledger_settings(settings))
    try:
        await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "stock": 2})
        await funded(bus, ledger, "v-eager", "30")  # one bag's worth, asked for four times at once
        await funded(bus, ledger, "v-patient", "30")
        calls = [redeem("v-eager") for _ in range(4)] + [redeem("v-patient")]

        replies = await asyncio.gather(*(bus.call(API.LEDGER_REDEEM, call) for call in calls))

        won = Counter(call["volunteer_id"] for call, reply in zip(calls, replies) if "error" not in reply)
        assert won == {"v-eager": 1, "v-patient": 1}, replies
        assert {r["error"]["code"] for r in replies if "error" in r} <= {"insufficient_points", "out_of_stock"}
        assert await stock(bus) == 0 and (await balance(bus, "v-eager"))["points"] == "0.00"
        await eventually(lambda: _no_redemption_left_open(ledger), timeout=10)
        assert await verified(ledger) == []
    finally:
        await second.stop()


async def _no_redemption_left_open(ledger: Service) -> bool:
    return await ledger.db["redemptions"].count_documents({"state": "pending"}) == 0 and (
        await ledger.db["redemptions"].count_documents({"state": "refused", "undone": False}) == 0
    )


async def test_a_redemption_a_crash_left_half_done_is_finished_by_the_sweep(ledger: Service, bus: Bus) -> None:
    red = await rice_redemption(bus, ledger, "v-crashed", "crashed-0001", time.time() - 5)
    # A ledger died after creating the redemption and taking the stock, before spending the points.
    await ledger.db["redemptions"].insert_one(red)
    await stock_taken_by_a_crashed_attempt(ledger, red)

    [announced] = await bus.wait_for("points.redeemed", volunteer_id="v-crashed")
    assert (announced["data"]["points"], announced["data"]["balance_points"]) == ("30.00", "70.00")
    stored = await eventually(lambda: ledger.db["redemptions"].find_one({"_id": red["_id"], "announced": True}))
    assert stored["state"] == "done"
    assert await stock(bus) == 9 and (await balance(bus, "v-crashed"))["points"] == "70.00"
    repeat = await bus.call(API.LEDGER_REDEEM, redeem("v-crashed", key="crashed-0001"))
    assert repeat["entry_id"] == stored["entry_id"]


async def test_a_refused_redemption_gives_back_what_a_racing_attempt_took(ledger: Service, bus: Bus) -> None:
    red = await rice_redemption(bus, ledger, "v-raced", "raced-00001", time.time())
    # One attempt refused it while another, racing, had already taken the stock and spent the points.
    await ledger.db["redemptions"].insert_one({**red, "state": "refused", "reason": "insufficient_points"})
    await stock_taken_by_a_crashed_attempt(ledger, red)
    await points_spent_by_a_crashed_attempt(ledger, red)

    settled = await eventually(
        lambda: ledger.db["redemptions"].find_one({"_id": red["_id"], "undone": True}), timeout=15)
    assert settled["state"] == "refused"
    assert await stock(bus) == 10 and (await balance(bus, "v-raced"))["points"] == "100.00"
    kinds = [(e["kind"], e["points_cents"]) for e in
             await ledger.db["entries"].find({"volunteer_id": "v-raced"}).sort("seq", 1).to_list()]
    assert kinds == [("adjust", 10000), ("spend", -3000), ("spend", 3000)]
    assert await verified(ledger) == []


async def test_a_step_a_crashed_racer_wrote_after_the_refusal_was_undone_is_given_back(
    ledger: Service, bus: Bus
) -> None:
    red = await rice_redemption(bus, ledger, "v-late", "late-000001", time.time())
    # Refused and undone (nothing was taken then); a racing attempt then spent the points and died.
    # The time to look again has come.
    await ledger.db["redemptions"].insert_one({**red, "state": "refused", "reason": "out_of_stock", "undone": True,
                                               "recheck": True, "recheck_until": time.time() - 1})
    await points_spent_by_a_crashed_attempt(ledger, red)

    refund = await eventually(lambda: ledger.db["entries"].find_one({"_id": handlers.refund_id(red["_id"])}))
    assert refund["points_cents"] == 3000
    assert await eventually(lambda: _balance_is(bus, "v-late", "100.00"))
    assert await stock(bus) == 10 and await verified(ledger) == []
    await eventually(lambda: _rechecks(ledger, 0))


async def test_a_refusal_is_looked_at_once_more_when_its_window_has_passed(ledger: Service, bus: Bus) -> None:
    red = await rice_redemption(bus, ledger, "v-none", "none-0000001", time.time())
    # What an attempt that lost a race for the last bag leaves: a refusal, undone, to look at again later.
    await ledger.db["redemptions"].insert_one({**red, "state": "refused", "reason": "out_of_stock", "undone": True,
                                               "recheck": True, "recheck_until": time.time() + 600})

    refused = await bus.call(API.LEDGER_REDEEM, redeem("v-none", key="none-0000001"))

    assert refused["error"]["code"] == "out_of_stock"
    await asyncio.sleep(0.5)  # sweeps run every 0.2 s here, and leave it alone until its time
    assert await _rechecks(ledger, 1)
    await ledger.db["redemptions"].update_one({"_id": red["_id"]}, {"$set": {"recheck_until": time.time() - 1}})
    await eventually(lambda: _rechecks(ledger, 0))
    assert await ledger.db["entries"].count_documents({"volunteer_id": "v-none", "kind": "spend"}) == 0


async def _balance_is(bus: Bus, volunteer_id: str, points: str) -> bool:
    return bool((await balance(bus, volunteer_id))["points"] == points)


async def _rechecks(ledger: Service, count: int) -> bool:
    return bool(await ledger.db["redemptions"].count_documents({"recheck": True}) == count)
