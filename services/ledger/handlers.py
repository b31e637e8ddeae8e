"""Ledger's decisions: plain functions over plain data, no I/O."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from contracts import Envelope, new_event
from contracts.calls import Balance
from contracts.envelope import derived_id
from contracts.events import HoursLogged, PointsEarned, RequestRated, VolunteerRegistered

SOURCE = "linli/ledger"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Tariff:
    points_per_hour: Decimal
    category_rates: Mapping[str, Decimal]

    def rate_for(self, category: str) -> Decimal:
        return self.category_rates.get(category, self.points_per_hour)


def points_for(hours: Decimal, rate: Decimal) -> Decimal:
    return (hours * rate).quantize(CENT, rounding=ROUND_HALF_UP)


# Amounts are stored as integer hundredths: the embedded server has no Decimal128, and sums of ints are exact.
def to_cents(amount: Decimal) -> int:
    return int(amount.quantize(CENT, rounding=ROUND_HALF_UP).scaleb(2))


def from_cents(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def entry_id(event_id: str) -> str:
    return derived_id("ledger.entry", event_id)


def credit_entry(event: Envelope[HoursLogged], tariff: Tariff, posted: float) -> dict[str, Any]:
    data = event.data
    rate = tariff.rate_for(data.category)
    return {
        "_id": entry_id(event.id),
        "kind": "credit",
        "volunteer_id": data.volunteer_id,
        "request_id": data.request_id,
        "assignment_id": data.assignment_id,
        "category": data.category,
        "district": event.district,
        "hours_cents": to_cents(data.hours),
        "points_cents": to_cents(points_for(data.hours, rate)),
        "rate": str(rate),
        "event_id": event.id,
        "at": event.time.timestamp(),
        # Order of posting; the balance after an entry counts the entries posted up to it.
        "posted": posted,
    }


def earned_event(entry: dict[str, Any], balance_cents: int) -> Envelope[Any]:
    # Built only from the stored entry, so a redelivery re-sends the very same event.
    data = PointsEarned(
        volunteer_id=entry["volunteer_id"],
        request_id=entry["request_id"],
        hours=from_cents(entry["hours_cents"]),
        points=from_cents(entry["points_cents"]),
        balance_points=from_cents(balance_cents),
        rate=Decimal(entry["rate"]),
    )
    return new_event(
        data,
        source=SOURCE,
        district=entry["district"],
        subject=entry["volunteer_id"],
        correlationid=entry["request_id"],
        causationid=entry["event_id"],
        event_id=derived_id("points.earned", entry["_id"]),
        time=datetime.fromtimestamp(entry["posted"], UTC),
    )


def rating(event: Envelope[RequestRated]) -> dict[str, Any]:
    data = event.data
    return {
        "_id": data.request_id,
        "volunteer_id": data.volunteer_id,
        "stars": data.stars,
        "event_id": event.id,
        "at": event.time.timestamp(),
    }


def account(event: Envelope[VolunteerRegistered]) -> dict[str, Any]:
    return {"_id": event.data.volunteer_id, "district": event.data.district, "first_seen": event.time.timestamp()}


def average_stars(stars: int, ratings: int) -> Decimal | None:
    # No ratings is no average, not an average of zero stars.
    if ratings == 0:
        return None
    return (Decimal(stars) / Decimal(ratings)).quantize(CENT, rounding=ROUND_HALF_UP)


def balance_view(volunteer_id: str, by_kind: Mapping[str, Mapping[str, int]], ratings: int, stars: int) -> Balance:
    credits = by_kind.get("credit", {})
    return Balance(
        volunteer_id=volunteer_id,
        hours=from_cents(credits.get("hours_cents", 0)),
        points=from_cents(sum(totals.get("points_cents", 0) for totals in by_kind.values())),
        services=credits.get("entries", 0),
        ratings=ratings,
        average_stars=average_stars(stars, ratings),
    )
