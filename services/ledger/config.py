import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from services.common.config import BusSettings


def parse_rate(text: str, setting: str) -> Decimal:
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{setting}: {text!r} is not a number of points per hour") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{setting}: {text!r} must be a finite number of points per hour, 0 or more")
    return rate


def parse_category_rates(text: str, setting: str = "LEDGER_CATEGORY_RATES") -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        category, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not category:
            raise ValueError(f"{setting}: {item!r} is not category=rate, e.g. 'elderly=12,tutoring=15'")
        if category in rates:
            raise ValueError(f"{setting}: category {category!r} is given twice")
        rates[category] = parse_rate(value, f"{setting} ({category})")
    return rates


@dataclass(frozen=True)
class LedgerSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    # Points for one hour of service where no category rate applies: 10, the Qufu rule.
    points_per_hour: Decimal = field(
        default_factory=lambda: parse_rate(os.environ.get("LEDGER_POINTS_PER_HOUR", "10"), "LEDGER_POINTS_PER_HOUR")
    )
    category_rates: Mapping[str, Decimal] = field(
        default_factory=lambda: parse_category_rates(os.environ.get("LEDGER_CATEGORY_RATES", ""))
    )
