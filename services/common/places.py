"""Places: districts, streets, communities and grids, with the names people read and the clock they live by.

One file (LINLI_PLACES, default places.yaml beside this module) is read by every service: intake checks
requests and registrations against it, the matcher widens its search along it, and every text a person
reads names a place by its name here, in the district's own time zone.

A district in the older matcher format (grids straight under the district, each with its community and
street ids) is read too, with the ids standing in for names.
"""

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

DEFAULT_PATH = Path(__file__).with_name("places.yaml")
DEFAULT_TIMEZONE = "Asia/Shanghai"


def places_path() -> Path:
    return Path(os.environ.get("LINLI_PLACES") or DEFAULT_PATH)


@dataclass(frozen=True)
class Grid:
    id: str
    name: str
    name_en: str
    community: str
    street: str
    neighbours: tuple[str, ...]


@dataclass(frozen=True)
class District:
    id: str
    name: str
    name_en: str
    timezone: str
    streets: dict[str, dict[str, str]]
    communities: dict[str, dict[str, str]]
    grids: dict[str, Grid]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _district(district_id: str, raw: dict[str, Any]) -> District:
    if "grids" not in raw:  # the older format: {grid: {community, street, neighbours}}
        raw = {
            "grids": {g: {**about, "name": g} for g, about in raw.items() if isinstance(about, dict)},
            "communities": {
                about["community"]: {"name": about["community"], "street": about.get("street", "")}
                for about in raw.values() if isinstance(about, dict) and about.get("community")
            },
        }
    communities = {
        cid: {"name": str(c.get("name", cid)), "name_en": str(c.get("name_en", "")), "street": str(c.get("street", ""))}
        for cid, c in (raw.get("communities") or {}).items()
    }
    streets = {
        sid: {"name": str(s.get("name", sid)), "name_en": str(s.get("name_en", ""))}
        for sid, s in (raw.get("streets") or {}).items()
    }
    grids = {}
    for gid, g in (raw.get("grids") or {}).items():
        community = str(g.get("community", ""))
        grids[gid] = Grid(
            id=gid,
            name=str(g.get("name", gid)),
            name_en=str(g.get("name_en", "")),
            community=community,
            street=str(g.get("street") or communities.get(community, {}).get("street", "")),
            neighbours=tuple(g.get("neighbours") or ()),
        )
    return District(
        id=district_id,
        name=str(raw.get("name", district_id)),
        name_en=str(raw.get("name_en", "")),
        timezone=str(raw.get("timezone", DEFAULT_TIMEZONE)),
        streets=streets,
        communities=communities,
        grids=grids,
    )


@dataclass(frozen=True)
class Places:
    districts: dict[str, District] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> "Places":
        raw = yaml.safe_load((path or places_path()).read_text(encoding="utf-8")) or {}
        return cls({str(d): _district(str(d), about or {}) for d, about in raw.items()})

    def district(self, district: str) -> District | None:
        return self.districts.get(district)

    def grid(self, district: str, grid: str) -> Grid | None:
        found = self.districts.get(district)
        return found.grids.get(grid) if found else None

    def problems(self, district: str, grids: list[str]) -> list[dict[str, Any]]:
        """What is wrong with a district and its grids, each with the valid choices; empty when all is known."""
        found = self.districts.get(district)
        if found is None:
            return [{"field": "district", "problem": f"unknown district {district!r}", "choices": sorted(self.districts)}]
        return [
            {"field": "grid", "problem": f"unknown grid {g!r} in {found.name}", "choices": sorted(found.grids)}
            for g in grids if g not in found.grids
        ]

    # Names, for every text a person reads; an unknown id stands for itself.
    def district_name(self, district: str, lang: str = "zh") -> str:
        found = self.districts.get(district)
        return (found.name_en if lang == "en" and found.name_en else found.name) if found else district

    def grid_name(self, district: str, grid: str, lang: str = "zh") -> str:
        found = self.grid(district, grid)
        return (found.name_en if lang == "en" and found.name_en else found.name) if found else grid

    def community_of(self, district: str, grid: str) -> str:
        found = self.grid(district, grid)
        return found.community if found else ""

    def community_name(self, district: str, community: str, lang: str = "zh") -> str:
        found = self.districts.get(district)
        about = found.communities.get(community) if found else None
        if not about:
            return community
        return about["name_en"] if lang == "en" and about.get("name_en") else about["name"]

    def place_name(self, district: str, grid: str, lang: str = "zh") -> str:
        """The community and grid, as a committee would say it: 泉外社区泉外第一网格."""
        community = self.community_name(district, self.community_of(district, grid), lang)
        grid_name = self.grid_name(district, grid, lang)
        if not community or community == grid_name:
            return grid_name
        return f"{community} {grid_name}" if lang == "en" else f"{community}{grid_name}"

    # The hierarchy the matcher widens along.
    def tier(self, district: str, grid: str, volunteer_grids: list[str]) -> str:
        """How near a volunteer's grids lie to a request's grid: grid, neighbour, community, street or district."""
        if grid in volunteer_grids:
            return "grid"
        here = self.grid(district, grid)
        if here is None:
            return "district"
        if set(here.neighbours) & set(volunteer_grids):
            return "neighbour"
        theirs = [g for g in (self.grid(district, v) for v in volunteer_grids) if g is not None]
        if here.community and any(g.community == here.community for g in theirs):
            return "community"
        if here.street and any(g.street == here.street for g in theirs):
            return "street"
        return "district"

    def grids_within(self, district: str, grid: str, tiers: tuple[str, ...]) -> list[str] | None:
        """The grids a stage may draw volunteers from; None means the whole district."""
        if "district" in tiers:
            return None
        here = self.grid(district, grid)
        allowed = {grid}
        if here is None:
            return sorted(allowed)
        if "neighbour" in tiers:
            allowed |= set(here.neighbours)
        everything = self.districts[district].grids.values()
        if "community" in tiers and here.community:
            allowed |= {g.id for g in everything if g.community == here.community}
        if "street" in tiers and here.street:
            allowed |= {g.id for g in everything if g.street == here.street}
        return sorted(allowed)

    # One clock for every text a person reads.
    def zone(self, district: str) -> ZoneInfo:
        found = self.districts.get(district)
        return found.zone if found else ZoneInfo(DEFAULT_TIMEZONE)

    def local(self, moment: datetime, district: str) -> datetime:
        return moment.astimezone(self.zone(district))


def format_local(moment: datetime | None, zone: ZoneInfo, lang: str = "zh") -> str:
    """A time as a person in the district reads it: 12月2日 09:30 (or 2 Dec 09:30)."""
    if moment is None:
        return ""
    local = moment.astimezone(zone)
    if lang == "en":
        return local.strftime("%-d %b %H:%M")
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def format_window(start: datetime | None, end: datetime | None, zone: ZoneInfo, lang: str = "zh") -> str:
    """A time window in words; an open window is as soon as possible."""
    if start is None and end is None:
        return "as soon as possible" if lang == "en" else "尽快"
    if start is not None and end is not None:
        a, b = start.astimezone(zone), end.astimezone(zone)
        tail = f"{b:%H:%M}" if a.date() == b.date() else format_local(b, zone, lang)
        return f"{format_local(a, zone, lang)}–{tail}"
    if start is not None:
        return f"from {format_local(start, zone, lang)}" if lang == "en" else f"{format_local(start, zone, lang)}起"
    return f"by {format_local(end, zone, lang)}" if lang == "en" else f"{format_local(end, zone, lang)}前"
