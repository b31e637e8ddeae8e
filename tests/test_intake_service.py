import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from contracts import API
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build
from services.intake import handlers
from services.intake.config import IntakeSettings
from tests.conftest import Bus, stored_events

pytestmark = pytest.mark.service


@pytest.fixture
async def intake(settings: BusSettings) -> AsyncIterator[Service]:
    service = build(IntakeSettings(bus=settings, announce_after=0.5))
    await service.start()
    yield service
    await service.stop()


def submission(**overrides: object) -> dict[str, object]:
    call: dict[str, object] = {
        "idempotency_key": f"kiosk-{uuid.uuid4()}",
        "district": "beibei",
        "grid": "quanwai-01",
        "service": "repair.plumbing",
        "description": "厨房水管漏水",
        "urgency": "routine",
        "resident": {"name": "王秀英", "phone": "13800138000", "address": "3栋401"},
        "channel": "kiosk",
    }
    call.update(overrides)
    return call


async def test_same_idempotency_key_gives_one_request_and_one_event(intake: Service, bus: Bus) -> None:
    call = submission()
    first = await bus.call(API.INTAKE_SUBMIT, call)
    second = await bus.call(API.INTAKE_SUBMIT, call)

    assert first == second == {"request_id": first["request_id"], "status": "submitted"}
    await bus.wait_for("request.created", request_id=first["request_id"])
    await asyncio.sleep(0.3)
    kept = await stored_events(bus.nc, "request.created")
    assert [e["data"]["request_id"] for e in kept] == [first["request_id"]]
    event = kept[0]
    assert event["specversion"] == "1.0" and event["type"] == "linli.request.created"
    assert event["data"]["category"] == "repair" and "resident" not in event["data"]
    assert "13800138000" not in str(event)


async def test_reusing_a_key_for_a_different_request_is_refused(intake: Service, bus: Bus) -> None:
    call = submission()
    await bus.call(API.INTAKE_SUBMIT, call)
    reply = await bus.call(API.INTAKE_SUBMIT, {**call, "service": "haircut.home"})
    assert reply["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"service": "no.such.item"}, None),
        ({"urgency": "yesterday"}, "urgency"),
        ({"resident": {"name": "", "phone": "x"}}, "resident.name"),
        ({"district": "Bei Bei!"}, "district"),
        ({"window_start": "2026-12-01T10:00:00Z", "window_end": "2026-12-01T09:00:00Z"}, ""),
    ],
)
async def test_bad_submission_gets_a_clear_error_and_changes_nothing(
    intake: Service, bus: Bus, change: dict[str, object], field: str | None
) -> None:
    reply = await bus.call(API.INTAKE_SUBMIT, submission(**change))

    error = reply["error"]
    assert error["code"] in {"invalid_request", "unknown_service"}
    assert error["message"]
    if field is not None:
        assert field in [d["field"] for d in error["details"]]
    assert await intake.db["requests"].count_documents({}) == 0
    assert await intake.db["outbox"].count_documents({}) == 0
    await asyncio.sleep(0.2)
    assert bus.of_type("request.created") == []


async def test_garbage_is_answered_not_dropped(intake: Service, bus: Bus) -> None:
    reply = await bus.call(API.INTAKE_SUBMIT, b"\xff not json")
    assert reply["error"]["code"] == "invalid_request"


async def test_status_follows_the_assignment_events(intake: Service, bus: Bus) -> None:
    from contracts import new_event
    from contracts.events import AssignmentAccepted, AssignmentCompleted

    request_id = (await bus.call(API.INTAKE_SUBMIT, submission()))["request_id"]
    ids = {"request_id": request_id, "volunteer_id": "v-1", "assignment_id": "a-1"}
    accepted = new_event(
        AssignmentAccepted(**ids), source="test", district="beibei", subject=request_id, correlationid=request_id
    )
    completed = new_event(
        AssignmentCompleted(**ids, hours="1.5"),
        source="test", district="beibei", subject=request_id, correlationid=request_id,
    )
    # Completed arrives before accepted: the status must not step back.
    await intake.outbox.send([completed, accepted])

    async def status() -> dict[str, object]:
        return await bus.call(API.INTAKE_STATUS, {"request_id": request_id})

    for _ in range(100):
        if (await status())["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    view = await status()
    assert view["status"] == "completed" and view["hours"] == "1.5" and view["volunteer_id"] == "v-1"

    rated = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "很好"})
    assert rated["status"] == "rated" and rated["stars"] == 5
    again = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "很好"})
    assert again["status"] == "rated"
    changed = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 1})
    assert changed["error"]["code"] == "already_rated"
    await bus.wait_for("request.rated", request_id=request_id, stars=5)
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "request.rated")) == 1


async def test_rating_before_completion_is_refused(intake: Service, bus: Bus) -> None:
    request_id = (await bus.call(API.INTAKE_SUBMIT, submission()))["request_id"]
    reply = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 4})
    assert reply["error"]["code"] == "not_completed"
    assert (await bus.call(API.INTAKE_STATUS, {"request_id": request_id}))["status"] == "submitted"


async def test_a_stored_but_unpublished_request_is_announced_after_a_crash(intake: Service, bus: Bus) -> None:
    from datetime import UTC, datetime

    from contracts.calls import SubmitRequest
    from services.intake import handlers

    menu = handlers.Menu.load(IntakeSettings().catalog_path)
    doc, _ = handlers.new_request(SubmitRequest.model_validate(submission()), menu, datetime.now(UTC))
    await intake.db["requests"].insert_one(doc)  # what a process killed right after the write leaves behind

    await bus.wait_for("request.created", request_id=doc["_id"], timeout=10)


async def test_volunteer_registration_publishes_and_unknown_skills_are_refused(intake: Service, bus: Bus) -> None:
    call = {"name": "袁文", "phone": "139 0013 9000", "district": "beibei", "grids": ["g1"], "skills": ["repair"]}
    first = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, call)
    again = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, call)
    assert first == again and first["volunteer_id"].startswith("v-")
    await bus.wait_for("volunteer.registered", volunteer_id=first["volunteer_id"])
    await asyncio.sleep(0.3)
    assert len(await stored_events(bus.nc, "volunteer.registered")) == 1

    bad = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {**call, "phone": "13700000000", "skills": ["juggling"]})
    assert bad["error"]["code"] == "unknown_skill"
    contact = await bus.call(API.INTAKE_CONTACT, {"kind": "volunteer", "id": first["volunteer_id"]})
    assert contact == {"name": "袁文", "phone": "139 0013 9000", "address": ""}


async def test_the_phones_last_four_digits_open_a_request_and_wrong_ones_find_nothing(intake: Service, bus: Bus) -> None:
    request_id = (await bus.call(API.INTAKE_SUBMIT, submission()))["request_id"]
    code = (await bus.call(API.INTAKE_STATUS, {"request_id": request_id}))["code"]
    assert (await bus.call(API.INTAKE_STATUS, {"request_id": code, "phone_last4": "8000"}))["request_id"] == request_id
    wrong = await bus.call(API.INTAKE_STATUS, {"request_id": code, "phone_last4": "8001"})
    unknown = await bus.call(API.INTAKE_STATUS, {"request_id": "ZZZZZZ", "phone_last4": "8001"})
    # A wrong guess reads exactly like a code that does not exist: it tells nothing about the request.
    assert wrong["error"]["code"] == unknown["error"]["code"] == "not_found"
    assert (await bus.call(API.INTAKE_STATUS, {"request_id": code, "phone_last4": "80"}))["error"]["code"] == "invalid_request"
    refused = await bus.call(API.INTAKE_RATE, {"request_id": code, "phone_last4": "1234", "stars": 5})
    assert refused["error"]["code"] == "not_found"


async def test_a_request_is_announced_from_itself_and_marked_once_published(intake: Service, bus: Bus) -> None:
    request_id = (await bus.call(API.INTAKE_SUBMIT, submission()))["request_id"]

    [created] = await bus.wait_for("request.created", request_id=request_id)
    stored = await intake.db["requests"].find_one({"_id": request_id})
    assert stored is not None and stored["announced"]
    assert await intake.db["outbox"].count_documents({}) == 0  # nothing staged apart for the relay
    assert created["id"] == handlers.created_event(stored).id
