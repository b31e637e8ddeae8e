"""Pseudonyms and ids that cannot be traced back to a phone number without intake's secret."""

import hashlib
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import API
from contracts.calls import SubmitRequest
from contracts.envelope import derived_id
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake import handlers
from services.intake.app import build
from services.intake.config import IntakeSettings
from tests.conftest import Bus, eventually

PHONE = "13800138000"
DISTRICT = "beibei"


def nearby_phones(phone: str = PHONE, spread: int = 2000) -> Iterator[str]:
    """Every number an attacker who knows roughly whose phone it is would try, the real one among them."""
    start = int(phone) - spread // 2
    return (str(n) for n in range(start, start + spread))


def unkeyed_guesses(phone: str, kind: str) -> set[str]:
    """What anyone without the secret can compute from a phone: the old uuid5 ids and plain or empty-keyed hashes."""
    digits = handlers.digits_of(phone)
    raw = [derived_id(kind, DISTRICT, digits), derived_id(kind, digits)]
    for text in (digits, f"{DISTRICT}/{digits}", f"{kind}/{DISTRICT}/{digits}"):
        raw.append(hashlib.sha256(text.encode()).hexdigest())
        raw.append(hmac.new(b"", text.encode(), hashlib.sha256).hexdigest())
    return {prefix + r[:length] for r in raw for prefix in ("", "p-", "p2-", "v-") for length in (32, 36, 64)}


@pytest.mark.domain
def test_a_resident_ref_cannot_be_reversed_by_trying_phone_numbers_without_the_secret() -> None:
    key = secrets.token_bytes(32)
    ref = handlers.resident_ref_for(key, DISTRICT, PHONE)
    legacy = handlers.legacy_resident_ref(DISTRICT, PHONE)

    found_without_key = [p for p in nearby_phones() if ref in unkeyed_guesses(p, "resident")]
    legacy_found = [p for p in nearby_phones() if legacy in unkeyed_guesses(p, "resident")]
    found_with_key = [p for p in nearby_phones() if handlers.resident_ref_for(key, DISTRICT, p) == ref]

    assert found_without_key == []
    assert legacy_found == [PHONE]  # version 1 falls to exactly this search
    assert found_with_key == [PHONE]  # the search itself is sound: the secret is what it lacks


@pytest.mark.domain
def test_another_districts_secret_gives_another_pseudonym() -> None:
    one, other = secrets.token_bytes(32), secrets.token_bytes(32)
    assert handlers.resident_ref_for(one, DISTRICT, PHONE) != handlers.resident_ref_for(other, DISTRICT, PHONE)
    assert handlers.resident_ref_for(one, DISTRICT, PHONE) == handlers.resident_ref_for(one, DISTRICT, "138 0013 8000")
    assert handlers.is_legacy_ref(handlers.legacy_resident_ref(DISTRICT, PHONE))
    assert not handlers.is_legacy_ref(handlers.resident_ref_for(one, DISTRICT, PHONE))


# --- the service ------------------------------------------------------------------------------------------------


@pytest.fixture
async def intake(settings: BusSettings) -> AsyncIterator[Service]:
    service = build(IntakeSettings(bus=settings, announce_after=0.5))
    await service.start()
    yield service
    await service.stop()


def submission(phone: str = PHONE) -> dict[str, Any]:
    return {"idempotency_key": f"kiosk-{uuid.uuid4()}", "district": DISTRICT, "grid": "quanwai-01",
            "service": "repair.plumbing", "description": "厨房水管漏水", "urgency": "routine",
            "resident": {"name": "王秀英", "phone": phone, "address": "3栋401"}, "channel": "kiosk"}


def volunteer(phone: str = "13900139000") -> dict[str, Any]:
    return {"name": "袁文", "phone": phone, "district": DISTRICT, "grids": ["quanwai-01"], "skills": ["repair"]}


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_a_volunteer_id_is_random_yet_the_same_phone_finds_it_again(intake: Service, bus: Bus) -> None:
    first = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer()))["volunteer_id"]
    again = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer("139 0013 9000")))["volunteer_id"]
    other = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer("13900139001")))["volunteer_id"]

    assert first == again != other
    assert not [p for p in nearby_phones("13900139000") if first in unkeyed_guesses(p, "volunteer")]


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_one_resident_keeps_one_keyed_ref_across_requests_and_restarts(settings: BusSettings, bus: Bus) -> None:
    first_run = build(IntakeSettings(bus=settings, announce_after=0.5))
    await first_run.start()
    try:
        one = (await bus.call(API.INTAKE_SUBMIT, submission()))["request_id"]
    finally:
        await first_run.stop()
    again = build(IntakeSettings(bus=settings, announce_after=0.5))
    await again.start()
    try:
        two = (await bus.call(API.INTAKE_SUBMIT, submission("138 0013 8000")))["request_id"]
        other = (await bus.call(API.INTAKE_SUBMIT, submission("13800138001")))["request_id"]
        [first] = await bus.wait_for("request.created", request_id=one)
        [second] = await bus.wait_for("request.created", request_id=two)
        [third] = await bus.wait_for("request.created", request_id=other)
    finally:
        await again.stop()

    ref = first["data"]["resident_ref"]
    assert ref.startswith("p2-") and ref == second["data"]["resident_ref"] != third["data"]["resident_ref"]
    assert not [p for p in nearby_phones() if ref in unkeyed_guesses(p, "resident")]


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_data_stored_before_keyed_pseudonyms_keeps_working(settings: BusSettings, bus: Bus) -> None:
    service = build(IntakeSettings(bus=settings, announce_after=0.5))
    db = service.db
    old_volunteer = "v-" + derived_id("volunteer", DISTRICT, "13900139000")
    old_ref = handlers.legacy_resident_ref(DISTRICT, PHONE)
    now = datetime.now(UTC)
    # What version 1 left in intake's database: a volunteer with a phone-derived id, a request with an
    # unkeyed resident ref, and a standing pairing under that ref.
    await db["volunteers"].insert_one({
        "_id": old_volunteer, "name": "袁文", "phone": "13900139000", "district": DISTRICT, "grids": ["quanwai-01"],
        "skills": ["repair"], "capacity": 3, "team": "", "attributes": [], "availability": [], "away": [],
        "active": True, "revision": 0, "updated_at": now.isoformat()})
    doc, _ = handlers.new_request(SubmitRequest.model_validate(submission()),
                                  handlers.Menu.load(IntakeSettings().catalog_path), now, resident_ref=old_ref)
    await db["requests"].insert_one({**doc, "announced": True})
    await db["pairings"].insert_one({"_id": "pr-old", "district": DISTRICT, "resident_ref": old_ref,
                                     "volunteer_id": old_volunteer, "kind": "care-group", "active": True,
                                     "started": now.timestamp()})
    await service.start()
    try:
        registered = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, volunteer())
        status = await bus.call(API.INTAKE_STATUS, {"request_id": doc["_id"]})
        [ended] = await bus.wait_for("pairing.ended", pairing_id="pr-old")
        [moved] = await bus.wait_for("pairing.created", volunteer_id=old_volunteer)
        pairings = await eventually(lambda: db["pairings"].find({"active": True}).to_list())
    finally:
        await service.stop()

    assert registered == {"volunteer_id": old_volunteer}
    assert status["status"] == "submitted" and status["request_id"] == doc["_id"]
    assert ended["data"]["resident_ref"] == old_ref
    assert moved["data"]["resident_ref"].startswith("p2-")
    assert [p["resident_ref"] for p in pairings] == [moved["data"]["resident_ref"]]
