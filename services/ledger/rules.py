"""Points rules: data with a version, and pricing as a pure function of the rules and the service."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

CENT = Decimal("0.01")
BONUSES = ("urgent", "night", "holiday", "five_star")
DEFAULT_RULES = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True)
class Bonus:
    per_hour: Decimal = Decimal("0")
    points: Decimal = Decimal("0")

    def for_hours(self, hours: Decimal) -> Decimal:
        return quantize(hours * self.per_hour + self.points)


@dataclass(frozen=True)
class Rules:
    version: str
    points_per_hour: Decimal
    categories: Mapping[str, Decimal] = field(default_factory=dict)
    bonuses: Mapping[str, Bonus] = field(default_factory=dict)
    night_start: time = time(20, 0)
    night_end: time = time(6, 0)
    holidays: frozenset[date] = frozenset()
    timezone: str = "Asia/Shanghai"

    def rate_for(self, category: str) -> Decimal:
        return self.categories.get(category, self.points_per_hour)

    def bonus(self, name: str) -> Bonus:
        return self.bonuses.get(name, Bonus())

    def content(self) -> dict[str, Any]:
        return {
            "points_per_hour": str(self.points_per_hour),
            "categories": {k: str(v) for k, v in sorted(self.categories.items())},
            "bonuses": {k: [str(b.per_hour), str(b.points)] for k, b in sorted(self.bonuses.items())},
            "night": [self.night_start.isoformat("minutes"), self.night_end.isoformat("minutes")],
            "holidays": sorted(d.isoformat() for d in self.holidays),
            "timezone": self.timezone,
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Pricing:
    rate: Decimal
    points: Decimal
    bonuses: tuple[tuple[str, Decimal], ...]

    @property
    def bonus_points(self) -> Decimal:
        return sum((points for _, points in self.bonuses), Decimal("0"))


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def points_for(hours: Decimal, rate: Decimal) -> Decimal:
    return quantize(hours * rate)


def is_night(local: time, start: time, end: time) -> bool:
    # The night window usually wraps midnight (20:00-06:00); a window that does not is allowed too.
    return start <= local or local < end if start > end else start <= local < end


def price(rules: Rules, hours: Decimal, category: str, urgency: str, done_at: datetime) -> Pricing:
    local = done_at.astimezone(ZoneInfo(rules.timezone))
    applies = {
        "urgent": urgency == "urgent",
        "night": is_night(local.time(), rules.night_start, rules.night_end),
        "holiday": local.date() in rules.holidays,
    }
    bonuses = tuple(
        (name, amount)
        for name, applied in applies.items()
        if applied and (amount := rules.bonus(name).for_hours(hours)) > 0
    )
    rate = rules.rate_for(category)
    return Pricing(rate=rate, points=points_for(hours, rate), bonuses=bonuses)


def five_star_bonus(rules: Rules) -> Decimal:
    return rules.bonus("five_star").for_hours(Decimal("0"))


def amount(value: Any, where: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where}: {value!r} must be a finite number, 0 or more")
    return number


def clock(value: Any, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a time like 20:00") from None


def parse_rules(raw: Mapping[str, Any], where: str) -> Rules:
    unknown = set(raw) - {"version", "timezone", "points_per_hour", "categories", "bonuses", "holidays"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    version = str(raw.get("version") or "").strip()
    if not version:
        raise ValueError(f"{where}: a rules file needs a version")
    bonuses_raw: Mapping[str, Any] = raw.get("bonuses") or {}
    if extra := set(bonuses_raw) - set(BONUSES):
        raise ValueError(f"{where}: unknown bonuses {sorted(extra)}; known are {', '.join(BONUSES)}")
    night = bonuses_raw.get("night") or {}
    try:
        holidays = frozenset(
            d if isinstance(d, date) else date.fromisoformat(str(d)) for d in raw.get("holidays") or []
        )
        ZoneInfo(str(raw.get("timezone", "Asia/Shanghai")))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Rules(
        version=version,
        points_per_hour=amount(raw.get("points_per_hour", 10), f"{where} points_per_hour"),
        categories={str(k): amount(v, f"{where} categories.{k}") for k, v in (raw.get("categories") or {}).items()},
        bonuses={
            name: Bonus(
                per_hour=amount(spec.get("per_hour", 0), f"{where} bonuses.{name}.per_hour"),
                points=amount(spec.get("points", 0), f"{where} bonuses.{name}.points"),
            )
            for name, spec in bonuses_raw.items()
        },
        night_start=clock(night.get("start", "20:00"), f"{where} bonuses.night.start"),
        night_end=clock(night.get("end", "06:00"), f"{where} bonuses.night.end"),
        holidays=holidays,
        timezone=str(raw.get("timezone", "Asia/Shanghai")),
    )


def load_rules(path: Path) -> Rules:
    return parse_rules(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))


def with_overrides(rules: Rules, points_per_hour: Decimal | None, category_rates: Mapping[str, Decimal]) -> Rules:
    """Rates from the environment on top of the file; the version names the change so entries stay traceable."""
    if points_per_hour is None and not category_rates:
        return rules
    changed = replace(
        rules,
        points_per_hour=rules.points_per_hour if points_per_hour is None else points_per_hour,
        categories={**rules.categories, **category_rates},
    )
    return replace(changed, version=f"{rules.version}+env.{changed.fingerprint()[:8]}")
