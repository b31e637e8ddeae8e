"""Who gets offered a request, and why: pure functions over plain data, no I/O."""

import math
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from services.common.places import DEFAULT_TIMEZONE, District, Grid, Places

TIERS = ("grid", "neighbour", "community", "street", "district")
KNOWN_NEEDS = ("sign-language", "woman", "wheelchair")  # plus dialect:<name>


@dataclass(frozen=True)
class Stage:
    name: str
    tiers: tuple[str, ...]
    offer_to: int = 1
    ttl_factor: float = 1.0
    rounds: int = 1


@dataclass(frozen=True)
class Rules:
    version: int
    weights: dict[str, float]
    place_scores: dict[str, float]
    half_life_days: float
    hours_scale: float
    prior_stars: float
    prior_weight: float
    continuity_min_stars: int
    avoid_below: int
    pairing_ttl_factor: float
    stages: dict[str, tuple[Stage, ...]]
    # Weekly limits per volunteer (None: no limit); reaching one leaves the volunteer out until next week.
    max_offers_per_week: int | None = None
    max_hours_per_week: float | None = None

    @classmethod
    def load(cls, path: Path) -> "Rules":
        return cls.parse(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str = "rules") -> "Rules":
        try:
            stages = {
                urgency: tuple(
                    Stage(s["name"], tuple(s["tiers"]), int(s.get("offer_to", 1)), float(s.get("ttl_factor", 1.0)),
                          int(s.get("rounds", 1)))
                    for s in listed
                )
                for urgency, listed in raw["stages"].items()
            }
            rules = cls(
                version=int(raw["version"]),
                weights={k: float(v) for k, v in raw["weights"].items()},
                place_scores={k: float(v) for k, v in raw["place_scores"].items()},
                half_life_days=float(raw["fairness"]["half_life_days"]),
                hours_scale=float(raw["fairness"]["hours_scale"]),
                prior_stars=float(raw["rating"]["prior_stars"]),
                prior_weight=float(raw["rating"]["prior_weight"]),
                continuity_min_stars=int(raw["continuity"]["min_stars"]),
                avoid_below=int(raw["continuity"]["avoid_below"]),
                pairing_ttl_factor=float(raw.get("pairing", {}).get("ttl_factor", 1.0)),
                stages=stages,
                max_offers_per_week=_limit(raw.get("fatigue", {}).get("offers_per_week"), int),
                max_hours_per_week=_limit(raw.get("fatigue", {}).get("hours_per_week"), float),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: matching rules are incomplete or malformed: {exc!r}") from exc
        unknown = {t for st in stages.values() for s in st for t in s.tiers} - set(TIERS)
        if unknown or set(rules.weights) != {"place", "load", "fairness", "continuity", "rating"}:
            raise ValueError(f"{where}: unknown tiers {sorted(unknown)} or weights {sorted(rules.weights)}")
        if {"routine", "soon", "urgent"} - set(stages):
            raise ValueError(f"{where}: stages must be given for routine, soon and urgent")
        return rules


def _limit(value: Any, kind: type[int] | type[float]) -> Any:
    return None if value in (None, 0, "") else kind(value)


def places_from(raw: dict[str, dict[str, dict[str, Any]]]) -> Places:
    """Places from the older matcher mapping {district: {grid: {community, street, neighbours}}}, for tests and benches."""
    districts = {}
    for district, grids in raw.items():
        districts[district] = District(
            id=district, name=district, name_en="", timezone=DEFAULT_TIMEZONE, streets={}, communities={},
            grids={
                g: Grid(id=g, name=g, name_en="", community=str(about.get("community", "")),
                        street=str(about.get("street", "")), neighbours=tuple(about.get("neighbours") or ()))
                for g, about in grids.items()
            },
        )
    return Places(districts)


def meets_needs(needs: list[str], attributes: list[str]) -> bool:
    return set(needs) <= set(attributes)


def available(volunteer: dict[str, Any], at: datetime, zone: ZoneInfo) -> str | None:
    """None if the volunteer can serve at `at`; otherwise why not."""
    local = at.astimezone(zone)
    day = local.date()
    for period in volunteer.get("away", []):
        if date.fromisoformat(period["start"]) <= day <= date.fromisoformat(period["end"]):
            return "away"
    windows = volunteer.get("availability", [])
    if not windows:
        return None
    clock = local.strftime("%H:%M")
    for window in windows:
        if local.weekday() in window["days"] and window["start"] <= clock < window["end"]:
            return None
    return "unavailable"


def decayed(value: float, since: float, now: float, half_life_days: float) -> float:
    return value * 0.5 ** (max(0.0, now - since) / (half_life_days * 86400))


@dataclass(frozen=True)
class Scored:
    volunteer_id: str
    total: float
    tier: str
    components: dict[str, dict[str, float]]

    def explanation(self, rank: int, stage: str, considered: int, rules_version: int) -> dict[str, Any]:
        return {
            "volunteer_id": self.volunteer_id,
            "rank": rank,
            "score": round(self.total, 4),
            "tier": self.tier,
            "stage": stage,
            "considered": considered,
            "rules_version": rules_version,
            "components": self.components,
        }


def score(
    volunteer: dict[str, Any], tier: str, free: int, history: dict[str, Any] | None, rules: Rules, now: float
) -> Scored:
    recent = decayed(volunteer.get("recent_work", 0.0), volunteer.get("recent_at", now), now, rules.half_life_days)
    stars_n = volunteer.get("stars_n", 0)
    average = (volunteer.get("stars_sum", 0) + rules.prior_stars * rules.prior_weight) / (stars_n + rules.prior_weight)
    values = {
        "place": rules.place_scores.get(tier, 0.0),
        "load": free / max(1, volunteer["capacity"]),
        "fairness": max(0.0, 1 - recent / rules.hours_scale),
        "continuity": 1.0 if history and history.get("stars", 0) >= rules.continuity_min_stars else 0.0,
        "rating": (average - 1) / 4,
    }
    components = {
        name: {"value": round(value, 4), "weight": rules.weights[name],
               "points": round(value * rules.weights[name], 4)}
        for name, value in values.items()
    }
    components["place"]["tier"] = TIERS.index(tier)
    components["fairness"]["recent_work"] = round(recent, 2)
    components["rating"]["average_stars"] = round(average, 2)
    total = math.fsum(c["points"] for c in components.values())
    return Scored(volunteer["_id"], total, tier, components)


def fatigued(week: dict[str, Any] | None, rules: Rules) -> bool:
    """Has the volunteer reached a weekly limit? `week` holds this week's offers and hours so far."""
    if not week:
        return False
    offers_cap, hours_cap = rules.max_offers_per_week, rules.max_hours_per_week
    return bool((offers_cap is not None and week.get("offers", 0) >= offers_cap)
                or (hours_cap is not None and week.get("hours", 0.0) >= hours_cap))


def left_out(
    request: dict[str, Any],
    volunteer: dict[str, Any],
    free: int,
    history: dict[str, Any] | None,
    rules: Rules,
    at: datetime,
    zone: ZoneInfo,
    need_skill: bool = True,
    week: dict[str, Any] | None = None,
) -> str | None:
    """The hard rule that keeps this volunteer from the request, if any."""
    if volunteer["district"] != request["district"]:
        return "district"
    if volunteer.get("left"):
        return "left"
    if volunteer["_id"] in request.get("tried", []):
        return "already offered"
    if need_skill and not (request["service"] in volunteer["skills"] or request["category"] in volunteer["skills"]):
        return "skill"
    if not meets_needs(request.get("needs", []), volunteer.get("attributes", [])):
        return "needs"
    if history and history.get("stars", 5) < rules.avoid_below:
        return "rated poorly by this resident"
    if fatigued(week, rules):
        return "fatigue"
    if why := available(volunteer, at, zone):
        return why
    if free <= 0:
        return "at full capacity"
    return None


def rank(
    request: dict[str, Any],
    volunteers: list[dict[str, Any]],
    free: dict[str, int],
    histories: dict[str, dict[str, Any]],
    places: Places,
    rules: Rules,
    now: float,
    zone: ZoneInfo,
    need_skill: bool = True,
    weeks: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[Scored], dict[str, str]]:
    """Candidates best first, and the hard rule that left out each of the others."""
    at = service_time(request, now)
    ranked: list[Scored] = []
    out: dict[str, str] = {}
    for volunteer in volunteers:
        history = histories.get(volunteer["_id"])
        why = left_out(request, volunteer, free.get(volunteer["_id"], 0), history, rules, at, zone, need_skill,
                       (weeks or {}).get(volunteer["_id"]))
        if why:
            out[volunteer["_id"]] = why
            continue
        tier = places.tier(request["district"], request["grid"], volunteer["grids"])
        ranked.append(score(volunteer, tier, free.get(volunteer["_id"], 0), history, rules, now))
    # Ties go to the lower id so that every replica ranks alike.
    ranked.sort(key=lambda s: (-round(s.total, 6), s.volunteer_id))
    return ranked, out


def service_time(request: dict[str, Any], now: float) -> datetime:
    start = request.get("window_start")
    if start:
        return datetime.fromisoformat(start)
    return datetime.fromtimestamp(now).astimezone()


def stage_for(rules: Rules, urgency: str, index: int) -> Stage | None:
    stages = rules.stages[urgency]
    return stages[index] if index < len(stages) else None


def unmatched_code(out: Counter[str], offered: int) -> str:
    """The reason as a code a notification template is chosen by (RequestUnmatched.reason_code)."""
    if offered:
        return "all_fell_out"
    if not out:
        return "no_volunteers"
    main, _ = out.most_common(1)[0]
    return {"skill": "no_skill", "fatigue": "fatigue"}.get(main, "none_eligible")


def unmatched_reason(out: Counter[str], offered: int) -> str:
    if offered:
        return f"{offered} volunteer(s) were offered it and declined or did not answer; nobody else fits"
    if not out:
        return "no volunteer is registered in this district"
    main, _ = out.most_common(1)[0]
    return {
        "skill": "no volunteer in the district has this skill",
        "needs": "no volunteer meets the resident's stated needs",
        "at full capacity": "every suitable volunteer is at full capacity",
        "unavailable": "no suitable volunteer is available at that time",
        "away": "the suitable volunteers are away",
        "fatigue": "every suitable volunteer has reached this week's limit",
    }.get(main, f"no suitable volunteer ({main})")
