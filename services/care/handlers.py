"""Care's decisions: when a duty is due, who each escalation step tells, what a check-in means. No I/O."""

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from contracts import ApiError
from contracts.care import DutySpec, Level, Member, Reader

Doc = dict[str, Any]
LEVELS: tuple[Level, ...] = ("holder", "group", "grid_worker", "operators")
LIVE = ("open", "escalating")
# How long before its deadline a check-in counts for a duty: a day's visit from the day before's deadline on.
WINDOW = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "dates": timedelta(days=3)}
BUCKET_FORMAT = "%Y%m%d%H%M%S"


# ---- time -------------------------------------------------------------------------------------------------

def bucket(at: datetime, seconds: int) -> str:
    """The equality key of the timer bucket holding `at`: the database answers one key from an index."""
    epoch = int(at.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(epoch, UTC).strftime(BUCKET_FORMAT)


def buckets(since: str, until: datetime, seconds: int) -> list[str]:
    """Every bucket key from `since` (included) to the one holding `until` (included)."""
    start = datetime.strptime(since, BUCKET_FORMAT).replace(tzinfo=UTC)
    last = bucket(until, seconds)
    keys, at = [], start
    while (key := bucket(at, seconds)) <= last:
        keys.append(key)
        at += timedelta(seconds=seconds)
    return keys


def deadline(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), zone).astimezone(UTC)


def next_due(duty: DutySpec, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first deadline of `duty` strictly after `after`, in UTC; None when a dated duty has no date left."""
    local = after.astimezone(zone).date()
    if duty.rhythm == "dates":
        return next((due for day in sorted(duty.dates) if (due := deadline(day, duty.due, zone)) > after), None)
    for offset in range(8):
        day = local + timedelta(days=offset)
        if duty.rhythm == "weekly" and day.weekday() != duty.weekday:
            continue
        if (due := deadline(day, duty.due, zone)) > after:
            return due
    return None  # pragma: no cover - a daily or weekly deadline always falls within eight days


def opens_at(duty: DutySpec, due: datetime, since: datetime) -> datetime:
    """From when a check-in answers the deadline `due`: a rhythm's length before it, not before `since`."""
    return max(due - WINDOW[duty.rhythm], since)


def step_at(chain_from: datetime, step: int, graces: Sequence[float]) -> datetime:
    """When escalation step `step` (1..4) is due: each grace counted from the step before."""
    return chain_from + timedelta(seconds=sum(graces[:step]))


# ---- plans ------------------------------------------------------------------------------------------------

def resident_ref(district: str, name: str, phone: str) -> str:
    """A pseudonym: the same person gives the same value; nothing of the name or phone can be read back."""
    digest = hashlib.sha256(f"care/{district}/{name}/{phone}".encode()).hexdigest()
    return f"res-{digest[:16]}"


def spec_key(duty: DutySpec) -> str:
    return hashlib.sha256(duty.model_dump_json().encode()).hexdigest()[:8]


def occurrence_id(plan_id: str, duty: DutySpec, due: datetime) -> str:
    return f"{plan_id}:{duty.duty_id}:{spec_key(duty)}:{due.strftime(BUCKET_FORMAT)}"


def check_group(group: Sequence[Member], duties: Sequence[DutySpec]) -> None:
    people = [m.person_id for m in group]
    if len(set(people)) != len(people):
        raise ApiError("invalid_request", "a person is twice in the care group",
                       [{"field": "group", "problem": "person_id repeated"}])
    ids = [d.duty_id for d in duties]
    if len(set(ids)) != len(ids):
        raise ApiError("invalid_request", "two duties have the same id",
                       [{"field": "duties", "problem": "duty_id repeated"}])
    strangers = sorted({d.holder for d in duties} - set(people))
    if strangers:
        raise ApiError("not_in_group", "a duty's holder must be in the care group", {"holders": strangers})


def may_read(plan: Doc, reader: Reader) -> bool:
    """Operators and directors of the plan's district, and the people of its care group (covers included)."""
    if reader.district != plan["district"]:
        return False
    if reader.role in ("operator", "director"):
        return True
    return reader.person_id in members(plan)


def may_change(plan_district: str, reader: Reader) -> bool:
    return reader.district == plan_district and reader.role in ("operator", "director")


def members(plan: Doc) -> set[str]:
    return {m["person_id"] for m in plan["group"]} | {c["person_id"] for c in plan.get("covers", [])}


def covering(plan: Doc, person: str, on: date) -> str:
    """Who stands in for `person` on `on`: the cover the director assigned, or the person themself."""
    for cover in plan.get("covers", []):
        start, end = date.fromisoformat(cover["start"]), date.fromisoformat(cover["end"])
        if cover["for_person"] == person and start <= on <= end:
            return str(cover["person_id"])
    return person


def recipients(plan: Doc, holder: str, level: Level, on: date) -> list[str]:
    """Who one escalation step tells."""
    acting = covering(plan, holder, on)
    if level == "holder":
        return [f"person:{acting}"]
    if level == "group":
        return [f"person:{m['person_id']}" for m in plan["group"]
                if m["person_id"] not in (holder, acting) and m["role"] not in ("grid_worker", "director")]
    if level == "grid_worker":
        workers = [m["person_id"] for m in plan["group"] if m["role"] == "grid_worker"]
        return [f"person:{w}" for w in workers] or ["operators"]
    return ["operators"]


def role_of(plan: Doc, role: str) -> str | None:
    return next((m["person_id"] for m in plan["group"] if m["role"] == role), None)


# ---- check-ins --------------------------------------------------------------------------------------------

def raises_request(outcome: str) -> bool:
    return outcome in ("unwell", "needs_help")


def starts_escalation(mode: str, outcome: str) -> bool:
    return mode == "visit" and outcome == "not_home"


def is_contact(mode: str, outcome: str) -> bool:
    """Whether the check-in reached the person, as a child's contact log counts it."""
    return mode in ("visit", "call") and outcome != "not_home"


# What volunteers read about the urgent request; the notes stay in care.
URGENT_WORDS = {"unwell": "关爱探访时发现身体不适，请尽快上门", "needs_help": "关爱探访时发现需要帮助，请尽快上门"}


def answered(occurrences: Iterable[Doc], at: datetime) -> Doc | None:
    """The live deadline a check-in at `at` answers: the earliest whose window has opened."""
    open_ones = [o for o in occurrences if o["state"] in LIVE and o["opens_at"] <= at]
    return min(open_ones, key=lambda o: o["due_at"], default=None)


@dataclass(frozen=True)
class Step:
    step: int
    level: Level
    next_at: datetime | None


def next_step(occurrence: Doc, graces: Sequence[float]) -> Step:
    """The escalation step that follows the one `occurrence` has reached, and when the one after it is due."""
    step = int(occurrence["step"]) + 1
    following = step_at(occurrence["chain_from"], step + 1, graces) if step < len(LEVELS) else None
    return Step(step, LEVELS[step - 1], following)


# ---- reports ----------------------------------------------------------------------------------------------

def month_bounds(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def outcome_of(occurrence: Doc) -> str:
    if occurrence.get("checked_at") is not None:
        return "on_time" if occurrence["checked_at"] <= occurrence["due_at"] else "late"
    return "missed"


def ending_of(occurrence: Doc) -> str:
    if occurrence.get("checked_at") is not None:
        return "checked_in"
    return "plan_ended" if occurrence["state"] == "ended" else "open"


def month_report(plans: Sequence[Doc], occurrences: Sequence[Doc], contacts: dict[str, datetime],
                 start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    """Duties due in [start, end) and already past, how each went, and each resident's last contact."""
    counted = [o for o in occurrences if start <= o["due_at"] < end and o["due_at"] <= now]
    totals = {"due": len(counted), "on_time": 0, "late": 0, "missed": 0, "escalations": 0}
    endings = {"checked_in": 0, "open": 0, "plan_ended": 0}
    per_plan: dict[str, dict[str, int]] = {p["_id"]: {"due": 0, "on_time": 0, "late": 0, "missed": 0, "escalations": 0}
                                           for p in plans}
    for occurrence in counted:
        how = outcome_of(occurrence)
        totals[how] += 1
        line = per_plan.setdefault(occurrence["plan_id"], {k: 0 for k in totals})
        line["due"] += 1
        line[how] += 1
        if occurrence["step"] > 0:
            totals["escalations"] += 1
            line["escalations"] += 1
            endings[ending_of(occurrence)] += 1
    residents = []
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["plan_id", "resident_ref", "due", "on_time", "late", "missed", "escalations", "last_contact"])
    for plan in sorted(plans, key=lambda p: p["_id"]):
        last = contacts.get(plan["_id"])
        residents.append({"plan_id": plan["_id"], "resident_ref": plan["resident_ref"], "last_contact": last})
        line = per_plan[plan["_id"]]
        writer.writerow([plan["_id"], plan["resident_ref"], line["due"], line["on_time"], line["late"], line["missed"],
                         line["escalations"], last.isoformat() if last else ""])
    return {**totals, "endings": endings, "residents": residents, "csv": text.getvalue()}
