from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import ApiError, Envelope, new_event
from contracts.calls import AdjustBalance
from contracts.envelope import derived_id
from contracts.events import HoursLogged, PointsEarned, RequestRated
from services.ledger import chain, handlers, signing
from services.ledger.config import LedgerSettings, parse_category_rates, parse_rate, parse_trusted_keys
from services.ledger.handlers import from_cents, to_cents
from services.ledger.rules import (
    DEFAULT_RULES,
    Bonus,
    Rules,
    load_rules,
    parse_rules,
    points_for,
    price,
    with_overrides,
)

pytestmark = pytest.mark.domain

SHANGHAI = timezone(timedelta(hours=8))
RULES = Rules(
    version="test-1",
    points_per_hour=Decimal("10"),
    categories={"elderly": Decimal("12"), "tutoring": Decimal("12.5")},
    bonuses={"urgent": Bonus(per_hour=Decimal("2")), "night": Bonus(per_hour=Decimal("3")),
             "holiday": Bonus(per_hour=Decimal("5")), "five_star": Bonus(points=Decimal("5"))},
    holidays=frozenset({date(2026, 10, 1)}),
)
WEEKDAY_NOON = datetime(2026, 5, 6, 12, 0, tzinfo=SHANGHAI)


def hours_logged(hours: str, category: str = "repair", event_id: str = "e-1", **more: Any) -> Envelope[Any]:
    return new_event(
        HoursLogged(volunteer_id="v-1", request_id="r-1", assignment_id="a-1", hours=Decimal(hours), category=category,
                    **more),
        source="linli/matcher", district="beibei", subject="r-1", correlationid="r-1", event_id=event_id,
        time=datetime(2026, 5, 1, 9, 30, tzinfo=UTC),
    )


def linked(*bodies: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for body in bodies:
        entries.append(chain.link(body, entries[-1] if entries else None))
    return entries


def body(n: int, hours: int = 100, points: int = 1000, kind: str = "credit") -> dict[str, Any]:
    return handlers.entry(kind, entry_id=f"e-{n}", volunteer_id="v-1", account={"team": "t"}, cause=f"c-{n}",
                          at=1000.0 + n, posted=2000.0 + n, hours_cents=hours, points_cents=points)


# --- pricing ------------------------------------------------------------------------------------

def test_an_hour_without_a_category_rate_earns_ten_points() -> None:
    pricing = price(RULES, Decimal("1"), "repair", "routine", WEEKDAY_NOON)
    assert (pricing.rate, pricing.points, pricing.bonuses) == (Decimal("10"), Decimal("10.00"), ())


def test_a_category_rate_replaces_the_default() -> None:
    assert price(RULES, Decimal("2"), "elderly", "routine", WEEKDAY_NOON).points == Decimal("24.00")


def test_points_are_exact_to_the_hundredth_and_half_a_hundredth_rounds_up() -> None:
    assert str(points_for(Decimal("1.25"), Decimal("10"))) == "12.50"
    assert points_for(Decimal("0.05"), Decimal("12.5")) == Decimal("0.63")
    assert points_for(Decimal("0.33"), Decimal("12.5")) == Decimal("4.13")


def test_an_urgent_request_earns_its_bonus_on_top() -> None:
    pricing = price(RULES, Decimal("1.5"), "repair", "urgent", WEEKDAY_NOON)
    assert pricing.points == Decimal("15.00") and pricing.bonuses == (("urgent", Decimal("3.00")),)


@pytest.mark.parametrize(
    ("local", "night"),
    [(time(19, 59), False), (time(20, 0), True), (time(23, 30), True), (time(0, 0), True), (time(5, 59), True),
     (time(6, 0), False), (time(12, 0), False)],
)
def test_night_is_judged_in_shanghai_time(local: time, night: bool) -> None:
    done = datetime.combine(date(2026, 5, 6), local, SHANGHAI).astimezone(UTC)  # stored and sent in UTC
    names = [name for name, _ in price(RULES, Decimal("1"), "repair", "routine", done).bonuses]
    assert names == (["night"] if night else [])


def test_a_holiday_is_a_local_date_and_bonuses_add_up() -> None:
    # 23:00 on 30 September in UTC is already 1 October, 07:00, in Shanghai.
    done = datetime(2026, 9, 30, 23, 0, tzinfo=UTC)
    pricing = price(RULES, Decimal("2"), "elderly", "urgent", done)
    assert pricing.points == Decimal("24.00")
    assert pricing.bonuses == (("urgent", Decimal("4.00")), ("holiday", Decimal("10.00")))
    assert pricing.bonus_points == Decimal("14.00")


def test_the_shipped_rules_are_qufus_ten_points_an_hour_without_bonuses() -> None:
    rules = load_rules(DEFAULT_RULES)
    pricing = price(rules, Decimal("2.25"), "elderly", "urgent", datetime(2026, 10, 1, 22, 0, tzinfo=SHANGHAI))
    assert rules.version == "qufu-2026.1" and rules.timezone == "Asia/Shanghai"
    assert (pricing.points, pricing.bonuses) == (Decimal("22.50"), ())
    assert date(2026, 10, 1) in rules.holidays


def test_environment_rates_override_the_file_and_the_version_says_so() -> None:
    rules = with_overrides(RULES, None, {"elderly": Decimal("15")})
    assert rules.rate_for("elderly") == Decimal("15") and rules.rate_for("tutoring") == Decimal("12.5")
    assert rules.version.startswith("test-1+env.") and rules.fingerprint() != RULES.fingerprint()
    assert with_overrides(RULES, None, {}) is RULES
    assert with_overrides(RULES, None, {"elderly": Decimal("15")}).version == rules.version


def test_a_rules_file_is_read_with_bonuses_holidays_and_night_hours(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: beibei-2\npoints_per_hour: 8\ncategories: {elderly: 12}\n"
        "bonuses: {night: {per_hour: 1, start: '22:00', end: '05:00'}, five_star: {points: 3}}\n"
        "holidays: [2026-01-01, '2026-05-01']\n"
    )
    rules = load_rules(path)
    assert (rules.version, rules.points_per_hour, rules.night_start, rules.night_end) == (
        "beibei-2", Decimal("8"), time(22, 0), time(5, 0))
    assert rules.holidays == {date(2026, 1, 1), date(2026, 5, 1)}
    assert rules.bonus("five_star").points == Decimal("3") and rules.bonus("urgent") == Bonus()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"points_per_hour": 10}, "needs a version"),
        ({"version": "x", "points_per_hour": "ten"}, "is not a number"),
        ({"version": "x", "categories": {"elderly": -1}}, "0 or more"),
        ({"version": "x", "bonuses": {"birthday": {"points": 1}}}, "unknown bonuses"),
        ({"version": "x", "bonuses": {"night": {"start": "8pm"}}}, "is not a time"),
        ({"version": "x", "holidays": ["soon"]}, "Invalid isoformat"),
        ({"version": "x", "rates": {}}, "unknown keys"),
    ],
)
def test_a_bad_rules_file_is_refused_with_the_problem_named(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rules(raw, "rules.yaml")


def test_rates_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_POINTS_PER_HOUR", "8.5")
    monkeypatch.setenv("LEDGER_CATEGORY_RATES", " elderly=12, tutoring = 15 ,")
    rules = LedgerSettings().rules
    assert rules.points_per_hour == Decimal("8.5")
    assert (rules.rate_for("elderly"), rules.rate_for("tutoring")) == (Decimal("12"), Decimal("15"))


def test_without_overrides_the_shipped_file_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEDGER_POINTS_PER_HOUR", "LEDGER_CATEGORY_RATES", "LEDGER_RULES"):
        monkeypatch.delenv(name, raising=False)
    settings = LedgerSettings()
    assert settings.rules.version == "qufu-2026.1" and settings.rules.points_per_hour == Decimal("10")
    assert settings.confirm_deadline == 7 * 24 * 3600


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("elderly", "is not category=rate"),
        ("=12", "is not category=rate"),
        ("elderly=lots", "is not a number"),
        ("elderly=-1", "0 or more"),
        ("elderly=NaN", "finite"),
        ("elderly=12,elderly=15", "given twice"),
    ],
)
def test_bad_category_rates_are_refused_with_the_setting_named(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="LEDGER_CATEGORY_RATES") as caught:
        parse_category_rates(text)
    assert problem in str(caught.value)


def test_a_bad_default_rate_stops_the_settings_from_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_POINTS_PER_HOUR", "ten")
    with pytest.raises(ValueError, match="LEDGER_POINTS_PER_HOUR: 'ten' is not a number"):
        LedgerSettings()
    assert parse_rate(" 0 ", "X") == Decimal("0")


# --- entries ------------------------------------------------------------------------------------

def test_cents_round_trip_and_sum_without_float_error() -> None:
    assert to_cents(Decimal("12.50")) == 1250 and str(from_cents(1250)) == "12.50"
    assert from_cents(to_cents(Decimal("0.1")) + to_cents(Decimal("0.2"))) == Decimal("0.30")
    assert str(from_cents(0)) == "0.00" and to_cents(Decimal("-1.5")) == -150


def test_a_credit_is_keyed_on_the_event_and_records_its_rule_version_and_bonuses() -> None:
    event = hours_logged("1.25", "tutoring", urgency="urgent", grid="g-1", service="tutoring.homework",
                         resident_ref="p-9", completed_at=datetime(2026, 5, 6, 4, 0, tzinfo=UTC))
    pricing = price(RULES, Decimal("1.25"), "tutoring", "urgent", handlers.done_at(event))
    credit, bonus = handlers.credit_entries(event, pricing, RULES, {"team": "红马甲", "district": "x"}, 5000.0)
    assert credit["_id"] == derived_id("ledger.entry", "e-1") and credit["cause"] == "e-1"
    assert (credit["kind"], credit["hours_cents"], credit["points_cents"], credit["rate"]) == (
        "credit", 125, 1563, "12.5")
    assert (credit["district"], credit["team"], credit["grid"], credit["service"], credit["resident_ref"]) == (
        "beibei", "红马甲", "g-1", "tutoring.homework", "p-9")
    assert credit["at"] == datetime(2026, 5, 6, 4, 0, tzinfo=UTC).timestamp() and credit["posted"] == 5000.0
    assert credit["rule_version"] == bonus["rule_version"] == "test-1"
    assert (bonus["kind"], bonus["bonus"], bonus["hours_cents"], bonus["points_cents"]) == ("bonus", "urgent", 0, 250)
    again = handlers.credit_entries(event, pricing, RULES, {}, 9000.0)
    assert [e["_id"] for e in again] == [credit["_id"], bonus["_id"]]


def test_every_entry_carries_the_fields_reports_read() -> None:
    fields = {"_id", "kind", "volunteer_id", "district", "seq", "prev_hash", "hash", "hours_cents", "points_cents",
              "category", "service", "grid", "team", "resident_ref", "request_id", "at", "posted", "rule_version",
              "cause", "reason"}
    call = AdjustBalance(volunteer_id="v-1", points=Decimal("-5"), reason="wrong hours", operator="op",
                         idempotency_key="adjust-0001")
    red = {"_id": "rd-1", "volunteer_id": "v-1", "idempotency_key": "k", "cost_cents": 500, "quantity": 1,
           "item_name": "rice", "item_id": "rice", "reason": ""}
    bodies = [
        *handlers.credit_entries(hours_logged("1"), price(RULES, Decimal("1"), "repair", "urgent", WEEKDAY_NOON),
                                 RULES, {}, 1.0),
        handlers.adjustment(call, {}, 1.0),
        handlers.spend(red, {}, 1.0),
        handlers.operator_confirm("r-1", "v-1", "op", "", {}, None, 1.0),
    ]
    for linked_entry in linked(*bodies):
        assert fields <= set(linked_entry), fields - set(linked_entry)


def test_points_earned_is_the_same_event_every_time_it_is_built_from_the_entries() -> None:
    event = hours_logged("2.5", "elderly", urgency="urgent")
    credit, bonus = linked(*handlers.credit_entries(
        event, price(RULES, Decimal("2.5"), "elderly", "urgent", WEEKDAY_NOON), RULES, {}, 1000.0))
    first, second = handlers.earned_event(credit, [bonus]), handlers.earned_event(credit, [bonus])

    assert first.model_dump() == second.model_dump()
    assert first.id == derived_id("points.earned", credit["_id"])
    assert (first.causationid, first.correlationid, first.district) == ("e-1", "r-1", "beibei")
    data = first.data
    assert isinstance(data, PointsEarned)
    assert (data.hours, data.points, data.bonus_points, data.balance_points, data.rate, data.rule_version) == (
        Decimal("2.50"), Decimal("30.00"), Decimal("5.00"), Decimal("35.00"), Decimal("12"), "test-1")


@pytest.mark.parametrize(("stars", "done", "disputed"), [(1, True, True), (2, True, True), (3, True, False),
                                                          (5, False, True), (5, True, False)])
def test_one_or_two_stars_or_not_done_dispute_the_hours(stars: int, done: bool, disputed: bool) -> None:
    rated = new_event(RequestRated(request_id="r-1", volunteer_id="v-1", stars=stars, done=done),
                      source="linli/intake", district="beibei", subject="r-1", correlationid="r-1")
    entries = handlers.rating_entries(rated, RULES, {}, None, 1.0)
    assert handlers.disputes(stars, done) is disputed
    kinds = [(e["kind"], e["points_cents"]) for e in entries]
    assert kinds == ([] if disputed else [("confirm", 0)] + ([("bonus", 500)] if stars == 5 else []))


def test_a_spend_or_adjustment_that_would_go_below_zero_is_refused() -> None:
    head = linked(body(1, hours=100, points=1000))[-1]
    with pytest.raises(ApiError) as caught:
        handlers.require_cover(chain.link(body(2, hours=0, points=-1001, kind="spend"), head))
    assert caught.value.code == "insufficient_points" and caught.value.details["balance_points"] == "10.00"
    with pytest.raises(ApiError, match="hours below zero"):
        handlers.require_cover(chain.link(body(2, hours=-101, points=0, kind="adjust"), head))
    handlers.require_cover(chain.link(body(2, hours=-100, points=-1000, kind="adjust"), head))


def test_a_take_the_stock_cannot_cover_is_recorded_as_refused() -> None:
    first = handlers.stock_move("rice", "m-1", 3, None, "put", 1.0)
    take = handlers.stock_move("rice", "m-2", -2, first, "rd-1", 2.0)
    short = handlers.stock_move("rice", "m-3", -2, take, "rd-2", 3.0)
    assert (first["seq"], first["stock_after"]) == (1, 3)
    assert (take["seq"], take["delta"], take["stock_after"], take["refused"]) == (2, -2, 1, False)
    assert (short["seq"], short["delta"], short["stock_after"], short["refused"]) == (3, 0, 1, True)


# --- the chain ----------------------------------------------------------------------------------

def test_entries_chain_by_hash_with_running_balances() -> None:
    one, two = linked(body(1), body(2, hours=50, points=-300, kind="adjust"))
    assert (one["seq"], one["prev_hash"], two["seq"], two["prev_hash"]) == (1, chain.GENESIS, 2, one["hash"])
    assert (two["balance_hours_cents"], two["balance_points_cents"]) == (150, 700)
    totals, problems = chain.check_chain("v-1", [one, two])
    assert problems == [] and (totals.seq, totals.head, totals.hours_cents, totals.points_cents, totals.services) == (
        2, two["hash"], 150, 700, 1)


def test_an_edited_entry_is_named_by_the_chain_check() -> None:
    entries = linked(body(1), body(2), body(3))
    entries[1] = {**entries[1], "hours_cents": 900}
    _, problems = chain.check_chain("v-1", entries)
    assert {(p.entry_id, p.seq) for p in problems} == {("e-2", 2)}
    assert any("edited" in p.problem for p in problems)


def test_a_rewritten_hash_breaks_the_link_to_the_next_entry() -> None:
    entries = linked(body(1), body(2), body(3))
    forged = {**entries[1], "points_cents": 5000, "balance_points_cents": 6000}
    forged["hash"] = chain.entry_hash(forged)
    _, problems = chain.check_chain("v-1", [entries[0], forged, entries[2]])
    assert ("e-3", "prev_hash does not match the previous entry's hash") in {(p.entry_id, p.problem) for p in problems}


def test_a_missing_entry_and_a_projection_that_disagrees_are_reported() -> None:
    one, _, three = linked(body(1), body(2), body(3))
    totals, problems = chain.check_chain("v-1", [one, three])
    assert any("missing" in p.problem for p in problems)
    good = {"seq": 3, "head": three["hash"], "hours_cents": 200, "points_cents": 2000, "services": 2}
    assert chain.check_projection("v-1", totals, good) == []
    assert chain.check_projection("v-1", totals, {**good, "points_cents": 9999})
    assert chain.check_projection("v-1", totals, {**good, "seq": 1}) == []  # behind: the sweep rolls it on
    assert chain.check_projection("v-1", totals, {**good, "seq": 4})


# --- signatures ---------------------------------------------------------------------------------

def test_a_statement_verifies_only_unaltered_and_with_the_issuers_key() -> None:
    key, other = signing.load_private(signing.new_private_pem()), signing.load_private(signing.new_private_pem())
    statement = {"district": "beibei", "volunteer_id": "v-1", "hours": "12.50", "name": "袁文"}
    signature = signing.sign(key, statement)
    public = signing.public_pem(key)
    assert signing.verify(public, dict(reversed(list(statement.items()))), signature)  # key order does not matter
    assert not signing.verify(public, {**statement, "hours": "125.00"}, signature)
    assert not signing.verify(signing.public_pem(other), statement, signature)
    assert not signing.verify(public, statement, "not base64!")
    assert len(signing.key_id(public)) == 16


def test_trusted_keys_are_read_from_files_named_in_the_setting(tmp_path: Path) -> None:
    pem = signing.public_pem(signing.load_private(signing.new_private_pem()))
    (tmp_path / "qufu.pem").write_text(pem)
    assert parse_trusted_keys(f"qufu={tmp_path / 'qufu.pem'}") == {"qufu": pem}
    with pytest.raises(ValueError, match="LEDGER_TRUSTED_KEYS: cannot read the key of 'x'"):
        parse_trusted_keys(f"x={tmp_path / 'missing.pem'}")
    with pytest.raises(ValueError, match="is not district=path"):
        parse_trusted_keys("qufu")
