"""The loop as the people in it live it, with the services as separate processes: a resident at the
kiosk, two volunteers, an operator, and both volunteers' ledgers at the end."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts import API
from linli.client import caught_up
from linli.system import System
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.system

RESIDENT = {"name": "王秀英", "phone": "13800138000", "address": "泉外园小区3栋2单元401"}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.start(
        tmp_path_factory.mktemp("loop"),
        env={"MATCHER_OFFER_TTL": "600", "MATCHER_SWEEP_INTERVAL": "0.3", "LINLI_ACK_WAIT": "3"},
    )
    yield running
    running.stop()


async def register(client: Bus, name: str, phone: str, grid: str) -> str:
    reply = await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": name, "phone": phone, "district": "beibei", "grids": [grid], "skills": ["repair"],
    })
    return str(reply["volunteer_id"])


async def status_is(client: Bus, request_id: str, status: str) -> dict[str, Any] | None:
    view = await client.call(API.INTAKE_STATUS, {"request_id": request_id})
    return view if view.get("status") == status else None


def console_texts(system: System) -> str:
    """The texts the console channel delivered, without the log line's prefix (which names ids)."""
    logs = "".join(system.log_of(key) for key in system.processes if key.startswith("notifier"))
    return "\n".join(line.split("]: ", 1)[1] for line in logs.splitlines() if "]: " in line)


async def test_a_reopened_request_is_sent_out_again_and_both_volunteers_are_credited_right(
    system: System, client: Bus
) -> None:
    wang = await register(client, "王师傅", "13900000001", "quanwai-01")
    li = await register(client, "李师傅", "13900000002", "quanwai-02")
    await client.wait_for("volunteer.registered", count=2)
    await caught_up(client.nc, "matcher", "volunteer.registered")

    start = datetime.now(UTC) + timedelta(hours=2)
    request_id = (await client.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "description": "厨房水管漏水", "channel": "kiosk",
        "window_start": start.isoformat(), "window_end": (start + timedelta(hours=3)).isoformat(),
        "resident": RESIDENT,
    }))["request_id"]
    code = (await client.call(API.INTAKE_STATUS, {"request_id": request_id}))["code"]

    # The offer tells the volunteer what to decide on, and nothing that reaches the resident's door.
    offer_event = (await client.wait_for("volunteer.assigned", request_id=request_id))[0]
    offer = offer_event["data"]
    assert offer["volunteer_id"] == wang and offer["description"] == "厨房水管漏水"
    assert offer["request_code"] == code and offer["code"] and offer["window_start"]
    for private in RESIDENT.values():
        assert private not in json.dumps(offer_event, ensure_ascii=False)
    await client.wait_for("notification.delivered", recipient=f"volunteer:{wang}")
    offer_text = await eventually(lambda: offer["code"] in console_texts(system) and console_texts(system))
    assert "泉外社区" in offer_text and request_id not in offer_text

    # The volunteer accepts by the code read aloud; only they get the address and the phone.
    accepted = await client.call(API.MATCHER_RESPOND, {
        "assignment_id": offer["code"].lower(), "volunteer_id": wang, "accept": True,
    })
    assert accepted["status"] == "accepted"
    await eventually(lambda: status_is(client, request_id, "accepted"))
    details = await client.call(API.INTAKE_DETAILS, {"assignment_id": offer["assignment_id"], "volunteer_id": wang})
    assert (details["address"], details["resident_phone"], details["resident_name"]) == (
        RESIDENT["address"], RESIDENT["phone"], RESIDENT["name"])
    refused = await client.call(API.INTAKE_DETAILS, {"assignment_id": offer["assignment_id"], "volunteer_id": li})
    assert refused["error"]["code"] == "not_your_assignment"
    told = await eventually(
        lambda: RESIDENT["address"] in (texts := console_texts(system)) and "志愿者王师傅" in texts and texts)
    # The volunteer is told how to call; the console log masks the number, as it masks every phone.
    assert "138****8000" in told and "志愿者王师傅" in told
    assert (await client.call(API.INTAKE_STATUS, {"request_id": request_id}))["volunteer_name"] == "王师傅"

    # Done, but the resident says it is not fixed: two stars reopen it for the operators.
    await client.call(API.MATCHER_COMPLETE, {
        "assignment_id": offer["assignment_id"], "volunteer_id": wang, "hours": "1.5",
    })
    await client.wait_for("points.earned", request_id=request_id)
    await eventually(lambda: status_is(client, request_id, "completed"))
    reopened = await client.call(API.INTAKE_RATE, {"request_id": code, "stars": 2, "comment": "还在漏"})
    assert reopened["status"] == "reopened"
    queue = await eventually(lambda: _listed(client, "reopened", request_id))
    assert queue["code"] == code

    # An operator sends it out again from the queue: the stages once more, without 王师傅 (once the matcher,
    # which intake's queue does not wait for, has the rating too).
    await caught_up(client.nc, "matcher", "request.rated")
    again = await client.call(API.MATCHER_REASSIGN, {
        "request_id": request_id, "operator": "张主任", "reason": "居民说还在漏水，换一位师傅",
    })
    assert "error" not in again, again
    second = (await client.wait_for("volunteer.assigned", request_id=request_id, count=2))[1]["data"]
    assert second["volunteer_id"] == li
    await client.wait_for("request.redispatched", request_id=request_id)
    await client.call(API.MATCHER_RESPOND, {"assignment_id": second["code"], "volunteer_id": li, "accept": True})
    await eventually(lambda: status_is(client, request_id, "accepted"))
    await client.call(API.MATCHER_COMPLETE, {"assignment_id": second["code"], "volunteer_id": li, "hours": "2"})
    await eventually(lambda: status_is(client, request_id, "completed"))
    rated = await client.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "修好了"})
    assert rated["status"] == "rated"

    # Both ledgers: 王师傅's hours stay in review as disputed; 李师傅's are credited and rated.
    li_balance = await eventually(lambda: _balance_with_ratings(client, li))
    assert Decimal(li_balance["hours"]) == Decimal("2") and Decimal(li_balance["average_stars"]) == 5
    wang_balance = await client.call(API.LEDGER_BALANCE, {"volunteer_id": wang})
    assert Decimal(wang_balance["hours"]) == Decimal("1.5")
    review = (await client.call(API.LEDGER_REVIEW, {}))["items"]
    assert [(i["volunteer_id"], i["state"]) for i in review if i["request_id"] == request_id] == [(wang, "disputed")]
    history = (await client.call(API.INTAKE_STATUS, {"request_id": request_id}))["history"]
    # Whether "offered" shows before "accepted" depends on which event intake reads first.
    statuses = [h["status"] for h in history if h["status"] != "offered"]
    assert statuses == ["submitted", "accepted", "completed", "reopened", "submitted", "accepted", "completed", "rated"]
    assert any("张主任" in h.get("note", "") for h in history)
    explained = await client.call(API.MATCHER_EXPLAIN, {"request_id": request_id})
    assert any(a.get("operator") == "张主任" for a in explained["operator_actions"])


async def _listed(client: Bus, state: str, request_id: str) -> dict[str, Any] | None:
    page = await client.call(API.INTAKE_REQUESTS, {"state": state, "district": "beibei"})
    return next((item for item in page.get("items", []) if item["request_id"] == request_id), None)


async def _balance_with_ratings(client: Bus, volunteer: str) -> dict[str, Any] | None:
    balance = await client.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer})
    return balance if balance.get("ratings") == 1 else None
