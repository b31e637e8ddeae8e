"""`linli explain | assign | reassign | volunteers` against the running services: names and short codes for people."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from contracts import API
from linli.cli import main
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service


@pytest.fixture
async def services(settings: BusSettings) -> AsyncIterator[tuple[Service, Service]]:
    intake = build_intake(IntakeSettings(bus=settings))
    matcher = build_matcher(MatcherSettings(bus=settings, offer_ttl=600, sweep_interval=0.2, lease=5))
    await intake.start()
    await matcher.start()
    yield intake, matcher
    await matcher.stop()
    await intake.stop()


async def linli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_operators_explain_assign_reassign_and_list_volunteers_by_name_and_code(
    services: tuple[Service, Service], bus: Bus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, matcher = services
    monkeypatch.setenv("NATS_URL", matcher.settings.nats_url)
    ids = []
    for phone, name, grid in [("13900000901", "张建国", "quanwai-01"), ("13900000902", "刘芳", "quanwai-02")]:
        reply = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {"name": name, "phone": phone, "district": "beibei",
                                                               "grids": [grid], "skills": ["repair"]})
        ids.append(reply["volunteer_id"])
        await eventually(lambda v=reply["volunteer_id"]: matcher.db["volunteers"].find_one({"_id": v}))
    request_id = (await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": str(uuid.uuid4()), "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "resident": {"name": "王秀英", "phone": "13800000901"},
    }))["request_id"]
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]

    assert await linli("explain", request_id) == 0
    shown = capsys.readouterr().out
    assert "张建国" in shown and offer["code"] in shown and offer["assignment_id"] not in shown

    assert await linli("assign", request_id, "--volunteer", ids[1], "--operator", "网格员小李", "--reason", "点名") == 0
    assert "offered" in capsys.readouterr().out
    assert await linli("reassign", request_id, "--operator", "网格员小李", "--reason", "她没空", "--json") == 0
    assert json.loads(capsys.readouterr().out)["request_id"] == request_id
    assert await linli("assign", request_id, "--volunteer", "v-nobody", "--operator", "o", "--reason", "r") == 1
    assert "unknown_volunteer" in capsys.readouterr().err

    assert await linli("volunteers", "--district", "beibei", "--grid", "quanwai-02") == 0
    listed = capsys.readouterr().out
    assert "刘芳" in listed and "张建国" not in listed
