"""A volunteer signs in with a one-time code that the notifier sends to their phone: the event says only
which code, the notifier fetches its text once, and the code signs in once."""

import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from contracts import API
from services.common.config import BusSettings
from services.common.runtime import Service
from services.identity.app import build as build_identity
from services.identity.config import IdentitySettings
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.notifier.app import build as build_notifier
from tests.conftest import Bus, eventually
from tests.test_notifier_service import notifier_settings

pytestmark = pytest.mark.service


@pytest.fixture
async def services(settings: BusSettings) -> AsyncIterator[list[Service]]:
    secured = replace(settings, auth="required")
    running = [build_identity(IdentitySettings(bus=secured)), build_intake(IntakeSettings(bus=secured)),
               build_notifier(notifier_settings(secured, None))]
    for service in running:
        await service.start()
    yield running
    for service in running:
        await service.stop()


async def sent_text(notifier: Service, volunteer_id: str) -> dict[str, Any] | None:
    return await notifier.db["notifications"].find_one(
        {"kind": "sign_in_code", "recipient": f"volunteer:{volunteer_id}", "status": "delivered"})


async def test_a_volunteer_signs_in_with_the_code_the_notifier_sent(services: list[Service], bus: Bus) -> None:
    identity, _, notifier = services
    registered = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "袁文", "phone": "13900000021", "district": "beibei", "grids": ["g1"], "skills": ["repair"],
    })
    volunteer = registered["volunteer_id"]
    await eventually(lambda: identity.db["volunteers"].find_one({"_id": volunteer}))

    sent = await bus.call(API.IDENTITY_CODE_REQUEST, {"volunteer_id": volunteer})

    event = (await bus.wait_for("identity.code_requested", volunteer_id=volunteer))[0]
    stored = await identity.db["codes"].find_one({"_id": sent["code_ref"]})
    assert stored is not None
    assert event["data"]["code_ref"] == sent["code_ref"]
    text = (await eventually(lambda: sent_text(notifier, volunteer), timeout=30))["text"]
    code = digits(text)
    assert code not in json.dumps(event)  # the event names the code, never carries it
    assert await identity.db["codes"].find_one({"_id": sent["code_ref"], "text": {"$exists": True}}) is None

    signed = await bus.call(API.IDENTITY_CODE_VERIFY,
                            {"volunteer_id": volunteer, "code_ref": sent["code_ref"], "code": code})
    assert (signed["sub"], signed["role"], signed["district"]) == (volunteer, "volunteer", "beibei")
    again = await bus.call(API.IDENTITY_CODE_VERIFY,
                           {"volunteer_id": volunteer, "code_ref": sent["code_ref"], "code": code})
    assert again["error"]["code"] == "unauthenticated"
    taken = await bus.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]})
    assert taken["error"]["code"] == "not_found"  # the notifier had it, once


def digits(text: str) -> str:
    found = re.search(r"(?<![0-9])[0-9]{6}(?![0-9])", text)
    assert found, text
    return found.group()
