"""`linli places | requests | details | volunteer | close | rate --not-done` against a real intake service."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import API, new_event
from contracts.events import AssignmentAccepted, AssignmentCompleted
from linli import cli
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build
from services.intake.config import IntakeSettings
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service


@pytest.fixture
async def intake(settings: BusSettings, tmp_path: Path) -> AsyncIterator[Service]:
    service = build(IntakeSettings(bus=settings))
    await service.start()
    # What `linli up` leaves for other commands: where its servers listen.
    (tmp_path / "urls.env").write_text(f"NATS_URL={settings.nats_url}\nMONGO_URL={settings.mongo_url}\n")
    yield service
    await service.stop()


async def linli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, ["--data", str(tmp_path), *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_places_prints_the_district_as_a_tree_of_names(
    intake: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await linli(tmp_path, capsys, "places", "--district", "beibei")

    assert code == 0
    assert out.splitlines()[:4] == [
        "北碚区 (beibei) · Asia/Shanghai",
        "  天生街道 (tiansheng)",
        "    泉外社区 (quanwaiyuan)",
        "      泉外第一网格 (quanwai-01)",
    ]


async def test_requests_prints_codes_and_place_names_and_details_go_to_the_accepted_volunteer(
    intake: Service, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volunteer_id = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"]}))[
        "volunteer_id"]
    request_id = (await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-02",
        "service": "repair.plumbing", "window_start": "2099-12-02T01:00:00Z", "window_end": "2099-12-02T03:00:00Z",
        "resident": {"name": "王秀英", "phone": "13800138000", "address": "3栋401"}}))["request_id"]
    code = (await bus.call(API.INTAKE_STATUS, {"request_id": request_id}))["code"]

    status, table, _ = await linli(tmp_path, capsys, "requests", "--district", "beibei")
    _, as_json, _ = await linli(tmp_path, capsys, "requests", "--community", "quanwaiyuan", "--json")

    assert status == 0
    assert table.splitlines()[0].startswith(f"  {code}  submitted  routine  ")
    assert "水电维修  泉外社区泉外第二网格  (wanted 12月2日 09:00–11:00)" in table
    assert [item["request_id"] for item in json.loads(as_json)["items"]] == [request_id]

    ids = {"request_id": request_id, "volunteer_id": volunteer_id, "assignment_id": "a-cli"}
    await intake.outbox.send([new_event(AssignmentAccepted(**ids, code="K7QX3M"), source="linli/matcher",
                                        district="beibei", subject=request_id, correlationid=request_id)])
    await eventually(lambda: intake.db["assignments"].find_one({"_id": "a-cli"}))

    status, details, _ = await linli(tmp_path, capsys, "details", "k7qx3m", "--volunteer", volunteer_id)
    refused, _, why = await linli(tmp_path, capsys, "details", "K7QX3M", "--volunteer", "v-other")

    assert status == 0 and details.splitlines() == [
        f"request {code}: 水电维修 (routine)",
        "where:    泉外社区泉外第二网格, 3栋401",
        "when:     12月2日 09:00–11:00",
        "resident: 王秀英 13800138000",
    ]
    assert refused == 1 and "not_your_assignment" in why and "13800138000" not in why


async def test_a_volunteer_is_updated_and_leaves_from_the_command_line(
    intake: Service, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volunteer_id = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"]}))[
        "volunteer_id"]

    _, updated, _ = await linli(tmp_path, capsys, "volunteer", "update", volunteer_id, "--grids", "quanwai-02,quanwai-03",
                                "--capacity", "2", "--away", "2026-12-01:2026-12-07")
    _, left, _ = await linli(tmp_path, capsys, "volunteer", "leave", volunteer_id, "--reason", "搬家了")
    refused, _, why = await linli(tmp_path, capsys, "volunteer", "update", volunteer_id, "--capacity", "3")

    profile = json.loads(updated)
    assert profile["grids"] == ["quanwai-02", "quanwai-03"] and profile["capacity"] == 2
    assert profile["away"] == [{"start": "2026-12-01", "end": "2026-12-07"}] and profile["skills"] == ["repair"]
    assert json.loads(left)["active"] is False
    assert refused == 1 and "volunteer_left" in why


async def test_a_rating_of_not_done_reopens_and_only_then_can_the_request_be_closed(
    intake: Service, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = (await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "resident": {"name": "王秀英", "phone": "13800138000"}}))["request_id"]
    code = (await bus.call(API.INTAKE_STATUS, {"request_id": request_id}))["code"]
    early, _, why = await linli(tmp_path, capsys, "close", code, "--operator", "小刘", "--reason", "无需处理")
    ids = {"request_id": request_id, "volunteer_id": "v-1", "assignment_id": "a-1"}
    await intake.outbox.send([new_event(AssignmentCompleted(**ids, hours="1"), source="linli/matcher",
                                        district="beibei", subject=request_id, correlationid=request_id)])

    async def completed() -> bool:
        return bool((await bus.call(API.INTAKE_STATUS, {"request_id": request_id}))["status"] == "completed")

    await eventually(completed)
    _, rated, _ = await linli(tmp_path, capsys, "rate", code, "--stars", "4", "--not-done")
    _, closed, _ = await linli(tmp_path, capsys, "close", code, "--operator", "小刘", "--reason", "已电话回访")

    assert early == 1 and "not_changeable" in why
    assert json.loads(rated)["status"] == "reopened"
    assert json.loads(closed)["status"] == "closed"
