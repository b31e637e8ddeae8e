"""The public feed: a full run from a kiosk to a redemption, read as a district system reads it, gives away no
name, phone, address, free text, internal id or pseudonym, and every public event fits its JSON Schema."""

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from pymongo import AsyncMongoClient

from contracts import API, Envelope, new_event
from contracts.events import HoursLogged
from contracts.generate import SCHEMA_DIR
from contracts.public import PUBLIC_STREAM, PUBLIC_TYPES
from contracts.subjects import event_subject
from linli.client import caught_up
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.common.runtime import Service
from services.feed import handlers
from services.feed.app import build as build_feed
from services.feed.config import FeedSettings
from services.feed.store import FeedStore
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.ledger.app import build as build_ledger
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from tests.conftest import Bus, eventually, stored_messages
from tests.test_ledger_service import ledger_settings

RESIDENT = {"name": "王秀英", "phone": "138 0013 8000", "address": "泉外园小区3栋2单元401"}
VOLUNTEERS = [("袁文师傅", "13900139000"), ("李红梅", "13900139001")]
DESCRIPTION = "厨房水管漏水，地上全是水"
NOTE = "换了一个新的阀门，请袁阿姨放心"
COMMENT = "师傅很细心，谢谢小李"


@pytest.fixture
async def services(settings: BusSettings) -> AsyncIterator[dict[str, Service]]:
    running: dict[str, Service] = {}
    try:
        for name, service in (
            ("intake", build_intake(IntakeSettings(bus=settings, announce_after=0.5))),
            ("matcher", build_matcher(MatcherSettings(bus=settings, offer_ttl=600, sweep_interval=0.2, lease=5))),
            ("ledger", build_ledger(ledger_settings(settings))),
            ("feed", build_feed(FeedSettings(bus=settings))),
        ):
            await service.start()
            running[name] = service
        yield running
    finally:
        for service in reversed(running.values()):
            await service.stop()


async def public_events(bus: Bus) -> list[dict[str, Any]]:
    """What LINLI_PUBLIC kept, as a district system replaying it from the start would read it."""
    return [{"subject": msg.subject, "event": json.loads(msg.data or b"{}")}
            for msg in await stored_messages(bus.nc, PUBLIC_STREAM)]


def with_and_without_spaces(text: str) -> set[str]:
    return {text, text.replace(" ", ""), text.replace(" ", "-")}


@pytest.mark.service
@pytest.mark.timeout(180)
async def test_a_full_run_leaves_nothing_in_the_public_feed_that_leads_back_to_anyone(
        services: dict[str, Service], bus: Bus) -> None:
    volunteer_ids = [
        (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {"name": name, "phone": phone, "district": "beibei",
                                                       "grids": ["quanwai-01"], "skills": ["repair"]}))["volunteer_id"]
        for name, phone in VOLUNTEERS]
    await bus.wait_for("volunteer.registered", count=2)
    await caught_up(bus.nc, "matcher", "volunteer.registered")
    await caught_up(bus.nc, "ledger", "volunteer.registered")
    await bus.call(API.LEDGER_CATALOG_PUT, {"item_id": "goods.soap", "name": "洗衣皂", "kind": "goods", "points": "5",
                                            "stock": 10})

    start = datetime.now(UTC) + timedelta(hours=2)
    request_id = (await bus.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
        "service": "repair.plumbing", "description": DESCRIPTION, "channel": "kiosk", "resident": RESIDENT,
        "window_start": start.isoformat(), "window_end": (start + timedelta(hours=3)).isoformat(),
    }))["request_id"]
    offer = (await bus.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
    volunteer_id, assignment_id = offer["volunteer_id"], offer["assignment_id"]
    accepted = await bus.call(API.MATCHER_RESPOND, {"assignment_id": assignment_id, "volunteer_id": volunteer_id,
                                                    "accept": True})
    assert accepted["status"] == "accepted"
    done = await bus.call(API.MATCHER_COMPLETE, {"assignment_id": assignment_id, "volunteer_id": volunteer_id,
                                                 "hours": "2", "note": NOTE})
    assert done["status"] == "completed"
    await eventually(lambda: bus.call(API.INTAKE_STATUS, {"request_id": request_id}), timeout=15)
    await eventually(lambda: status_is(bus, request_id, "completed"), timeout=15)
    rated = await bus.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": COMMENT})
    assert rated["status"] == "rated"
    await eventually(lambda: has_points(bus, volunteer_id), timeout=15)
    redemption = await bus.call(API.LEDGER_REDEEM, {"volunteer_id": volunteer_id, "item_id": "goods.soap",
                                                    "idempotency_key": f"kiosk-redeem-{uuid.uuid4()}"})
    assert "redemption_id" in redemption, redemption

    wanted = set(PUBLIC_TYPES)
    published = await eventually(lambda: all_kinds(bus, wanted), timeout=20)

    internal = [e for e in bus.events if e["correlationid"] == request_id or e["subject"] in volunteer_ids]
    created = next(e for e in bus.events if e["type"] == "linli.request.created")
    secrets_of_the_run = (
        {RESIDENT["name"], RESIDENT["address"], DESCRIPTION, NOTE, COMMENT, "洗衣皂"}
        | {name for name, _ in VOLUNTEERS}
        | with_and_without_spaces(RESIDENT["phone"]) | {phone for _, phone in VOLUNTEERS}
        | {request_id, assignment_id, redemption["redemption_id"], created["data"]["resident_ref"],
           created["data"]["code"], offer["code"], *volunteer_ids}
        | {e["id"] for e in internal}
    )
    assert created["data"]["resident_ref"].startswith("p2-")
    text = json.dumps(published, ensure_ascii=False)
    leaked = sorted(s for s in secrets_of_the_run if s and s in text)
    assert leaked == []

    kinds = {p["event"]["type"].removeprefix("linli.pub.") for p in published}
    assert kinds == wanted
    for item in published:
        event = item["event"]
        kind = event["type"].removeprefix("linli.pub.")
        schema = json.loads((SCHEMA_DIR / "public" / f"{kind}.json").read_text(encoding="utf-8"))
        jsonschema.validate(event, schema)
        assert item["subject"] == f"linli.pub.{kind}.beibei"

    # One volunteer is one public reference throughout, so a district system can count their work.
    volunteer_refs = {p["event"]["data"]["volunteer"] for p in published if "volunteer" in p["event"]["data"]}
    assert len(volunteer_refs) == 1
    request_refs = {p["event"]["data"]["request"] for p in published if "request" in p["event"]["data"]}
    assert len(request_refs) == 1


async def status_is(bus: Bus, request_id: str, status: str) -> bool:
    return bool((await bus.call(API.INTAKE_STATUS, {"request_id": request_id})).get("status") == status)


async def has_points(bus: Bus, volunteer_id: str) -> bool:
    balance = await bus.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer_id})
    return float(balance.get("points", 0)) >= 5


async def all_kinds(bus: Bus, wanted: set[str]) -> list[dict[str, Any]] | None:
    published = await public_events(bus)
    kinds = {p["event"]["type"].removeprefix("linli.pub.") for p in published}
    return published if wanted <= kinds else None


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_a_redelivered_event_is_published_once_on_the_public_feed(
        settings: BusSettings, bus: Bus) -> None:
    feed = build_feed(FeedSettings(bus=settings))
    await feed.start()
    try:
        # Ids long enough that a public reference's hex digits cannot contain them by chance.
        fact = new_event(HoursLogged(volunteer_id="v-internal-volunteer", request_id="r-internal-request",
                                     hours="1.5", category="repair", resident_ref="p2-internal-resident"),
                         source="linli/matcher", district="beibei", subject="r-internal-request",
                         correlationid="r-internal-request")
        js = bus.nc.jetstream()
        for n in range(3):
            # The same fact three times, two of them past the internal stream's de-duplication.
            await js.publish(event_subject("hours.logged", "beibei"), envelope_json(fact),
                             headers={"Nats-Msg-Id": fact.id if n == 0 else f"{fact.id}-{n}"})
        await caught_up(bus.nc, "feed", "hours.logged")
        published = await eventually(lambda: public_events(bus), timeout=10)
    finally:
        await feed.stop()

    assert len(published) == 1
    data = published[0]["event"]["data"]
    assert data["volunteer"].startswith("vo-") and data["resident"].startswith("re-")
    printed = json.dumps(published)
    assert all(internal not in printed for internal in ("v-internal-volunteer", "r-internal-request", "p2-internal"))


class FailsOnce(FeedStore):
    """The feed's real store, whose first record command fails as a database gone for a moment would."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.attempts = 0

    async def record(self, keys: Sequence[str]) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise ConnectionError("the database went away for a moment")
        await super().record(keys)


def hours_fact(time: datetime | None = None) -> Envelope[HoursLogged]:
    # Ids long enough that a public reference's hex digits cannot contain them by chance.
    return new_event(HoursLogged(volunteer_id="v-internal-volunteer", request_id="r-internal-request",
                                 hours="1.5", category="repair", resident_ref="p2-internal-resident"),
                     source="linli/matcher", district="beibei", subject="r-internal-request",
                     correlationid="r-internal-request", time=time)


async def publish_internal(bus: Bus, fact: Envelope[HoursLogged], msg_id: str) -> None:
    await bus.nc.jetstream().publish(event_subject("hours.logged", "beibei"), envelope_json(fact),
                                     headers={"Nats-Msg-Id": msg_id})


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_an_event_redelivered_after_its_public_event_was_published_publishes_no_second_one(
        settings: BusSettings, bus: Bus) -> None:
    stores: list[FailsOnce] = []

    def failing_once(db: Any) -> FeedStore:
        stores.append(FailsOnce(db))
        return stores[0]

    feed = build_feed(FeedSettings(bus=settings, record_every=0.05), store=failing_once)
    await feed.start()
    try:
        fact = hours_fact()
        await publish_internal(bus, fact, fact.id)
        # The first delivery publishes, fails to record it and is not acknowledged; the second records it.
        await eventually(lambda: stores[0].attempts >= 2 or None, timeout=15)
        await caught_up(bus.nc, "feed", "hours.logged")
        published = await public_events(bus)
        recorded = await feed.db["processed"].find_one({"_id": f"feed-hours:{fact.id}"})
    finally:
        await feed.stop()

    assert len(published) == 1
    assert recorded is not None


@pytest.mark.service
@pytest.mark.timeout(120)
async def test_an_event_repeated_after_the_public_duplicate_window_is_not_published_again(
        settings: BusSettings, bus: Bus) -> None:
    window = 3.0
    short = dataclasses.replace(settings, duplicate_window=window)
    feed = build_feed(FeedSettings(bus=short, clock_margin=1.0, record_every=0.05))
    await feed.start()
    try:
        # Made long ago, and sent again by its service's outbox once LINLI_PUBLIC has forgotten the first copy.
        fact = hours_fact(datetime.now(UTC) - timedelta(hours=2))
        await publish_internal(bus, fact, fact.id)
        await caught_up(bus.nc, "feed", "hours.logged")
        first = await eventually(lambda: public_events(bus), timeout=10)
        await asyncio.sleep(window + 0.5)  # past both streams' duplicate windows
        await publish_internal(bus, fact, fact.id)
        await bus.wait_for("hours.logged", count=2)
        await caught_up(bus.nc, "feed", "hours.logged")
        published = await public_events(bus)
    finally:
        await feed.stop()

    assert len(first) == 1
    assert published == first


@pytest.mark.service
async def test_ids_stored_again_with_new_ones_are_no_error_and_the_new_ones_are_kept(settings: BusSettings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        store = FeedStore(client[settings.database("feed")])
        await store.record(["feed-hours:e-1", "feed-hours:e-2"])
        await store.record(["feed-hours:e-2", "feed-hours:e-3", "feed-hours:e-3"])  # a redelivery's, and a new one
        kept = [await store.was_published(f"feed-hours:e-{n}") for n in (1, 2, 3, 4)]
    finally:
        await client.close()

    assert kept == [True, True, True, False]


@pytest.mark.domain
def test_only_an_event_older_than_the_duplicate_window_less_the_clock_margin_needs_the_record() -> None:
    now = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    assert handlers.within_public_window(now - timedelta(seconds=539), now, window=600, margin=60)
    assert not handlers.within_public_window(now - timedelta(seconds=540), now, window=600, margin=60)
    assert not handlers.within_public_window(now - timedelta(days=1), now, window=600, margin=60)


@pytest.mark.domain
def test_a_public_reference_differs_under_another_feed_secret_and_never_equals_the_internal_id() -> None:
    one, other = handlers.Rekey(b"1" * 32), handlers.Rekey(b"2" * 32)
    assert one.ref("vo", "v-1") == one.ref("vo", "v-1") != other.ref("vo", "v-1")
    assert one.ref("vo", "v-1") != one.ref("rq", "v-1")
    assert one.optional("re", "") == ""
