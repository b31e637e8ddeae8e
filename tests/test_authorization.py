"""Every privileged call says who, with a token the identity service signed: a call without one, with an
expired one, from the wrong role or district, or for another volunteer is refused before anything is
written, and each privileged action is in the audit trail."""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from contracts import API
from services.common import auth
from services.common.config import BusSettings
from services.common.runtime import Service
from services.identity.app import build as build_identity
from services.identity.config import IdentitySettings
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.ledger.app import build as build_ledger
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, eventually
from tests.test_ledger_service import ledger_settings

pytestmark = pytest.mark.service
ADMIN_PASSWORD = "admin-password-for-tests"


@dataclass
class Linli:
    identity: Service
    intake: Service
    matcher: Service
    ledger: Service
    bus: Bus

    async def call(self, subject: str, payload: dict[str, Any], token: str = "") -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await self.bus.nc.request(subject, json.dumps(payload).encode(), timeout=10, headers=headers)
        result: dict[str, Any] = json.loads(reply.data)
        return result

    async def login(self, user: str, password: str) -> str:
        reply = await self.call(API.IDENTITY_LOGIN, {"user": user, "password": password})
        assert "error" not in reply, reply
        return str(reply["token"])

    async def operator(self, user: str, role: str, district: str) -> str:
        admin = await self.login("admin", ADMIN_PASSWORD)
        password = f"pw-{uuid.uuid4().hex}"
        made = await self.call(API.IDENTITY_OPERATOR_PUT,
                               {"user": user, "role": role, "district": district, "password": password}, admin)
        assert "error" not in made, made
        return await self.login(user, password)

    async def volunteer(self, volunteer_id: str) -> str:
        """Signs a volunteer in with a one-time code, reading it as the notifier would."""
        await eventually(lambda: self.identity.db["volunteers"].find_one({"_id": volunteer_id}))
        sent = await self.call(API.IDENTITY_CODE_REQUEST, {"volunteer_id": volunteer_id})
        code = await self.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]})
        reply = await self.call(API.IDENTITY_CODE_VERIFY,
                                {"volunteer_id": volunteer_id, "code_ref": sent["code_ref"], "code": code["code"]})
        assert reply["role"] == "volunteer", reply
        return str(reply["token"])

    async def register(self, phone: str, district: str = "beibei") -> str:
        reply = await self.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": f"志愿者{phone[-4:]}", "phone": phone, "district": district, "grids": ["g1"],
            "skills": ["repair"], "capacity": 1,
        })
        volunteer_id = str(reply["volunteer_id"])
        await self.bus.wait_for("volunteer.registered", volunteer_id=volunteer_id)
        await eventually(lambda: self.ledger.db["accounts"].find_one({"_id": volunteer_id}))
        await eventually(lambda: self.matcher.db["volunteers"].find_one({"_id": volunteer_id}))
        return volunteer_id


@pytest.fixture
async def linli(settings: BusSettings, bus: Bus, tmp_path: Path) -> AsyncIterator[Linli]:
    secured = replace(settings, auth="required")
    password_file = tmp_path / "admin-password"
    password_file.write_text(ADMIN_PASSWORD)
    services = [
        build_identity(IdentitySettings(bus=secured, admin_password_file=str(password_file))),
        build_intake(IntakeSettings(bus=secured)),
        build_matcher(MatcherSettings(bus=secured, offer_ttl=60.0, sweep_interval=0.2, lease=5.0)),
        build_ledger(ledger_settings(secured)),
    ]
    for service in services:
        await service.start()
    yield Linli(*services, bus)
    for service in services:
        await service.stop()


async def contents(service: Service) -> dict[str, list[dict[str, Any]]]:
    """Every document of the service's collections but the audit trail, which records refusals too, and the
    ledger sweep's mark, which every sweep moves on, once the events of what came before are published (the
    outbox drops published entries a moment later)."""
    await eventually(lambda: outbox_is_empty(service))
    names = sorted(n for n in await service.db.list_collection_names() if n not in ("audit", "sweeps"))
    return {n: sorted(await service.db[n].find({}).to_list(), key=lambda d: str(d["_id"])) for n in names}


def code_of(reply: dict[str, Any]) -> str:
    return str(reply.get("error", {}).get("code", "ok"))


async def test_a_volunteers_token_cannot_respond_for_another_volunteer(linli: Linli) -> None:
    asker, offered = await linli.register("13900000001"), await linli.register("13900000002", district="tieling")
    dispatcher = await linli.operator("disp-tieling", "dispatcher", "tieling")
    request = await linli.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"k-{uuid.uuid4()}", "district": "tieling", "grid": "g1", "service": "repair.plumbing",
        "channel": "hotline", "resident": {"name": "李淑君", "phone": "13800000001"},
    }, dispatcher)
    offer = (await linli.bus.wait_for("volunteer.assigned", request_id=request["request_id"]))[0]["data"]
    assert offer["volunteer_id"] == offered
    # The offer's last write: the sweep's, that marks it published.
    await eventually(lambda: linli.matcher.db["assignments"].find_one({"announced": True}))
    before = await contents(linli.matcher)

    token = await linli.volunteer(asker)
    as_other = {"assignment_id": offer["assignment_id"], "volunteer_id": offered, "accept": True}
    assert code_of(await linli.call(API.MATCHER_RESPOND, as_other, token)) == "forbidden"
    as_self = {**as_other, "volunteer_id": asker}
    assert code_of(await linli.call(API.MATCHER_RESPOND, as_self, token)) == "not_your_assignment"
    assert await contents(linli.matcher) == before

    own = await linli.volunteer(offered)
    assert (await linli.call(API.MATCHER_RESPOND, as_other, own))["status"] == "accepted"


async def test_an_operator_of_one_district_cannot_adjust_a_volunteer_of_another(linli: Linli) -> None:
    volunteer = await linli.register("13900000003")  # beibei
    elsewhere = await linli.operator("clerk-tieling", "bank_clerk", "tieling")
    here = await linli.operator("clerk-beibei", "bank_clerk", "beibei")
    change = {"volunteer_id": volunteer, "points": "10", "reason": "opening balance", "operator": "someone else",
              "idempotency_key": f"adj-{uuid.uuid4()}"}
    before = await contents(linli.ledger)

    refused = await linli.call(API.LEDGER_ADJUST, change, elsewhere)

    assert code_of(refused) == "forbidden"
    assert await contents(linli.ledger) == before
    entry = await linli.call(API.LEDGER_ADJUST, change, here)
    assert entry["points"] == "10.00" or entry["points"] == "10"
    stored = await linli.ledger.db["entries"].find_one({"_id": entry["entry_id"]})
    assert stored is not None and "clerk-beibei" in json.dumps(stored, default=str)  # the token's name, not the body's


async def test_a_dispatcher_cannot_adjust(linli: Linli) -> None:
    volunteer = await linli.register("13900000004")
    dispatcher = await linli.operator("disp-beibei", "dispatcher", "beibei")
    before = await contents(linli.ledger)
    refused = await linli.call(API.LEDGER_ADJUST, {
        "volunteer_id": volunteer, "points": "10", "reason": "r", "operator": "x",
        "idempotency_key": f"adj-{uuid.uuid4()}"}, dispatcher)
    assert code_of(refused) == "forbidden"
    assert await contents(linli.ledger) == before


async def test_a_call_without_a_token_is_unauthenticated_and_writes_nothing(linli: Linli) -> None:
    volunteer = await linli.register("13900000005")
    before = {s.name: await contents(s) for s in (linli.intake, linli.matcher, linli.ledger)}
    calls = [
        (API.LEDGER_ADJUST, {"volunteer_id": volunteer, "points": "10", "reason": "r", "operator": "x",
                             "idempotency_key": f"adj-{uuid.uuid4()}"}),
        (API.LEDGER_TRUST_PUT, {"district": "county", "public_key": "k", "operator": "x", "reason": "r"}),
        (API.LEDGER_CATALOG_PUT, {"item_id": "goods.rice", "name": "米", "kind": "goods", "points": "3"}),
        (API.MATCHER_ASSIGN, {"request_id": "r-1", "volunteer_id": volunteer, "operator": "nobody-checked",
                              "reason": "r"}),
        (API.INTAKE_SUBMIT, {"idempotency_key": f"k-{uuid.uuid4()}", "district": "beibei", "grid": "g1",
                             "service": "repair.plumbing", "resident": {"name": "李", "phone": "13800000001"}}),
        (API.INTAKE_CLOSE, {"request_id": "r-1", "operator": "x", "reason": "r"}),
        ("linli.api.ledger.dead_letters", {"action": "list"}),
    ]
    for subject, body in calls:
        assert code_of(await linli.call(subject, body)) == "unauthenticated", subject
        assert code_of(await linli.call(subject, body, "not.a.token")) == "unauthenticated", subject
    assert {s.name: await contents(s) for s in (linli.intake, linli.matcher, linli.ledger)} == before


async def outbox_is_empty(service: Service) -> bool:
    return await service.db["outbox"].count_documents({}) == 0


async def test_an_expired_or_foreign_token_is_unauthenticated(linli: Linli) -> None:
    volunteer = await linli.register("13900000006")
    key = await linli.identity.db["keys"].find_one({"_id": "signing"})
    assert key is not None
    private = auth.load_private(key["private_pem"])
    key_id = auth.key_id(auth.public_pem(private))
    expired, _ = auth.issue(private, key_id, "clerk", "bank_clerk", "beibei", ttl=8 * 3600, now=0)
    forged_key = auth.load_private(auth.new_private_pem())
    forged, _ = auth.issue(forged_key, key_id, "clerk", "bank_clerk", "beibei", ttl=3600)
    change = {"volunteer_id": volunteer, "points": "10", "reason": "r", "operator": "x",
              "idempotency_key": f"adj-{uuid.uuid4()}"}
    before = await contents(linli.ledger)
    assert code_of(await linli.call(API.LEDGER_ADJUST, change, expired)) == "unauthenticated"
    assert code_of(await linli.call(API.LEDGER_ADJUST, change, forged)) == "unauthenticated"
    assert await contents(linli.ledger) == before


async def test_a_kiosk_submits_only_for_its_own_district_and_grid(linli: Linli) -> None:
    admin = await linli.login("admin", ADMIN_PASSWORD)
    device = await linli.call(API.IDENTITY_DEVICE_PUT, {"device_id": "kiosk-g1", "district": "beibei", "grid": "g1"},
                              admin)
    kiosk = await linli.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": "kiosk-g1", "secret": device["secret"]})
    assert (kiosk["role"], kiosk["district"], kiosk["grid"]) == ("kiosk", "beibei", "g1")
    request = {"idempotency_key": f"k-{uuid.uuid4()}", "district": "beibei", "grid": "g1",
               "service": "repair.plumbing", "resident": {"name": "李淑君", "phone": "13800000001"}}
    before = await contents(linli.intake)
    for other in ({"grid": "g2"}, {"district": "tieling"}):
        assert code_of(await linli.call(API.INTAKE_SUBMIT, request | other, kiosk["token"])) == "forbidden"
    assert await contents(linli.intake) == before
    assert "request_id" in await linli.call(API.INTAKE_SUBMIT, request, kiosk["token"])
    wrong = await linli.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": "kiosk-g1", "secret": "guessed"})
    assert code_of(wrong) == "unauthenticated"


async def test_the_audit_trail_lists_each_privileged_action_to_administrators_only(linli: Linli) -> None:
    volunteer = await linli.register("13900000007")
    clerk = await linli.operator("clerk-audit", "bank_clerk", "beibei")
    change = {"volunteer_id": volunteer, "points": "5", "reason": "r", "operator": "x",
              "idempotency_key": f"adj-{uuid.uuid4()}"}
    assert "error" not in await linli.call(API.LEDGER_ADJUST, change, clerk)
    dispatcher = await linli.operator("disp-audit", "dispatcher", "beibei")
    assert code_of(await linli.call(API.LEDGER_ADJUST, change, dispatcher)) == "forbidden"

    assert code_of(await linli.call("linli.api.ledger.audit", {}, clerk)) == "forbidden"
    admin = await linli.login("admin", ADMIN_PASSWORD)
    trail = (await linli.call("linli.api.ledger.audit", {}, admin))["entries"]
    seen = [(e["actor"]["sub"], e["actor"]["role"], e["subject"], e["outcome"]) for e in trail]
    assert ("clerk-audit", "bank_clerk", API.LEDGER_ADJUST, "ok") in seen
    assert ("disp-audit", "dispatcher", API.LEDGER_ADJUST, "forbidden") in seen
    assert all(e["actor"]["token_id"] for e in trail if e["subject"] == API.LEDGER_ADJUST)
    made = (await linli.call("linli.api.identity.audit", {"subject": API.IDENTITY_OPERATOR_PUT}, admin))["entries"]
    assert {e["call"]["user"] for e in made} >= {"clerk-audit", "disp-audit"}
    assert not any("password" in e["call"] for e in made)


async def test_a_wrong_password_and_a_guessed_code_sign_nobody_in(linli: Linli) -> None:
    assert code_of(await linli.call(API.IDENTITY_LOGIN, {"user": "admin", "password": "wrong"})) == "unauthenticated"
    assert code_of(await linli.call(API.IDENTITY_LOGIN, {"user": "nobody", "password": "x"})) == "unauthenticated"
    volunteer = await linli.register("13900000008")
    await eventually(lambda: linli.identity.db["volunteers"].find_one({"_id": volunteer}))
    sent = await linli.call(API.IDENTITY_CODE_REQUEST, {"volunteer_id": volunteer})
    code = (await linli.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]}))["code"]
    assert code_of(await linli.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]})) == "not_found"  # sent once
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    attempt = {"volunteer_id": volunteer, "code_ref": sent["code_ref"]}
    for _ in range(5):
        assert code_of(await linli.call(API.IDENTITY_CODE_VERIFY, attempt | {"code": wrong})) == "unauthenticated"
    assert code_of(await linli.call(API.IDENTITY_CODE_VERIFY, attempt | {"code": code})) == "unauthenticated"


async def test_without_the_identity_service_a_token_cannot_be_checked_and_nothing_is_written(
    settings: BusSettings, bus: Bus
) -> None:
    ledger = build_ledger(ledger_settings(replace(settings, auth="required")))
    await ledger.start()
    try:
        key = auth.load_private(auth.new_private_pem())
        token, _ = auth.issue(key, auth.key_id(auth.public_pem(key)), "clerk", "bank_clerk", "beibei", 3600)
        before = await contents(ledger)
        reply = await Linli(ledger, ledger, ledger, ledger, bus).call(API.LEDGER_ADJUST, {
            "volunteer_id": "v-1", "points": "1", "reason": "r", "operator": "x",
            "idempotency_key": f"adj-{uuid.uuid4()}"}, token)
        assert code_of(reply) == "unavailable"
        assert await contents(ledger) == before
    finally:
        await ledger.stop()
