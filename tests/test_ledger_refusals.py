"""A refused call changes nothing: not the ledger's collections (the outbox and the processed events
included), and not the stream."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from contracts import API
from contracts.calls import Statement
from linli.client import caught_up
from services.common.runtime import Service
from services.ledger import signing
from tests.conftest import Bus, eventually
from tests.test_ledger_service import adjust, hours, ledger, open_account, publish, rated

pytestmark = pytest.mark.service
__all__ = ["ledger"]

RICE = {"item_id": "goods.rice-5kg", "name": "大米 5kg", "kind": "goods", "points": "30", "stock": 2}
COUNTY = signing.load_private(signing.new_private_pem())  # another district's key, trusted by an operator
STRANGER = signing.load_private(signing.new_private_pem())  # a district nobody trusts


def signed(key: Any, district: str, volunteer_id: str, amount: str, **changes: Any) -> dict[str, Any]:
    body = Statement(
        statement_id=f"st-{uuid.uuid4()}", district=district, volunteer_id=volunteer_id,
        issued_at=datetime(2026, 11, 2, 8, tzinfo=UTC), head_seq=3, head_hash="h" * 64, hours=Decimal(amount),
        confirmed_hours=Decimal(amount), points=Decimal("0"), services=3, summary=[],
    ).model_dump(mode="json") | changes
    return {"statement": body, "signature": signing.sign(key, body)}


async def snapshot(ledger: Service, bus: Bus) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Every document of every collection of the ledger but the sweep's mark (moved on by every repair sweep,
    whatever the calls), and the LINLI stream's last sequence."""
    names = sorted(n for n in await ledger.db.list_collection_names() if n != "sweeps")
    docs = {name: sorted(await ledger.db[name].find({}).to_list(), key=lambda d: str(d["_id"])) for name in names}
    return docs, (await bus.nc.jetstream().stream_info("LINLI")).state.last_seq


async def settled(ledger: Service, bus: Bus) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """A snapshot once the arranged work has all landed: the outbox sent, every consumer caught up."""
    for event_type in ("volunteer.registered", "hours.logged", "request.rated"):
        await caught_up(bus.nc, "ledger", event_type)
    await eventually(lambda: _outbox_empty(ledger))
    return await snapshot(ledger, bus)


async def _outbox_empty(ledger: Service) -> bool:
    return await ledger.db["outbox"].count_documents({}) == 0


async def test_every_refusal_leaves_the_ledger_and_the_stream_unchanged(ledger: Service, bus: Bus) -> None:
    # Arrange one of everything a refusal could touch: an account with points, a credited and a disputed
    # request, a stocked item, a trusted district and hours already carried over from it.
    await open_account(bus, ledger, "v-ref")
    assert "error" not in await adjust(bus, "v-ref", points="40")
    credited, disputed = hours("v-ref", "1"), hours("v-ref", "2")
    served_twice = hours("v-again", "1", request_id=disputed.data.request_id)  # sent out again after the rating
    for event in (credited, disputed, served_twice):
        await publish(bus, event)
    await bus.wait_for("points.earned", volunteer_id="v-ref", count=2)
    await bus.wait_for("points.earned", volunteer_id="v-again")
    await publish(bus, rated("v-ref", disputed.data.request_id, 1))
    await eventually(lambda: ledger.db["proofs"].find_one({"disputed": True}))
    assert "error" not in await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    assert "error" not in await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.old", "active": False})
    assert "error" not in await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.soap", "points": "1"})
    county_public = signing.public_pem(COUNTY)
    trust = {"district": "county", "public_key": county_public, "operator": "op-wang", "reason": "neighbours"}
    assert "error" not in await bus.call(API.LEDGER_TRUST_PUT, trust)
    carried = signed(COUNTY, "county", "c-7", "3")
    assert "error" not in await bus.call(API.LEDGER_IMPORT_STATEMENT, {**carried, "volunteer_id": "v-ref"})
    own_public = (await bus.call(API.LEDGER_PUBLIC_KEY, {}))["public_key"]
    altered = signed(COUNTY, "county", "c-8", "1")
    altered["statement"]["hours"] = "100.00"
    unreadable = {"statement": {"district": "county", "hours": "lots"},
                  "signature": signing.sign(COUNTY, {"district": "county", "hours": "lots"})}
    key = f"adj-{uuid.uuid4()}"
    assert "error" not in await adjust(bus, "v-ref", points="1", idempotency_key=key)

    def redeem(item_id: str = RICE["item_id"], quantity: int = 1, volunteer_id: str = "v-ref") -> dict[str, Any]:
        return {"volunteer_id": volunteer_id, "item_id": item_id, "quantity": quantity,
                "idempotency_key": f"redeem-{uuid.uuid4()}"}

    refusals: list[tuple[str, dict[str, Any], str]] = [
        (API.LEDGER_BALANCE, {"volunteer_id": "v-nobody"}, "not_found"),
        (API.LEDGER_STATEMENT, {"volunteer_id": "v-nobody"}, "not_found"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-nobody", "points": "1", "reason": "x", "operator": "op",
                             "idempotency_key": f"adj-{uuid.uuid4()}"}, "not_found"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-ref", "points": "-500", "reason": "x", "operator": "op",
                             "idempotency_key": f"adj-{uuid.uuid4()}"}, "insufficient_points"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-ref", "hours": "-500", "reason": "x", "operator": "op",
                             "idempotency_key": f"adj-{uuid.uuid4()}"}, "insufficient_hours"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-ref", "points": "2", "reason": "x", "operator": "op",
                             "idempotency_key": key}, "idempotency_key_reused"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-ref", "points": "1", "reason": "x", "operator": "op",
                             "request_id": "r-nowhere", "idempotency_key": f"adj-{uuid.uuid4()}"}, "not_found"),
        (API.LEDGER_ADJUST, {"volunteer_id": "v-ref", "points": "1", "reason": "x", "operator": "op"},
         "invalid_request"),
        (API.LEDGER_CONFIRM, {"request_id": "r-nowhere", "operator": "op"}, "not_found"),
        (API.LEDGER_CONFIRM, {"request_id": credited.data.request_id, "volunteer_id": "v-other", "operator": "op"},
         "not_found"),
        (API.LEDGER_CONFIRM, {"request_id": disputed.data.request_id, "operator": "op"}, "volunteer_required"),
        (API.LEDGER_CATALOG_PUT, {**RICE, "stock": 10**30}, "invalid_request"),
        (API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.new", "stock": 10**30}, "invalid_request"),
        (API.LEDGER_CATALOG_PUT, {**RICE, "points": "0"}, "invalid_request"),
        (API.LEDGER_REDEEM, redeem("goods.soap", quantity=3), "out_of_stock"),
        (API.LEDGER_REDEEM, redeem(quantity=3), "insufficient_points"),
        (API.LEDGER_REDEEM, redeem("goods.old"), "item_unavailable"),
        (API.LEDGER_REDEEM, redeem("goods.nothing"), "not_found"),
        (API.LEDGER_REDEEM, redeem(volunteer_id="v-nobody"), "not_found"),
        (API.LEDGER_IMPORT_STATEMENT, {**signed(STRANGER, "faraway", "f-1", "2"), "volunteer_id": "v-ref"},
         "untrusted_district"),
        (API.LEDGER_IMPORT_STATEMENT, {**altered, "volunteer_id": "v-ref"}, "bad_signature"),
        (API.LEDGER_IMPORT_STATEMENT, {**unreadable, "volunteer_id": "v-ref"}, "invalid_statement"),
        (API.LEDGER_IMPORT_STATEMENT, {**signed(COUNTY, "county", "c-9", "1"), "volunteer_id": "v-nobody"},
         "not_found"),
        (API.LEDGER_IMPORT_STATEMENT, {**signed(COUNTY, "county", "c-7", "2"), "volunteer_id": "v-ref"},
         "already_imported"),
        (API.LEDGER_IMPORT_STATEMENT, {**signed(COUNTY, "county", "c-new", "0"), "volunteer_id": "v-ref"},
         "already_imported"),
        (API.LEDGER_TRUST_PUT, {**trust, "public_key": "not a key"}, "invalid_key"),
        (API.LEDGER_TRUST_PUT, {**trust, "public_key": own_public}, "own_district"),
        (API.LEDGER_TRUST_PUT, {**trust, "district": "beibei"}, "own_district"),
        (API.LEDGER_TRUST_REMOVE, {"district": "faraway", "operator": "op", "reason": "x"}, "not_found"),
    ]
    before = await settled(ledger, bus)
    for subject, payload, code in refusals:
        reply = await bus.call(subject, payload)
        assert reply.get("error", {}).get("code") == code, (subject, payload, reply)
        assert await snapshot(ledger, bus) == before, f"{subject} refused with {code} changed the ledger"


async def test_a_huge_stock_is_refused_before_the_item_is_stored(ledger: Service, bus: Bus) -> None:
    refused = await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "stock": 10**30})

    assert refused["error"]["code"] == "invalid_request"
    assert [d["field"] for d in refused["error"]["details"]] == ["stock"]
    assert await ledger.db["rewards"].count_documents({}) == 0
    assert await ledger.db["stock_moves"].count_documents({}) == 0
    listed = await bus.call(API.LEDGER_CATALOG_LIST, {"include_inactive": True})
    assert listed["items"] == []
    most = await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "stock": 1_000_000})
    assert most["stock"] == 1_000_000


async def test_a_redemption_refused_for_stock_or_points_stores_no_redemption(ledger: Service, bus: Bus) -> None:
    await open_account(bus, ledger, "v-shop")
    assert "error" not in await adjust(bus, "v-shop", points="100")
    await bus.call(API.LEDGER_CATALOG_PUT, RICE)
    await bus.call(API.LEDGER_CATALOG_PUT, {**RICE, "item_id": "goods.tv", "points": "200"})
    wanted = [(RICE["item_id"], 3), ("goods.tv", 1)]
    calls = [{"volunteer_id": "v-shop", "item_id": item_id, "quantity": quantity,
              "idempotency_key": f"shop-{item_id}-0001"} for item_id, quantity in wanted]

    replies = [await bus.call(API.LEDGER_REDEEM, call) for call in calls]

    assert [r["error"]["code"] for r in replies] == ["out_of_stock", "insufficient_points"]
    assert replies[1]["error"]["details"]["balance_points"] == "100.00"
    assert await ledger.db["redemptions"].count_documents({}) == 0
    assert await ledger.db["entries"].count_documents({"kind": "spend"}) == 0
    # The same key may be used again once the points are there: a refusal was not a use.
    assert "error" not in await adjust(bus, "v-shop", points="100")
    done = await bus.call(API.LEDGER_REDEEM, calls[1])
    assert (done["points"], done["balance_points"]) == ("200.00", "0.00")
