"""Hours that move (转移接续): one district signs a statement, another verifies it and carries the hours over."""

import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts import API
from linli.embedded import start_nats
from services.common.config import BusSettings
from services.common.runtime import Service
from services.ledger import signing
from tests.conftest import Bus
from tests.test_ledger_service import hours, ledger_settings, open_account, publish, started, verified

pytestmark = pytest.mark.service


@dataclass
class District:
    ledger: Service
    bus: Bus


@asynccontextmanager
async def two_districts(
    settings: BusSettings, bus: Bus, tmp_path: Path, configured_trust: bool
) -> AsyncIterator[tuple[District, District]]:
    """Qufu and Beibei: two district systems, each with its own bus and database. Whatever started is
    stopped again, also when a later step of the start fails."""
    async with AsyncExitStack() as stack:
        qufu = await started(ledger_settings(settings, district="qufu"))
        stack.push_async_callback(qufu.stop)
        public = (await bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"]
        other_nats = start_nats(tmp_path / "beibei")
        stack.callback(other_nats.stop)
        nc = await nats.connect(other_nats.url)
        stack.push_async_callback(nc.close)
        beibei_bus = Bus(nc)
        await beibei_bus.watch()
        beibei_settings = replace(settings, nats_url=other_nats.url, db_prefix=f"{settings.db_prefix}b")
        beibei = await started(ledger_settings(beibei_settings, district="beibei",
                                               trusted_keys={"qufu": public} if configured_trust else {}))
        stack.push_async_callback(beibei.stop)
        yield District(qufu, bus), District(beibei, beibei_bus)


@pytest.fixture
async def districts(settings: BusSettings, bus: Bus, tmp_path: Path) -> AsyncIterator[tuple[District, District]]:
    """Beibei trusts Qufu's key through LEDGER_TRUSTED_KEYS."""
    async with two_districts(settings, bus, tmp_path, configured_trust=True) as pair:
        yield pair


@pytest.fixture
async def strangers(settings: BusSettings, bus: Bus, tmp_path: Path) -> AsyncIterator[tuple[District, District]]:
    """Beibei trusts nobody until an operator says so."""
    async with two_districts(settings, bus, tmp_path, configured_trust=False) as pair:
        yield pair


async def served(district: District, volunteer_id: str, *amounts: str) -> None:
    await open_account(district.bus, district.ledger, volunteer_id)
    before = len(district.bus.of_type("points.earned", volunteer_id=volunteer_id))
    for amount in amounts:
        await publish(district.bus, hours(volunteer_id, amount, district="qufu"))
    await district.bus.wait_for("points.earned", volunteer_id=volunteer_id, count=before + len(amounts))


async def statement_from(district: District, volunteer_id: str) -> dict[str, Any]:
    return await district.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": volunteer_id})


async def import_(district: District, signed: dict[str, Any], volunteer_id: str) -> dict[str, Any]:
    return await district.bus.call(API.LEDGER_IMPORT_STATEMENT, {
        "statement": signed["statement"], "signature": signed["signature"], "volunteer_id": volunteer_id})


async def test_a_genuine_statement_carries_the_hours_over_once(districts: tuple[District, District]) -> None:
    qufu, beibei = districts
    await served(qufu, "v-qufu-7", "1.5", "2.25")
    await open_account(beibei.bus, beibei.ledger, "v-beibei-3")

    signed = await statement_from(qufu, "v-qufu-7")
    first = await import_(beibei, signed, "v-beibei-3")
    again = await import_(beibei, signed, "v-beibei-3")

    statement = signed["statement"]
    assert (statement["district"], statement["volunteer_id"], statement["hours"], statement["services"]) == (
        "qufu", "v-qufu-7", "3.75", 2)
    assert statement["head_seq"] == 2 and [(line["kind"], line["hours"]) for line in statement["summary"]] == [
        ("credit", "3.75")]
    assert signed["key_id"] == signing.key_id((await qufu.bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"])
    assert first == again
    assert (first["kind"], first["hours"], first["points"], first["volunteer_id"]) == ("import", "3.75", "0.00",
                                                                                      "v-beibei-3")
    assert first["cause"] == statement["statement_id"]
    view = await beibei.bus.call(API.LEDGER_BALANCE, {"volunteer_id": "v-beibei-3"})
    assert (view["hours"], view["points"]) == ("3.75", "0.00")  # points stay in Qufu's bank
    assert await verified(beibei.ledger) == []


async def test_a_later_statement_brings_only_the_new_hours_and_an_older_one_nothing(
    districts: tuple[District, District],
) -> None:
    qufu, beibei = districts
    await served(qufu, "v-mover", "2")
    await open_account(beibei.bus, beibei.ledger, "v-arrived")
    early = await statement_from(qufu, "v-mover")
    await served(qufu, "v-mover", "1.25")
    late = await statement_from(qufu, "v-mover")

    assert (await import_(beibei, late, "v-arrived"))["hours"] == "3.25"
    stale = await import_(beibei, early, "v-arrived")
    assert stale["error"]["code"] == "already_imported"

    await served(qufu, "v-mover", "0.5")
    latest = await statement_from(qufu, "v-mover")
    assert (await import_(beibei, latest, "v-arrived"))["hours"] == "0.50"
    view = await beibei.bus.call(API.LEDGER_BALANCE, {"volunteer_id": "v-arrived"})
    assert view["hours"] == "3.75"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.update(hours="300.00"),
        lambda s: s.update(volunteer_id="v-someone-else"),
        lambda s: s["summary"][0].update(hours="300.00"),
    ],
    ids=["hours", "volunteer", "summary"],
)
async def test_an_altered_statement_is_refused_and_changes_nothing(
    districts: tuple[District, District], tamper: Any
) -> None:
    qufu, beibei = districts
    await served(qufu, "v-honest", "1")
    await open_account(beibei.bus, beibei.ledger, "v-here")
    signed = await statement_from(qufu, "v-honest")
    altered = copy.deepcopy(signed)
    tamper(altered["statement"])

    refused = await import_(beibei, altered, "v-here")

    assert refused["error"]["code"] == "bad_signature" and "altered" in refused["error"]["message"]
    assert await beibei.ledger.db["entries"].count_documents({}) == 0
    assert await beibei.ledger.db["transfers"].count_documents({}) == 0


async def test_a_statement_from_an_unknown_district_or_for_an_unknown_volunteer_is_refused(
    districts: tuple[District, District],
) -> None:
    qufu, beibei = districts
    await served(qufu, "v-stranger", "1")
    await open_account(beibei.bus, beibei.ledger, "v-local")
    await publish(beibei.bus, hours("v-local", "1"))
    await beibei.bus.wait_for("points.earned", volunteer_id="v-local")
    own = await statement_from(beibei, "v-local")
    signed = await statement_from(qufu, "v-stranger")

    untrusted = await import_(beibei, own, "v-local")
    nobody = await import_(beibei, signed, f"v-{uuid.uuid4()}")
    garbage = await beibei.bus.call(API.LEDGER_IMPORT_STATEMENT, {"statement": {}, "signature": "x",
                                                                  "volunteer_id": "v-local"})

    assert untrusted["error"]["code"] == "untrusted_district" and untrusted["error"]["details"]["trusted"] == ["qufu"]
    assert nobody["error"]["code"] == "not_found"
    assert garbage["error"]["code"] == "untrusted_district"
    assert await beibei.ledger.db["entries"].count_documents({"kind": "import"}) == 0
    assert (await statement_from(qufu, "v-nobody"))["error"]["code"] == "not_found"


def trust(district: str, public_key: str, reason: str = "区间转移接续协议") -> dict[str, Any]:
    return {"district": district, "public_key": public_key, "operator": "李主任", "reason": reason}


async def test_an_operator_trusts_a_district_by_call_replaces_its_key_and_takes_it_back(
    strangers: tuple[District, District],
) -> None:
    qufu, beibei = strangers
    await served(qufu, "v-mover", "2")
    await open_account(beibei.bus, beibei.ledger, "v-arrived")
    signed = await statement_from(qufu, "v-mover")
    public = (await qufu.bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"]
    before = await import_(beibei, signed, "v-arrived")

    trusted = await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("qufu", public))
    again = await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("qufu", public, reason="再说一次"))
    listed = await beibei.bus.call(API.LEDGER_TRUST_LIST, {})
    imported = await import_(beibei, signed, "v-arrived")

    assert before["error"]["code"] == "untrusted_district" and before["error"]["details"]["trusted"] == []
    assert (trusted["district"], trusted["key_id"], trusted["source"], trusted["operator"]) == (
        "qufu", signing.key_id(public), "operator", "李主任")
    assert again == trusted  # the same key again changes nothing
    assert listed == {"keys": [trusted]}
    assert imported["hours"] == "2.00" and imported["kind"] == "import"

    # Qufu's key is replaced (say, it leaked): statements signed with the old one no longer pass.
    rotated = signing.public_pem(signing.load_private(signing.new_private_pem()))
    replaced = await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("qufu", rotated, reason="曲阜更换密钥"))
    await served(qufu, "v-mover", "1")
    later = await statement_from(qufu, "v-mover")
    assert replaced["key_id"] == signing.key_id(rotated)
    assert (await import_(beibei, later, "v-arrived"))["error"]["code"] == "bad_signature"

    removed = await beibei.bus.call(API.LEDGER_TRUST_REMOVE, {"district": "qufu", "operator": "李主任",
                                                              "reason": "协议到期"})
    assert removed["key_id"] == signing.key_id(rotated)
    assert (await beibei.bus.call(API.LEDGER_TRUST_LIST, {})) == {"keys": []}
    assert (await import_(beibei, later, "v-arrived"))["error"]["code"] == "untrusted_district"
    history = await beibei.ledger.db["trust_log"].find({}).sort("at", 1).to_list()
    assert [(h["action"], h["key_id"], h["operator"], h["reason"]) for h in history] == [
        ("trust", signing.key_id(public), "李主任", "区间转移接续协议"),
        ("replace", signing.key_id(rotated), "李主任", "曲阜更换密钥"),
        ("remove", signing.key_id(rotated), "李主任", "协议到期"),
    ]
    assert (await beibei.bus.call(API.LEDGER_BALANCE, {"volunteer_id": "v-arrived"}))["hours"] == "2.00"


async def test_a_bad_own_or_configured_key_is_refused_and_changes_nothing(
    districts: tuple[District, District],
) -> None:
    beibei = districts[1]
    own = (await beibei.bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    stranger = signing.public_pem(signing.load_private(signing.new_private_pem()))
    nobody = {"district": "wanzhou", "operator": "李主任", "reason": "没有这个"}

    replies = {
        "garbage": await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("wanzhou", "not a key")),
        "rsa": await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("wanzhou", rsa_key)),
        "own name": await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("beibei", stranger)),
        "own key": await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("wanzhou", own)),
        "configured": await beibei.bus.call(API.LEDGER_TRUST_PUT, trust("qufu", stranger)),
        "configured removal": await beibei.bus.call(API.LEDGER_TRUST_REMOVE, {**nobody, "district": "qufu"}),
        "unknown removal": await beibei.bus.call(API.LEDGER_TRUST_REMOVE, nobody),
        "no reason": await beibei.bus.call(API.LEDGER_TRUST_PUT, {**trust("wanzhou", stranger), "reason": ""}),
    }

    assert {name: reply["error"]["code"] for name, reply in replies.items()} == {
        "garbage": "invalid_key", "rsa": "invalid_key", "own name": "own_district", "own key": "own_district",
        "configured": "configured_in_environment", "configured removal": "configured_in_environment",
        "unknown removal": "not_found", "no reason": "invalid_request",
    }
    assert "Ed25519" in replies["rsa"]["error"]["message"]
    listed = await beibei.bus.call(API.LEDGER_TRUST_LIST, {})
    assert [(k["district"], k["source"]) for k in listed["keys"]] == [("qufu", "environment")]
    assert await beibei.ledger.db["trusted_keys"].count_documents({}) == 0
    assert await beibei.ledger.db["trust_log"].count_documents({}) == 0
