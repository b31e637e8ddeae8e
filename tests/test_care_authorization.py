"""Care with LINLI_AUTH=required: who calls is the signed token, not the reader a call states. A call without
a token is refused and writes nothing; an operator of another district, a bank clerk, or a volunteer outside
the care group may not read a plan; a member of the group reads it and checks in as themself only.

Tokens are signed here exactly as the identity service signs them (services.common.auth.issue), with a key
the care service trusts through LINLI_TOKEN_KEY."""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts import API
from services.common import auth
from services.common.config import BusSettings
from tests.conftest import Bus
from tests.test_care_service import MovedClock, Replica, elderly_plan, replica

pytestmark = pytest.mark.service

OPERATOR = {"person_id": "op-1", "role": "operator", "district": "beibei"}


@dataclass
class Signer:
    key: Ed25519PrivateKey
    key_id: str

    def token(self, sub: str, role: str, district: str = "beibei") -> str:
        return auth.issue(self.key, self.key_id, sub, role, district, ttl=600)[0]


@pytest.fixture
def signer_and_key(tmp_path: Path) -> tuple[Signer, str]:
    key = auth.load_private(auth.new_private_pem())
    public = auth.public_pem(key)
    key_file = tmp_path / "token-key.pem"
    key_file.write_text(public)
    return Signer(key, auth.key_id(public)), str(key_file)


@pytest.fixture
def signer(signer_and_key: tuple[Signer, str]) -> Signer:
    return signer_and_key[0]


@pytest.fixture
async def care(settings: BusSettings, signer_and_key: tuple[Signer, str]) -> AsyncIterator[Replica]:
    secured = replace(settings, auth="required", token_key=signer_and_key[1])
    running = await replica(secured, MovedClock())
    yield running
    await running.service.stop()


async def call(bus: Bus, subject: str, payload: dict[str, Any], token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    reply = await bus.nc.request(subject, json.dumps(payload).encode(), timeout=10, headers=headers)
    result: dict[str, Any] = json.loads(reply.data)
    return result


async def created(bus: Bus, signer: Signer) -> str:
    reply = await call(bus, API.CARE_CREATE_PLAN, elderly_plan(reader=OPERATOR), signer.token("op-1", "dispatcher"))
    assert "plan_id" in reply, reply
    return str(reply["plan_id"])


def reading(plan_id: str, person_id: str, role: str = "member", district: str = "beibei") -> dict[str, Any]:
    return {"plan_id": plan_id, "reader": {"person_id": person_id, "role": role, "district": district}}


def checking_in(plan_id: str, by: str) -> dict[str, Any]:
    return {"idempotency_key": f"ci-{uuid.uuid4()}", "plan_id": plan_id, "duty_id": "visit", "by": by,
            "mode": "visit", "outcome": "fine"}


def error(reply: dict[str, Any]) -> str:
    assert "error" in reply, reply
    return str(reply["error"]["code"])


async def test_a_call_without_a_token_is_unauthenticated_and_writes_nothing(
        bus: Bus, care: Replica, signer: Signer) -> None:
    assert error(await call(bus, API.CARE_CREATE_PLAN, elderly_plan(reader=OPERATOR))) == "unauthenticated"
    assert await care.service.db["plans"].count_documents({}) == 0
    plan_id = await created(bus, signer)
    assert error(await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "neighbour-1"))) == "unauthenticated"
    assert await care.service.db["checkins"].count_documents({}) == 0
    assert error(await call(bus, API.CARE_PLAN, reading(plan_id, "op-1", "operator"))) == "unauthenticated"


async def test_an_operator_of_another_district_is_forbidden_whatever_district_the_call_states(
        bus: Bus, care: Replica, signer: Signer) -> None:
    plan_id = await created(bus, signer)
    outsider = signer.token("op-2", "dispatcher", "jiangbei")
    for stated in ("beibei", "jiangbei"):
        reply = await call(bus, API.CARE_PLAN, reading(plan_id, "op-2", "operator", stated), outsider)
        assert error(reply) == "forbidden"
    ended = await call(bus, API.CARE_END_PLAN, {**reading(plan_id, "op-2", "operator"), "reason": "搬走了"}, outsider)
    assert error(ended) == "forbidden"
    plan = await care.service.db["plans"].find_one({"_id": plan_id})
    assert plan is not None and plan["active"] is True
    creating = await call(bus, API.CARE_CREATE_PLAN, elderly_plan(reader={**OPERATOR, "person_id": "op-2"}), outsider)
    assert error(creating) == "forbidden"
    assert await care.service.db["plans"].count_documents({}) == 1


async def test_an_operator_token_cannot_speak_for_another_operator_nor_a_bank_clerk_read_plans(
        bus: Bus, care: Replica, signer: Signer) -> None:
    plan_id = await created(bus, signer)
    someone_else = await call(bus, API.CARE_PLAN, reading(plan_id, "op-9", "operator"),
                              signer.token("op-1", "dispatcher"))
    assert error(someone_else) == "forbidden"
    clerk = await call(bus, API.CARE_PLAN, reading(plan_id, "clerk-1", "operator"),
                       signer.token("clerk-1", "bank_clerk"))
    assert error(clerk) == "forbidden"


async def test_a_volunteer_outside_the_care_group_cannot_read_the_plan(
        bus: Bus, care: Replica, signer: Signer) -> None:
    plan_id = await created(bus, signer)
    stranger = signer.token("stranger-1", "volunteer")
    assert error(await call(bus, API.CARE_PLAN, reading(plan_id, "stranger-1"), stranger)) == "forbidden"
    # Stating a member's id, or the operator's role, does not help: the token says who calls.
    assert error(await call(bus, API.CARE_PLAN, reading(plan_id, "neighbour-1"), stranger)) == "forbidden"
    assert error(await call(bus, API.CARE_PLAN, reading(plan_id, "stranger-1", "operator"), stranger)) == "forbidden"
    assert error(await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "neighbour-1"), stranger)) == "forbidden"
    assert error(await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "stranger-1"), stranger)) == "not_in_group"
    assert await care.service.db["checkins"].count_documents({}) == 0


async def test_a_member_of_the_group_reads_the_plan_and_checks_in_as_themself(
        bus: Bus, care: Replica, signer: Signer) -> None:
    plan_id = await created(bus, signer)
    neighbour = signer.token("neighbour-1", "volunteer")
    plan = await call(bus, API.CARE_PLAN, reading(plan_id, "neighbour-1"), neighbour)
    assert plan.get("plan_id") == plan_id and plan["health_notes"], plan
    reply = await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "neighbour-1"), neighbour)
    assert "checkin_id" in reply, reply
    checkin = await care.service.db["checkins"].find_one({"_id": reply["checkin_id"]})
    assert checkin is not None and checkin["by"] == "neighbour-1"
    # A member may not record a check-in in another member's name, nor change the plan.
    assert error(await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "worker-1"), neighbour)) == "forbidden"
    change = {**reading(plan_id, "neighbour-1"), "reason": "加一位", "health_notes": "改了"}
    assert error(await call(bus, API.CARE_CHANGE_PLAN, change, neighbour)) == "forbidden"


async def test_an_operator_of_the_district_reads_and_records_a_check_in_phoned_in_by_a_member(
        bus: Bus, care: Replica, signer: Signer) -> None:
    plan_id = await created(bus, signer)
    committee = signer.token("op-3", "committee")
    plan = await call(bus, API.CARE_PLAN, reading(plan_id, "op-3", "operator"), committee)
    assert plan.get("plan_id") == plan_id, plan
    reply = await call(bus, API.CARE_CHECK_IN, checking_in(plan_id, "worker-1"), committee)
    assert "checkin_id" in reply, reply
