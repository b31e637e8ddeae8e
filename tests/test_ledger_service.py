import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from pymongo import monitoring

from contracts import API, Envelope, event_subject, new_event
from contracts.envelope import derived_id
from contracts.events import HoursLogged, RequestRated, VolunteerRegistered
from linli.client import caught_up
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.common.runtime import Service
from services.ledger import handlers
from services.ledger.app import build
from services.ledger.chain import link
from services.ledger.config import LedgerSettings
from services.ledger.rules import Bonus, Rules, price
from services.ledger.verify import run as verify
from tests.conftest import Bus, eventually, stored_events

pytestmark = pytest.mark.service

RULES = Rules(
    version="beibei-test-1",
    points_per_hour=Decimal("10"),
    categories={"elderly": Decimal("12")},
    bonuses={"urgent": Bonus(per_hour=Decimal("2")), "five_star": Bonus(points=Decimal("5"))},
    holidays=frozenset({date(2026, 10, 1)}),
)
# Noon on a working day in Shanghai: no night or holiday bonus, whenever the tests run.
NOON = datetime(2026, 5, 6, 12, 0, tzinfo=timezone(timedelta(hours=8)))


def ledger_settings(bus: BusSettings, **overrides: Any) -> LedgerSettings:
    return replace(
        LedgerSettings(bus=bus, rules=RULES, confirm_deadline=3600, sweep_interval=0.2, redeem_timeout=1.0,
                       district="beibei", signing_key_path="", trusted_keys={}),
        **overrides,
    )


async def started(settings: LedgerSettings) -> Service:
    service = build(settings)
    await service.start()
    return service


@pytest.fixture
async def ledger(settings: BusSettings) -> AsyncIterator[Service]:
    service = await started(ledger_settings(settings))
    yield service
    await service.stop()


def event(data: BaseModel, about: str, district: str = "beibei") -> Envelope[Any]:
    return new_event(data, source="linli/test", district=district, subject=about, correlationid=about)


def hours(volunteer_id: str, amount: str, category: str = "repair", urgency: str = "routine",
          request_id: str | None = None, district: str = "beibei") -> Envelope[Any]:
    request_id = request_id or f"r-{uuid.uuid4()}"
    return event(
        HoursLogged(volunteer_id=volunteer_id, request_id=request_id, assignment_id=f"a-{uuid.uuid4()}",
                    hours=Decimal(amount), category=category, urgency=urgency,  # type: ignore[arg-type]
                    completed_at=NOON),
        request_id, district,
    )


def rated(volunteer_id: str, request_id: str, stars: int, done: bool = True) -> Envelope[Any]:
    return event(RequestRated(request_id=request_id, volunteer_id=volunteer_id, stars=stars, done=done), request_id)


def registered(volunteer_id: str, team: str = "", district: str = "beibei") -> Envelope[Any]:
    return event(VolunteerRegistered(volunteer_id=volunteer_id, district=district, grids=["g1"], skills=["repair"],
                                     capacity=1, team=team), volunteer_id, district)


async def publish(bus: Bus, envelope: Envelope[Any], msg_id: str | None = None) -> None:
    # A msg id other than the event id slips past JetStream's de-duplication: the consumer has to catch it.
    await bus.nc.jetstream().publish(
        event_subject(envelope.short_type, envelope.district), envelope_json(envelope),
        headers={"Nats-Msg-Id": msg_id or envelope.id},
    )


async def balance(bus: Bus, volunteer_id: str) -> dict[str, Any]:
    return await bus.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer_id})


async def open_account(bus: Bus, ledger: Service, volunteer_id: str, team: str = "") -> None:
    await publish(bus, registered(volunteer_id, team))
    await eventually(lambda: ledger.db["accounts"].find_one({"_id": volunteer_id, "team": team}), timeout=15)


async def adjust(bus: Bus, volunteer_id: str, points: str = "0", hours: str = "0", **more: Any) -> dict[str, Any]:
    return await bus.call(API.LEDGER_ADJUST, {
        "volunteer_id": volunteer_id, "points": points, "hours": hours, "reason": "opening balance",
        "operator": "op-zhang", "idempotency_key": f"adj-{uuid.uuid4()}", **more,
    })


async def kinds(ledger: Service, volunteer_id: str) -> list[tuple[int, str, int, int]]:
    entries = await ledger.db["entries"].find({"volunteer_id": volunteer_id}).sort("seq", 1).to_list()
    return [(e["seq"], e["kind"], e["hours_cents"], e["points_cents"]) for e in entries]


async def verified(ledger: Service) -> list[str]:
    report = await verify(ledger.settings.mongo_url, ledger.db.name)
    return [str(problem) for problem in report.problems]


async def test_the_same_event_delivered_twice_is_credited_once(ledger: Service, bus: Bus) -> None:
    logged = hours("v-once", "1.25")
    await publish(bus, logged, "copy-1")
    await publish(bus, logged, "copy-2")

    await bus.wait_for("points.earned", volunteer_id="v-once")
    await caught_up(bus.nc, "ledger", "hours.logged")
    assert await balance(bus, "v-once") == {
        "volunteer_id": "v-once", "hours": "1.25", "points": "12.50", "services": 1, "ratings": 0,
        "average_stars": None,
    }
    kept = await stored_events(bus.nc, "points.earned")
    assert len(kept) == 1
    earned = kept[0]
    assert earned["id"] == derived_id("points.earned", derived_id("ledger.entry", logged.id))
    assert (earned["causationid"], earned["correlationid"]) == (logged.id, logged.data.request_id)
    assert earned["data"]["points"] == "12.50" and earned["data"]["balance_points"] == "12.50"
    assert earned["data"]["rule_version"] == "beibei-test-1"
    assert await kinds(ledger, "v-once") == [(1, "credit", 125, 1250)]


async def test_a_repeated_hours_event_is_announced_once_even_to_a_plain_subscriber(
    ledger: Service, bus: Bus
) -> None:
    heard: list[bytes] = []

    async def hear(msg: Any) -> None:
        heard.append(msg.data)

    subscription = await bus.nc.subscribe(event_subject("points.earned", "beibei"), cb=hear)
    logged = hours("v-plain", "1")
    await publish(bus, logged, "first")
    await bus.wait_for("points.earned", volunteer_id="v-plain")
    await caught_up(bus.nc, "ledger", "hours.logged")
    await publish(bus, logged, "again")  # past JetStream's de-duplication: only the ledger can catch it
    await caught_up(bus.nc, "ledger", "hours.logged")
    await bus.nc.flush()
    await subscription.unsubscribe()

    assert len(heard) == 1
    assert await kinds(ledger, "v-plain") == [(1, "credit", 100, 1000)]
    proof = await ledger.db["proofs"].find_one({"_id": f"{logged.data.request_id}/v-plain"})
    assert proof is not None and proof["announced"] == json.loads(heard[0])["id"]
    assert await ledger.db["processed"].count_documents({}) == 0  # the proof says it, not an inbox


async def first_entry_stored(ledger: Service, logged: Envelope[Any]) -> dict[str, Any]:
    """The credit a ledger appends for the volunteer's first `hours.logged`, stored and nothing else done."""
    data = logged.data
    pricing = price(RULES, data.hours, data.category, data.urgency, NOON)
    [credit] = handlers.credit_entries(logged, pricing, RULES, {}, time.time())
    stored = link(credit, None)
    await ledger.db["entries"].insert_one(stored)
    return stored


async def test_hours_an_earlier_ledger_recorded_in_its_inbox_are_not_announced_again(
    ledger: Service, bus: Bus
) -> None:
    logged = hours("v-inbox", "2")
    # What a ledger that kept an inbox left: the entry, its proof without the announcement, the inbox record.
    stored = await first_entry_stored(ledger, logged)
    await ledger.db["proofs"].insert_one({"_id": f"{logged.data.request_id}/v-inbox", **handlers.proof_facts(stored)})
    await ledger.db["processed"].insert_one({"_id": f"ledger-hours:{logged.id}", "at": time.time()})

    await publish(bus, logged)
    await caught_up(bus.nc, "ledger", "hours.logged")

    assert await stored_events(bus.nc, "points.earned") == []
    assert await kinds(ledger, "v-inbox") == [(1, "credit", 200, 2000)]


async def test_a_rating_of_hours_whose_proof_predates_the_copied_facts_reads_them_from_the_credit(
    ledger: Service, bus: Bus
) -> None:
    logged = hours("v-older", "2", "elderly")
    stored = await first_entry_stored(ledger, logged)
    # A proof as an earlier ledger wrote it: the credit's id and hours, not its category.
    facts = {k: v for k, v in handlers.proof_facts(stored).items() if k not in ("category", "service", "grid")}
    request_id = logged.data.request_id
    await ledger.db["proofs"].insert_one({"_id": f"{request_id}/v-older", "request_id": request_id, "confirmed": False,
                                          "disputed": False, "settled": False, **facts})

    await publish(bus, rated("v-older", logged.data.request_id, 4))
    await caught_up(bus.nc, "ledger", "request.rated")

    confirm = await eventually(lambda: ledger.db["entries"].find_one({"volunteer_id": "v-older", "kind": "confirm"}))
    assert (confirm["seq"], confirm["category"]) == (2, "elderly")
    assert await verified(ledger) == []


async def test_duplicated_and_reordered_events_count_exactly_once(ledger: Service, bus: Bus) -> None:
    await open_account(bus, ledger, "v-order", team="红马甲")
    logged = hours("v-order", "2", "elderly", urgency="urgent")
    rating = rated("v-order", logged.data.request_id, 5)
    # The rating overtakes the hours, and both come twice.
    await publish(bus, rating, "r-1")
    await caught_up(bus.nc, "ledger", "request.rated")
    await publish(bus, logged, "h-1")
    await publish(bus, rating, "r-2")
    await publish(bus, logged, "h-2")

    [earned] = await bus.wait_for("points.earned", volunteer_id="v-order")
    await caught_up(bus.nc, "ledger", "hours.logged")
    await caught_up(bus.nc, "ledger", "request.rated")
    # the confirmation and the 5-star bonus, then 24 points for 2 h of elderly care and 4 for urgency
    assert await kinds(ledger, "v-order") == [(1, "confirm", 0, 0), (2, "bonus", 0, 500), (3, "credit", 200, 2400),
                                              (4, "bonus", 0, 400)]
    assert (earned["data"]["points"], earned["data"]["bonus_points"], earned["data"]["balance_points"]) == (
        "24.00", "4.00", "33.00")
    view = await balance(bus, "v-order")
    assert (view["hours"], view["points"], view["services"], view["ratings"]) == ("2.00", "33.00", 1, 1)
    credit = await ledger.db["entries"].find_one({"kind": "credit", "volunteer_id": "v-order"})
    assert credit is not None and (credit["team"], credit["rule_version"]) == ("红马甲", "beibei-test-1")
    assert (await bus.call(API.LEDGER_REVIEW, {}))["items"] == []
    assert await verified(ledger) == []


async def test_an_entry_appended_before_a_crash_is_not_credited_again_but_is_announced(
    ledger: Service, bus: Bus
) -> None:
    logged = hours("v-crash", "2")
    # What a process killed right after the append leaves: no projection, no inbox record, nothing published.
    await first_entry_stored(ledger, logged)

    await publish(bus, logged)

    [earned] = await bus.wait_for("points.earned", volunteer_id="v-crash")
    assert earned["data"]["balance_points"] == "20.00"
    assert (await balance(bus, "v-crash"))["points"] == "20.00"
    assert await kinds(ledger, "v-crash") == [(1, "credit", 200, 2000)]
    assert await verified(ledger) == []


async def test_the_sweep_rolls_a_projection_left_behind_forward(ledger: Service, bus: Bus) -> None:
    assert (await adjust(bus, "v-sweep", points="5"))["error"]["code"] == "not_found"  # no account yet
    await open_account(bus, ledger, "v-sweep")
    await adjust(bus, "v-sweep", points="5")
    head = await ledger.db["entries"].find_one({"volunteer_id": "v-sweep", "seq": 1})
    assert head is not None
    # What a ledger killed between the append and the projection leaves behind.
    left_behind = {**head, "_id": "e-left-behind", "hours_cents": 150, "points_cents": 0}
    await ledger.db["entries"].insert_one(link(left_behind, head))

    account = await eventually(lambda: ledger.db["accounts"].find_one({"_id": "v-sweep", "seq": 2}), timeout=15)
    assert (account["hours_cents"], account["points_cents"]) == (150, 500)
    assert await verified(ledger) == []


async def test_balance_sums_several_entries_exactly(ledger: Service, bus: Bus) -> None:
    for amount, category in [("1.25", "repair"), ("2.5", "elderly"), ("0.1", "repair"), ("0.2", "repair")]:
        await publish(bus, hours("v-sum", amount, category))

    found = await bus.wait_for("points.earned", volunteer_id="v-sum", count=4)
    # Each event tells the balance after its own entry, in whatever order the entries were appended.
    entries = await ledger.db["entries"].find({"volunteer_id": "v-sum"}).to_list()
    assert {e["data"]["request_id"]: e["data"]["balance_points"] for e in found} == {
        e["request_id"]: str(handlers.from_cents(e["balance_points_cents"])) for e in entries}
    assert max(Decimal(e["data"]["balance_points"]) for e in found) == Decimal("45.50")
    assert await balance(bus, "v-sum") == {
        "volunteer_id": "v-sum", "hours": "4.05", "points": "45.50", "services": 4, "ratings": 0,
        "average_stars": None,
    }


async def test_two_ledgers_appending_to_one_account_at_once_keep_one_chain(
    ledger: Service, settings: BusSettings, bus: Bus
) -> None:
    second = await started(ledger_settings(settings))
    try:
        await open_account(bus, ledger, "v-busy")
        replies = await asyncio.gather(*(adjust(bus, "v-busy", points="1.01", hours="0.5") for _ in range(30)))
        assert all("error" not in r for r in replies), replies
        assert sorted(r["seq"] for r in replies) == list(range(1, 31))
        assert await balance(bus, "v-busy") == {
            "volunteer_id": "v-busy", "hours": "15.00", "points": "30.30", "services": 0, "ratings": 0,
            "average_stars": None,
        }
        assert await verified(ledger) == []
    finally:
        await second.stop()


async def test_verify_names_an_entry_edited_in_the_database(ledger: Service, bus: Bus) -> None:
    for amount in ("1", "1.5", "2"):
        await publish(bus, hours("v-tamper", amount))
    await bus.wait_for("points.earned", volunteer_id="v-tamper", count=3)
    assert await verified(ledger) == []
    target = await ledger.db["entries"].find_one({"volunteer_id": "v-tamper", "seq": 2})

    await ledger.db["entries"].update_one({"_id": target["_id"]}, {"$set": {"hours_cents": 1500}})

    problems = await verified(ledger)
    assert any(target["_id"] in p and "edited" in p for p in problems), problems
    cli = subprocess.run(
        [sys.executable, "-m", "services.ledger", "verify", "--mongo-url", ledger.settings.mongo_url,
         "--db", ledger.db.name],
        capture_output=True, text=True, timeout=60,
    )
    assert cli.returncode == 1, cli.stderr
    assert "MISMATCH" in cli.stdout and target["_id"] in cli.stdout


async def test_an_adjustment_needs_a_reason_and_is_its_own_entry(ledger: Service, bus: Bus) -> None:
    await open_account(bus, ledger, "v-adj")
    call = {"volunteer_id": "v-adj", "hours": "1.5", "points": "15", "operator": "op-zhang",
            "idempotency_key": "adj-000001"}
    for reason in ({}, {"reason": ""}, {"reason": "   "}):
        refused = await bus.call(API.LEDGER_ADJUST, {**call, **reason})
        assert refused["error"]["code"] == "invalid_request"
        assert "reason" in [d["field"] for d in refused["error"]["details"]]
    assert await ledger.db["entries"].count_documents({"volunteer_id": "v-adj"}) == 0

    made = await bus.call(API.LEDGER_ADJUST, {**call, "reason": "paper record from March"})
    again = await bus.call(API.LEDGER_ADJUST, {**call, "reason": "paper record from March"})
    reused = await bus.call(API.LEDGER_ADJUST, {**call, "points": "99", "reason": "paper record from March"})
    too_much = await adjust(bus, "v-adj", points="-15.01")
    assert made == again
    assert (made["kind"], made["hours"], made["points"], made["seq"]) == ("adjust", "1.50", "15.00", 1)
    assert made["reason"] == "paper record from March" and made["cause"] == "adj-000001"
    assert reused["error"]["code"] == "idempotency_key_reused"
    assert too_much["error"]["code"] == "insufficient_points"
    assert (await bus.call(API.LEDGER_ADJUST, {**call, "points": "0", "hours": "0", "reason": "x"}))["error"][
        "code"] == "invalid_request"
    assert await kinds(ledger, "v-adj") == [(1, "adjust", 150, 1500)]
    stored = await ledger.db["entries"].find_one({"_id": made["entry_id"]})
    assert stored is not None and stored["operator"] == "op-zhang"


async def test_unconfirmed_hours_past_the_deadline_wait_for_an_operator(settings: BusSettings, bus: Bus) -> None:
    ledger = await started(ledger_settings(settings, confirm_deadline=0.5))
    try:
        logged, other = hours("v-late", "1"), hours("v-late", "2")
        await publish(bus, logged)
        await publish(bus, other)
        await bus.wait_for("points.earned", volunteer_id="v-late", count=2)
        assert (await bus.call(API.LEDGER_REVIEW, {}))["items"] == []

        queue = await eventually(lambda: _review(bus, 2), timeout=15)
        assert {(i["request_id"], i["state"], i["hours"]) for i in queue} == {
            (logged.data.request_id, "overdue", "1.00"), (other.data.request_id, "overdue", "2.00")}

        confirmed = await bus.call(API.LEDGER_CONFIRM, {"request_id": logged.data.request_id, "operator": "op-li",
                                                        "reason": "phoned the resident"})
        again = await bus.call(API.LEDGER_CONFIRM, {"request_id": logged.data.request_id, "operator": "op-li"})
        unknown = await bus.call(API.LEDGER_CONFIRM, {"request_id": "r-nobody", "operator": "op-li"})
        assert confirmed == again and (confirmed["kind"], confirmed["hours"], confirmed["points"]) == (
            "confirm", "0.00", "0.00")
        assert unknown["error"]["code"] == "not_found"
        assert [i["request_id"] for i in (await bus.call(API.LEDGER_REVIEW, {}))["items"]] == [other.data.request_id]
    finally:
        await ledger.stop()


async def _review(bus: Bus, count: int) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = (await bus.call(API.LEDGER_REVIEW, {}))["items"]
    return items if len(items) == count else None


async def test_rules_changed_under_the_same_version_stop_the_ledger(ledger: Service, settings: BusSettings) -> None:
    changed = ledger_settings(settings, rules=replace(RULES, points_per_hour=Decimal("11")))
    with pytest.raises(ValueError, match="was used before with other content"):
        await started(changed)
    renamed = await started(ledger_settings(settings, rules=replace(RULES, version="beibei-test-2")))
    await renamed.stop()


async def test_a_malformed_event_does_not_block_the_one_behind_it(ledger: Service, bus: Bus) -> None:
    subject = event_subject("hours.logged", "beibei")
    await bus.nc.jetstream().publish(subject, b"{not json", headers={"Nats-Msg-Id": "garbage"})
    too_long = json.loads(envelope_json(hours("v-bad", "1")))
    too_long["data"]["hours"] = "30"
    await bus.nc.jetstream().publish(subject, json.dumps(too_long).encode(), headers={"Nats-Msg-Id": "too-long"})
    await publish(bus, hours("v-good", "1.5"))

    await bus.wait_for("points.earned", volunteer_id="v-good")
    assert (await balance(bus, "v-good"))["points"] == "15.00"
    assert (await balance(bus, "v-bad"))["error"]["code"] == "not_found"  # the ledger never took it in


async def test_ratings_are_counted_once_per_request_and_averaged(ledger: Service, bus: Bus) -> None:
    ratings = [rated("v-stars", f"r-{n}", s) for n, s in enumerate([5, 4, 4])]
    for rating in ratings:
        await publish(bus, rating)
    await publish(bus, ratings[0], "copy")
    await publish(bus, rated("v-other", "r-9", 1))

    await caught_up(bus.nc, "ledger", "request.rated")
    view = await balance(bus, "v-stars")
    assert (view["ratings"], view["average_stars"]) == (3, "4.33")
    assert (view["hours"], view["points"], view["services"]) == ("0.00", "5.00", 0)  # the one 5-star bonus
    rating = await ledger.db["ratings"].find_one({"request_id": "r-0"})
    assert rating is not None and (rating["stars"], rating["done"], rating["volunteer_id"]) == (5, True, "v-stars")


async def test_a_registered_volunteer_gets_one_account_with_their_team(ledger: Service, bus: Bus) -> None:
    await publish(bus, registered("v-new", team="青年志愿者服务队"))
    await publish(bus, registered("v-new", team="青年志愿者服务队"), "copy")

    await caught_up(bus.nc, "ledger", "volunteer.registered")
    accounts = await ledger.db["accounts"].find({}).to_list()
    assert [(a["_id"], a["district"], a["team"], a["seq"]) for a in accounts] == [
        ("v-new", "beibei", "青年志愿者服务队", 0)]


async def test_an_unknown_volunteer_has_no_balance_not_a_zero_one(ledger: Service, bus: Bus) -> None:
    for subject in (API.LEDGER_BALANCE, API.LEDGER_STATEMENT):
        reply = await bus.call(subject, {"volunteer_id": "v-nobody"})
        assert reply["error"]["code"] == "not_found" and reply["error"]["details"] == {"volunteer_id": "v-nobody"}
    for refused in (await adjust(bus, "v-nobody", points="5"), await bus.call(API.LEDGER_REDEEM, {
            "volunteer_id": "v-nobody", "item_id": "goods.any", "quantity": 1, "idempotency_key": "nobody-0001"})):
        assert refused["error"]["code"] == "not_found"
    assert await ledger.db["accounts"].count_documents({}) == 0

    await open_account(bus, ledger, "v-newcomer")
    assert await balance(bus, "v-newcomer") == {
        "volunteer_id": "v-newcomer", "hours": "0.00", "points": "0.00", "services": 0, "ratings": 0,
        "average_stars": None,
    }


@pytest.mark.parametrize("payload", [{}, {"volunteer_id": "  "}, b"\xff not json"])
async def test_a_bad_balance_call_gets_a_clear_error(
    ledger: Service, bus: Bus, payload: dict[str, Any] | bytes
) -> None:
    reply = await bus.call(API.LEDGER_BALANCE, payload)
    assert reply["error"]["code"] == "invalid_request" and reply["error"]["message"]


async def test_the_cli_verifies_the_books_and_makes_the_operators_calls(
    ledger: Service, bus: Bus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from linli import ledger_cli

    parser = argparse.ArgumentParser(prog="linli")
    ledger_cli.add_commands(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("NATS_URL", ledger.settings.nats_url)
    await open_account(bus, ledger, "v-cli")

    adjusted = parser.parse_args(["ledger", "adjust", "v-cli", "--points", "12.5", "--reason", "paper records",
                                  "--operator", "op-cli"])
    no_reason = parser.parse_args(["ledger", "adjust", "v-cli", "--points", "1", "--reason", "", "--operator", "o"])
    checked = parser.parse_args(["ledger", "verify", "--mongo-url", ledger.settings.mongo_url, "--db", ledger.db.name])
    assert await asyncio.to_thread(ledger_cli.run, adjusted) == 0
    assert json.loads(capsys.readouterr().out)["balance_points"] == "12.50"
    assert await asyncio.to_thread(ledger_cli.run, no_reason) == 1
    assert "invalid_request" in capsys.readouterr().err
    assert await asyncio.to_thread(ledger_cli.run, checked) == 0
    assert "1 entries, 0 stock item(s): OK" in capsys.readouterr().out


async def test_the_balance_of_an_unknown_volunteer_exits_non_zero_with_one_line(
    ledger: Service, bus: Bus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from linli import cli

    monkeypatch.setenv("NATS_URL", ledger.settings.nats_url)
    await open_account(bus, ledger, "v-known")

    assert await asyncio.to_thread(cli.main, ["balance", "v-known"]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == "0.00"
    assert await asyncio.to_thread(cli.main, ["balance", "v-unheard-of-anywhere-in-this-district"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "not_found" in out and "v-unheard-of-anywhere-in-this-district" in out


class Commands(monitoring.CommandListener):
    """What a MongoDB client sends, as (command, collection) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def started(self, event: Any) -> None:
        self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


async def test_a_loop_s_hours_and_rating_take_eight_commands_with_no_read_of_the_chain(
    ledger: Service, settings: BusSettings,
) -> None:
    # The running ledger only made the stream the announcement goes to.
    from faststream.nats import NatsBroker
    from pymongo import AsyncMongoClient

    from services.common.bus import Outbox
    from services.ledger.bank import Bank
    from services.ledger.store import LedgerStore

    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, event_listeners=[commands])
    db = client[settings.database("ledger")]
    broker = NatsBroker(settings.nats_url)
    await broker.connect()
    bank = Bank(LedgerStore(db), Outbox(db, broker), ledger_settings(settings))
    try:
        await bank.start()
        for _ in range(30):
            await bank.earn(hours("v-day300", "1"))
        commands.sent.clear()

        logged = hours("v-day300", "1.5")
        await bank.earn(logged)
        await bank.rated(rated("v-day300", logged.data.request_id, 4))

        # hours: append, project, outbox, proof (announced); rating: rating, proof (confirmed), append, project
        assert sorted(commands.sent) == sorted([
            ("insert", "entries"), ("findAndModify", "accounts"), ("insert", "outbox"), ("insert", "proofs"),
            ("insert", "ratings"), ("findAndModify", "proofs"), ("insert", "entries"), ("findAndModify", "accounts"),
        ])
        account = await db["accounts"].find_one({"_id": "v-day300"})
        assert account is not None and (account["seq"], account["hours_cents"]) == (32, 3150)
        confirm = await db["entries"].find_one({"volunteer_id": "v-day300", "seq": 32})
        assert confirm is not None and (confirm["kind"], confirm["category"]) == ("confirm", "repair")
        proof = await bank.store.proof(logged.data.request_id, "v-day300")
        assert proof is not None and (proof["credited"], proof["confirmed"], proof["stars"]) == (True, True, 4)
        assert await verified_db(settings, db.name) == []
    finally:
        await broker.stop()
        await client.close()


async def test_a_replica_that_has_not_seen_the_account_reads_it_once_and_never_the_chain(
    settings: BusSettings,
) -> None:
    from faststream.nats import NatsBroker
    from pymongo import AsyncMongoClient

    from services.common.bus import Outbox
    from services.ledger.bank import Bank
    from services.ledger.store import LedgerStore

    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, event_listeners=[commands])
    db = client[settings.database("ledger")]
    bank = Bank(LedgerStore(db), Outbox(db, NatsBroker()), ledger_settings(settings))
    try:
        await bank.start()
        for _ in range(30):
            await bank.credit(hours("v-cold", "1"))
        cold = Bank(LedgerStore(db), Outbox(db, NatsBroker()), ledger_settings(settings))
        await cold.start()
        commands.sent.clear()

        credit, _, first = await cold.credit(hours("v-cold", "1.5"))

        assert first and credit["seq"] == 31
        assert sorted(commands.sent) == [("find", "accounts"), ("findAndModify", "accounts"), ("insert", "entries")]
        assert await verified_db(settings, db.name) == []
    finally:
        await client.close()


async def test_an_account_remembered_behind_its_chain_costs_a_collision_not_a_gap(
    settings: BusSettings,
) -> None:
    from faststream.nats import NatsBroker
    from pymongo import AsyncMongoClient

    from services.common.bus import Outbox
    from services.ledger.bank import Bank
    from services.ledger.store import LedgerStore

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    db = client[settings.database("ledger")]
    one = Bank(LedgerStore(db), Outbox(db, NatsBroker()), ledger_settings(settings))
    other = Bank(LedgerStore(db), Outbox(db, NatsBroker()), ledger_settings(settings))
    try:
        await one.start()
        await other.start()
        await one.credit(hours("v-stale", "1"))
        await other.credit(hours("v-stale", "2"))  # `one` still remembers the account at seq 1
        await one.credit(hours("v-stale", "4"))

        entries = await db["entries"].find({"volunteer_id": "v-stale"}).sort("seq", 1).to_list()
        assert [(e["seq"], e["hours_cents"], e["balance_hours_cents"]) for e in entries] == [
            (1, 100, 100), (2, 200, 300), (3, 400, 700)]
        account = await db["accounts"].find_one({"_id": "v-stale"})
        assert account is not None and (account["seq"], account["hours_cents"]) == (3, 700)
        assert await verified_db(settings, db.name) == []
    finally:
        await client.close()


async def verified_db(settings: BusSettings, name: str) -> list[str]:
    report = await verify(settings.mongo_url, name)
    return [str(problem) for problem in report.problems]
