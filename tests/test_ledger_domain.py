from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from contracts import Envelope, new_event
from contracts.envelope import derived_id
from contracts.events import HoursLogged, PointsEarned
from services.ledger import handlers
from services.ledger.config import LedgerSettings, parse_category_rates, parse_rate
from services.ledger.handlers import Tariff, from_cents, points_for, to_cents

pytestmark = pytest.mark.domain

TARIFF = Tariff(Decimal("10"), {"elderly": Decimal("12"), "tutoring": Decimal("12.5")})


def hours_logged(hours: str, category: str = "repair", event_id: str = "e-1") -> Envelope[Any]:
    return new_event(
        HoursLogged(volunteer_id="v-1", request_id="r-1", assignment_id="a-1", hours=Decimal(hours), category=category),
        source="linli/matcher", district="beibei", subject="r-1", correlationid="r-1", event_id=event_id,
        time=datetime(2026, 5, 1, 9, 30, tzinfo=UTC),
    )


def test_an_hour_without_a_category_rate_earns_ten_points() -> None:
    assert TARIFF.rate_for("repair") == Decimal("10")
    assert points_for(Decimal("1"), TARIFF.rate_for("repair")) == Decimal("10.00")


def test_a_category_rate_replaces_the_default() -> None:
    assert points_for(Decimal("2"), TARIFF.rate_for("elderly")) == Decimal("24.00")


def test_points_are_exact_to_the_hundredth() -> None:
    assert str(points_for(Decimal("1.25"), Decimal("10"))) == "12.50"
    assert str(points_for(Decimal("0.01"), Decimal("10"))) == "0.10"


def test_half_a_hundredth_rounds_up() -> None:
    assert points_for(Decimal("0.05"), Decimal("12.5")) == Decimal("0.63")
    assert points_for(Decimal("0.33"), Decimal("12.5")) == Decimal("4.13")


def test_cents_round_trip_and_sum_without_float_error() -> None:
    assert to_cents(Decimal("12.50")) == 1250 and str(from_cents(1250)) == "12.50"
    assert from_cents(to_cents(Decimal("0.1")) + to_cents(Decimal("0.2"))) == Decimal("0.30")
    assert str(from_cents(0)) == "0.00"


def test_a_credit_entry_is_keyed_on_the_event_and_stored_in_integer_hundredths() -> None:
    entry = handlers.credit_entry(hours_logged("1.25", "tutoring"), TARIFF, posted=1000.0)
    assert entry["_id"] == derived_id("ledger.entry", "e-1")
    assert (entry["hours_cents"], entry["points_cents"], entry["rate"]) == (125, 1563, "12.5")
    assert entry["kind"] == "credit" and entry["event_id"] == "e-1" and entry["district"] == "beibei"
    assert entry["at"] == datetime(2026, 5, 1, 9, 30, tzinfo=UTC).timestamp()
    again = handlers.credit_entry(hours_logged("1.25", "tutoring"), TARIFF, posted=2000.0)
    assert again["_id"] == entry["_id"]


def test_points_earned_is_the_same_event_every_time_it_is_built_from_an_entry() -> None:
    entry = handlers.credit_entry(hours_logged("2.5", "elderly"), TARIFF, posted=1000.0)
    first, second = handlers.earned_event(entry, 4250), handlers.earned_event(entry, 4250)

    assert first.model_dump() == second.model_dump()
    assert first.id == derived_id("points.earned", entry["_id"])
    assert (first.causationid, first.correlationid, first.district) == ("e-1", "r-1", "beibei")
    data = first.data
    assert isinstance(data, PointsEarned)
    assert (data.hours, data.points, data.balance_points, data.rate) == (
        Decimal("2.50"), Decimal("30.00"), Decimal("42.50"), Decimal("12"),
    )


def test_a_volunteer_with_nothing_has_a_zero_balance_and_no_average() -> None:
    balance = handlers.balance_view("v-1", {}, 0, 0)
    assert balance.model_dump(mode="json") == {
        "volunteer_id": "v-1", "hours": "0.00", "points": "0.00", "services": 0, "ratings": 0, "average_stars": None,
    }


def test_balance_counts_credits_and_averages_stars_to_two_places() -> None:
    by_kind = {"credit": {"hours_cents": 375, "points_cents": 4250, "entries": 2}}
    balance = handlers.balance_view("v-1", by_kind, 3, 13)
    assert (balance.hours, balance.points, balance.services) == (Decimal("3.75"), Decimal("42.50"), 2)
    assert balance.average_stars == Decimal("4.33")


def test_rates_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_POINTS_PER_HOUR", "8.5")
    monkeypatch.setenv("LEDGER_CATEGORY_RATES", " elderly=12, tutoring = 15 ,")
    settings = LedgerSettings()
    assert settings.points_per_hour == Decimal("8.5")
    assert settings.category_rates == {"elderly": Decimal("12"), "tutoring": Decimal("15")}


def test_the_default_rate_is_ten_and_no_category_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_POINTS_PER_HOUR", raising=False)
    monkeypatch.delenv("LEDGER_CATEGORY_RATES", raising=False)
    settings = LedgerSettings()
    assert settings.points_per_hour == Decimal("10") and settings.category_rates == {}


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
