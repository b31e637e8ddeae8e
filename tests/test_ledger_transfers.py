"""Hours that move (转移接续): one district signs a statement, another verifies it and carries the hours over."""

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nats
import pytest

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


@pytest.fixture
async def districts(settings: BusSettings, bus: Bus, tmp_path: Path) -> AsyncIterator[tuple[District, District]]:
    """Qufu and Beibei: two district systems, each with its own bus and database, and Beibei trusts Qufu."""
    qufu = await started(ledger_settings(settings, district="qufu"))
    public = (await bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"]
    other_nats = start_nats(tmp_path / "beibei")
    nc = await nats.connect(other_nats.url)
    beibei_bus = Bus(nc)
    await beibei_bus.watch()
    beibei_settings = replace(settings, nats_url=other_nats.url, db_prefix=f"{settings.db_prefix}b")
    beibei = await started(ledger_settings(beibei_settings, district="beibei", trusted_keys={"qufu": public}))
    try:
        yield District(qufu, bus), District(beibei, beibei_bus)
    finally:
        await beibei.stop()
        await qufu.stop()
        await nc.close()
        other_nats.stop()


async def served(district: District, volunteer_id: str, *amounts: str) -> None:
    await open_account(district.bus, district.ledger, volunteer_id)
    before = len(district.bus.of_type("points.earned", volunteer_id=volunteer_id))
    for amount in amounts:
        await publish(district.bus, hours(volunteer_id, amount, district="qufu"))
    await district.bus.wait_for("points.earned", volunteer_id=volunteer_id, count=before + len(amounts), timeout=15)


async def import_(district: District, signed: dict[str, Any], volunteer_id: str) -> dict[str, Any]:
    return await district.bus.call(API.LEDGER_IMPORT_STATEMENT, {
        "statement": signed["statement"], "signature": signed["signature"], "volunteer_id": volunteer_id})


async def test_a_genuine_statement_carries_the_hours_over_once(districts: tuple[District, District]) -> None:
    qufu, beibei = districts
    await served(qufu, "v-qufu-7", "1.5", "2.25")
    await open_account(beibei.bus, beibei.ledger, "v-beibei-3")

    signed = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-qufu-7"})
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
    early = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-mover"})
    await served(qufu, "v-mover", "1.25")
    late = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-mover"})

    assert (await import_(beibei, late, "v-arrived"))["hours"] == "3.25"
    stale = await import_(beibei, early, "v-arrived")
    assert stale["error"]["code"] == "already_imported"

    await served(qufu, "v-mover", "0.5")
    latest = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-mover"})
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
    signed = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-honest"})
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
    await beibei.bus.wait_for("points.earned", volunteer_id="v-local", timeout=15)
    own = await beibei.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-local"})
    signed = await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-stranger"})

    untrusted = await import_(beibei, own, "v-local")
    nobody = await import_(beibei, signed, f"v-{uuid.uuid4()}")
    garbage = await beibei.bus.call(API.LEDGER_IMPORT_STATEMENT, {"statement": {}, "signature": "x",
                                                                  "volunteer_id": "v-local"})

    assert untrusted["error"]["code"] == "untrusted_district" and untrusted["error"]["details"]["trusted"] == ["qufu"]
    assert nobody["error"]["code"] == "not_found"
    assert garbage["error"]["code"] == "untrusted_district"
    assert await beibei.ledger.db["entries"].count_documents({"kind": "import"}) == 0
    assert (await qufu.bus.call(API.LEDGER_STATEMENT, {"volunteer_id": "v-nobody"}))["error"]["code"] == "not_found"
