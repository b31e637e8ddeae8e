"""The workload both runs share: the district, the volunteers and the requests, planned ahead."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


ROOT = Path(__file__).resolve().parent.parent.parent

DISTRICT = "benchdist"
GRIDS = [f"g-{n:02d}" for n in range(5)]
CATEGORIES = ["repair", "elderly", "meals", "tutoring", "health"]
FREE = ""

# The floor's own names: a separate stream and databases on the same servers.
FLOOR_STREAM = "BENCHFLOOR"
FLOOR_EVT = "benchfloor.evt"  # events: benchfloor.evt.<entity>.<verb>.<district>
FLOOR_SUBMIT = "benchfloorapi.submit"  # outside the stream's subjects, a core request like intake.submit
FLOOR_ECHO = "benchfloorapi.echo"
FLOOR_INTAKE_DB = "benchfloor_intake"
FLOOR_MATCHER_DB = "benchfloor_matcher"
FLOOR_UNITS_DB = "benchfloor_units"
FLOOR_DURABLE = "floor-matcher"

OUTCOMES = ("volunteer.assigned", "request.unmatched")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------- workload


@dataclass(frozen=True)
class Volunteer:
    name: str
    phone: str
    grid: str
    skills: list[str]
    capacity: int

    def call(self) -> dict[str, Any]:
        return {"name": self.name, "phone": self.phone, "district": DISTRICT, "grids": [self.grid],
                "skills": self.skills, "capacity": self.capacity}


@dataclass(frozen=True)
class Req:
    key: str  # the idempotency key; the request id is what the submit reply says
    payload: dict[str, Any]


def write_places(data_dir: Path) -> Path:
    """The bench's district and grids, for intake to accept (LINLI_PLACES): the same grid or the district."""
    path = data_dir / "places.yaml"
    grids = {g: {"name": f"基准网格{g[-2:]}"} for g in GRIDS}
    path.write_text(yaml.safe_dump({DISTRICT: {"name": "基准测试区", "grids": grids}}, allow_unicode=True),
                    encoding="utf-8")
    return path


def volunteers_plan(count: int, capacity: int) -> list[Volunteer]:
    # Each volunteer: one grid, two categories; every category is covered by ~2/5 of the roster.
    return [
        Volunteer(f"志愿者{i}", f"139{i:08d}", GRIDS[i % len(GRIDS)],
                  [CATEGORIES[(i // len(GRIDS)) % 5], CATEGORIES[(i // len(GRIDS) + 2) % 5]], capacity)
        for i in range(count)
    ]


def requests_plan(count: int, tag: str, rng: random.Random) -> list[Req]:
    catalog = yaml.safe_load((ROOT / "services" / "intake" / "catalog.yaml").read_text(encoding="utf-8"))
    items = {c["id"]: [item["id"] for item in c["items"]] for c in catalog["categories"]}
    plan = []
    for i in range(count):
        category = rng.choice(CATEGORIES)
        key = f"bench-{tag}-{i:06d}"
        payload = {
            "idempotency_key": key, "district": DISTRICT, "grid": rng.choice(GRIDS),
            "service": rng.choice(items[category]), "description": f"基准测试请求 {i}: 需要上门帮忙",
            "urgency": rng.choice(["routine", "soon", "urgent"]), "channel": rng.choice(["kiosk", "hotline", "app"]),
            "resident": {"name": f"居民{i}", "phone": f"138{i:08d}", "address": f"泉外园{i % 30}栋{i % 6}单元{i % 900}"},
        }
        plan.append(Req(key, payload))
    return plan
