"""Reports over ledger entries: pure computations, then CSV, the wall chart and the service certificate."""

import csv
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from services.common.places import Places, places_path

Entry = Mapping[str, Any]
Rating = Mapping[str, Any]

# China has kept UTC+8 without daylight saving since 1991, so a fixed offset is exact for every entry
# and needs no tz database on the machine.
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
CENT = Decimal("0.01")


@functools.lru_cache(maxsize=4)
def _loaded(path: Path) -> Places:
    return Places.load(path)


def configured_places() -> Places:
    """The places file every service reads (LINLI_PLACES): names and each district's clock."""
    return _loaded(places_path())

# What each entry kind contributes. Hours are the volunteer's currency: service, corrections and
# hours carried over from another district all count; a bonus or a redemption moves points only.
HOUR_KINDS = frozenset({"credit", "adjust", "import"})
EARNING_KINDS = frozenset({"credit", "bonus", "adjust", "import"})
SPENDING_KINDS = frozenset({"spend"})
KNOWN_KINDS = EARNING_KINDS | SPENDING_KINDS | {"confirm"}

KIND_LABELS = {
    "credit": "服务 service",
    "bonus": "奖励 bonus",
    "spend": "兑换 spend",
    "adjust": "调整 adjust",
    "import": "转入 import",
    "confirm": "确认 confirm",
}


def month_of(at: float, zone: tzinfo = CHINA) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m")


def parse_month(text: str) -> tuple[int, int]:
    year, sep, month = text.partition("-")
    if not (sep and len(year) == 4 and year.isdigit() and len(month) == 2 and month.isdigit()):
        raise ValueError(f"{text!r} is not a month like 2026-11")
    if not 1 <= int(month) <= 12:
        raise ValueError(f"{text!r}: the month must be 01 to 12")
    return int(year), int(month)


def month_span(month: str, zone: tzinfo = CHINA) -> tuple[float, float]:
    """[start, end) of a calendar month on the district's clock (Shanghai time by default), as epoch seconds
    like the entries' `at`."""
    year, number = parse_month(month)
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def fact_time(entry: Entry) -> float:
    # `at` is when the service happened; an entry written before `at` existed falls back to its posting.
    at = entry.get("at", entry.get("posted"))
    if at is None:
        raise ValueError(f"entry {entry.get('_id')!r} has neither `at` nor `posted`")
    return float(at)


def text(entry: Entry, name: str) -> str:
    # Fields added after the first entries were written read as "" on the old ones.
    return str(entry.get(name) or "")


def cents(entry: Entry, name: str) -> int:
    return int(entry.get(name) or 0)


def local_month(entry: Entry, places: Places) -> str:
    # Each entry's month on its own district's clock: a service at 00:30 on the 1st is that month's.
    return month_of(fact_time(entry), places.zone(text(entry, "district")))


KEYS: dict[str, Callable[[Entry, Places], str]] = {
    "district": lambda e, _: text(e, "district"),
    "month": local_month,
    "year": lambda e, places: local_month(e, places)[:4],
    "grid": lambda e, _: text(e, "grid"),
    "team": lambda e, _: text(e, "team"),
    "volunteer": lambda e, _: text(e, "volunteer_id"),
}

HEADINGS = {
    "district": "社区 Community",
    "month": "月份 Month",
    "year": "年份 Year",
    "grid": "网格 Grid",
    "team": "服务队 Team",
    "volunteer": "志愿者编号 Volunteer ID",
}

# Shown where a field was never filled in, so a reader sees the gap instead of an empty cell.
BLANKS = {"grid": "未填网格", "team": "未分队", "district": "未填社区", "volunteer": "未知志愿者"}


def check(entry: Entry) -> None:
    """Refuses what a report cannot place, so the totals always add up to the raw entries."""
    kind = text(entry, "kind")
    if kind not in KNOWN_KINDS:
        raise ValueError(
            f"entry {entry.get('_id')!r} has kind {kind!r}, which reports do not know; "
            f"teach services/ledger/reports.py what it counts before reporting on it"
        )
    if kind not in HOUR_KINDS and cents(entry, "hours_cents"):
        raise ValueError(f"entry {entry.get('_id')!r} of kind {kind!r} carries hours, which only "
                         f"{', '.join(sorted(HOUR_KINDS))} may")
    if kind not in EARNING_KINDS | SPENDING_KINDS and cents(entry, "points_cents"):
        raise ValueError(f"entry {entry.get('_id')!r} of kind {kind!r} carries points")


def from_cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2).quantize(CENT)


@dataclass(frozen=True)
class Figures:
    services: int
    residents: int
    # Services whose credit names no resident (entries from before residents were recorded): the
    # residents figure is then a lower bound, and the reports say so instead of printing a false count.
    services_without_resident: int
    hours: Decimal
    points_earned: Decimal
    points_spent: Decimal
    ratings: int
    stars: int

    @property
    def average_rating(self) -> Decimal | None:
        # No ratings is no average, not an average of zero stars.
        if not self.ratings:
            return None
        return (Decimal(self.stars) / Decimal(self.ratings)).quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def points_balance(self) -> Decimal:
        return self.points_earned - self.points_spent


# A service is one volunteer's work on one request: a request sent out again after a bad rating and served
# by someone else is a second service, rated on its own.
Service = tuple[str, str]


@dataclass
class Tally:
    services: set[Service] = field(default_factory=set)
    residents: set[str] = field(default_factory=set)
    with_resident: set[Service] = field(default_factory=set)
    hours: int = 0
    earned: int = 0
    spent: int = 0

    def add(self, entry: Entry) -> None:
        kind = text(entry, "kind")
        if kind == "credit":
            # A service is a request; a credit without one (written by hand) is a service of its own.
            service = (text(entry, "request_id") or f"entry:{entry.get('_id')}", text(entry, "volunteer_id"))
            self.services.add(service)
            if resident := text(entry, "resident_ref"):
                self.residents.add(resident)
                self.with_resident.add(service)
        if kind in HOUR_KINDS:
            self.hours += cents(entry, "hours_cents")
        if kind in EARNING_KINDS:
            self.earned += cents(entry, "points_cents")
        if kind in SPENDING_KINDS:
            self.spent -= cents(entry, "points_cents")

    def figures(self, stars: Mapping[Service, int]) -> Figures:
        rated = [found for service in self.services if (found := stars_of(stars, *service)) is not None]
        return Figures(
            services=len(self.services),
            residents=len(self.residents),
            services_without_resident=len(self.services - self.with_resident),
            hours=from_cents(self.hours),
            points_earned=from_cents(self.earned),
            points_spent=from_cents(self.spent),
            ratings=len(rated),
            stars=sum(rated),
        )


@dataclass(frozen=True)
class Row:
    key: tuple[str, ...]
    figures: Figures


@dataclass(frozen=True)
class Table:
    by: tuple[str, ...]
    rows: tuple[Row, ...]
    # Counted over all entries at once: a resident served in two grids is one resident here.
    total: Figures


def stars_by_service(ratings: Iterable[Rating]) -> dict[Service, int]:
    # Ratings are kept per request and volunteer; those from before were keyed on the request alone.
    return {(str(r.get("request_id") or r["_id"]), str(r.get("volunteer_id") or "")): int(r["stars"])
            for r in ratings}


def stars_of(stars: Mapping[Service, int], request_id: str, volunteer_id: str) -> int | None:
    found = stars.get((request_id, volunteer_id))
    return stars.get((request_id, "")) if found is None else found


def tabulate(
    entries: Iterable[Entry], ratings: Iterable[Rating], by: Sequence[str], places: Places | None = None
) -> Table:
    unknown = [d for d in by if d not in KEYS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {sorted(KEYS)}")
    places = places or configured_places()
    stars = stars_by_service(ratings)
    groups: dict[tuple[str, ...], Tally] = {}
    total = Tally()
    for entry in entries:
        check(entry)
        key = tuple(KEYS[d](entry, places) for d in by)
        groups.setdefault(key, Tally()).add(entry)
        total.add(entry)
    # Blank keys (no team, no grid) sort last: the named groups are what readers look for first.
    ordered = sorted(groups.items(), key=lambda item: tuple((value == "", value) for value in item[0]))
    rows = tuple(Row(key, tally.figures(stars)) for key, tally in ordered)
    return Table(tuple(by), rows, total.figures(stars))


def label(dimension: str, value: str, district: str = "", places: Places | None = None) -> str:
    """What a person reads for a group: a place by its name (community and grid), a blank as a gap."""
    if not value:
        return BLANKS.get(dimension, "—")
    places = places or configured_places()
    if dimension == "grid":
        return places.place_name(district, value)
    if dimension == "district":
        return places.district_name(value)
    return value


@dataclass(frozen=True)
class MonthlyReport:
    district: str
    month: str
    table: Table
    places: Places = field(default_factory=configured_places)

    @property
    def by(self) -> str:
        return self.table.by[0]

    @property
    def district_name(self) -> str:
        return self.places.district_name(self.district)

    def label(self, dimension: str, value: str) -> str:
        return label(dimension, value, self.district, self.places)


def monthly_report(
    district: str, month: str, by: str, entries: Iterable[Entry], ratings: Iterable[Rating],
    places: Places | None = None,
) -> MonthlyReport:
    places = places or configured_places()
    start, end = month_span(month, places.zone(district))
    # The store already asks for this window; filtering again keeps the report right whatever it is given.
    inside = [e for e in entries if text(e, "district") == district and start <= fact_time(e) < end]
    return MonthlyReport(district, month, tabulate(inside, ratings, [by], places), places)


@dataclass(frozen=True)
class StatementLine:
    at: float
    kind: str
    request_id: str
    service: str
    grid: str
    district: str
    hours: Decimal
    points: Decimal
    balance: Decimal
    stars: int | None


@dataclass(frozen=True)
class Statement:
    volunteer_id: str
    months: Table
    lines: tuple[StatementLine, ...]
    places: Places = field(default_factory=configured_places)

    def when(self, line: StatementLine) -> str:
        """The line's date and time on its district's clock."""
        return datetime.fromtimestamp(line.at, self.places.zone(line.district)).strftime("%Y-%m-%d %H:%M")

    def where(self, line: StatementLine) -> tuple[str, str]:
        """(district name, community and grid name)."""
        grid = self.places.place_name(line.district, line.grid) if line.grid else ""
        return self.places.district_name(line.district) if line.district else "", grid


def statement(
    volunteer_id: str, entries: Iterable[Entry], ratings: Iterable[Rating], places: Places | None = None
) -> Statement:
    places = places or configured_places()
    mine = sorted((e for e in entries if text(e, "volunteer_id") == volunteer_id),
                  key=lambda e: (fact_time(e), float(e.get("posted") or 0), str(e.get("_id"))))
    ratings = list(ratings)
    stars = stars_by_service(ratings)
    lines: list[StatementLine] = []
    balance = 0
    for entry in mine:
        check(entry)
        balance += cents(entry, "points_cents")
        kind = text(entry, "kind")
        lines.append(StatementLine(
            at=fact_time(entry),
            kind=kind,
            request_id=text(entry, "request_id"),
            service=text(entry, "service") or text(entry, "category"),
            grid=text(entry, "grid"),
            district=text(entry, "district"),
            hours=from_cents(cents(entry, "hours_cents") if kind in HOUR_KINDS else 0),
            points=from_cents(cents(entry, "points_cents")),
            balance=from_cents(balance),
            stars=stars_of(stars, text(entry, "request_id"), volunteer_id) if kind == "credit" else None,
        ))
    return Statement(volunteer_id, tabulate(mine, ratings, ["month"], places), tuple(lines), places)


# One A4 page in large print holds about a year of months; a longer record is shown by year.
CERTIFICATE_MONTHS = 12


@dataclass(frozen=True)
class Certificate:
    volunteer_id: str
    name: str
    districts: tuple[str, ...]
    first_month: str
    last_month: str
    periods: Table
    issued: date
    issuer: str

    @property
    def total(self) -> Figures:
        return self.periods.total


def local_date(moment: datetime | date, district: str, places: Places | None = None) -> date:
    """The day a person in the district reads: a chart and a certificate made in the same minute agree."""
    if not isinstance(moment, datetime):
        return moment
    return moment.astimezone((places or configured_places()).zone(district)).date()


def certificate(
    volunteer_id: str, name: str, entries: Iterable[Entry], ratings: Iterable[Rating], issued: datetime | date,
    issuer: str, places: Places | None = None,
) -> Certificate:
    if not name.strip():
        raise ValueError("a certificate needs the volunteer's name")
    # Service and what was earned by it; spending points is no service and does not belong on a certificate.
    mine = [e for e in entries if text(e, "volunteer_id") == volunteer_id and text(e, "kind") in EARNING_KINDS]
    if not mine:
        raise ValueError(f"the ledger has no entries for volunteer {volunteer_id!r}: there is nothing to certify")
    places = places or configured_places()
    ratings = list(ratings)
    months = sorted({local_month(e, places) for e in mine})
    by = "month" if len(months) <= CERTIFICATE_MONTHS else "year"
    home = max((text(e, "district") for e in mine), key=lambda d: (d != "", d))
    return Certificate(volunteer_id, name.strip(), served_in(mine, places), months[0], months[-1],
                       tabulate(mine, ratings, [by], places), local_date(issued, home, places), issuer)


def served_in(entries: Sequence[Entry], places: Places) -> tuple[str, ...]:
    """The communities served, by name; the districts' names where no grid was recorded."""
    communities = {places.community_name(text(e, "district"), community)
                   for e in entries if (community := places.community_of(text(e, "district"), text(e, "grid")))}
    if communities:
        return tuple(sorted(communities))
    return tuple(sorted({places.district_name(text(e, "district")) for e in entries} - {""}))


# ---------------------------------------------------------------- showing numbers to people


def plain(amount: Decimal) -> str:
    """12.50 -> "12.5", 3.00 -> "3": the same exact value, easier to read on a wall."""
    text_ = f"{amount:f}"
    return text_.rstrip("0").rstrip(".") if "." in text_ else text_


def month_words(month: str) -> str:
    year, number = parse_month(month)
    return f"{year}年{number}月"


def residents_words(f: Figures) -> str:
    if f.services and f.services_without_resident == f.services:
        return "服务居民人数未登记"
    return f"服务居民{'至少' if f.services_without_resident else ''} {f.residents} 人"


def headline(total: Figures) -> str:
    return f"本月服务 {total.services} 次，{residents_words(total)}，志愿时长 {plain(total.hours)} 小时"


def rating_words(figures: Figures) -> str:
    average = figures.average_rating
    return "暂无评价" if average is None else f"平均 {plain(average)} 星（{figures.ratings} 条评价）"


# ---------------------------------------------------------------- CSV

# Column headings say what each number includes, so a spreadsheet never needs this file to be read.
FIGURE_HEADINGS = [
    "服务次数 Services",
    "服务居民(人) Residents served",
    "未登记居民的服务 Services without resident recorded",
    "志愿时长(小时,含服务/调整/转入) Hours (service+adjust+import)",
    "获得积分(含服务/奖励/调整/转入) Points earned (service+bonus+adjust+import)",
    "使用积分 Points spent",
    "评价数 Ratings",
    "平均评分 Average rating",
]
TOTAL = "合计 Total"


def figure_cells(f: Figures) -> list[str]:
    average = f.average_rating
    return [str(f.services), str(f.residents), str(f.services_without_resident), str(f.hours),
            str(f.points_earned), str(f.points_spent), str(f.ratings), "" if average is None else str(average)]


def table_rows(
    table: Table, context: Mapping[str, str] | None = None, named: Callable[[str, str], str] = label
) -> list[list[str]]:
    """Header, one row per group, then the total; `context` adds leading columns such as the month."""
    context = context or {}
    lead = [HEADINGS.get(k, k) for k in context]
    values = list(context.values())
    rows = [lead + [HEADINGS[d] for d in table.by] + FIGURE_HEADINGS]
    for row in table.rows:
        keys = [named(d, v) for d, v in zip(table.by, row.key)]
        rows.append(values + keys + figure_cells(row.figures))
    rows.append(values + [TOTAL] * len(table.by) + figure_cells(table.total))
    return rows


def monthly_rows(report: MonthlyReport) -> list[list[str]]:
    return table_rows(report.table, {"district": report.district_name, "month": report.month}, report.label)


STATEMENT_HEADINGS = [
    "日期 Date", "类别 Kind", "请求编号 Request ID", "服务项目 Service", "社区 Community", "网格 Grid",
    "时长(小时) Hours", "积分 Points", "积分余额 Balance", "评分 Stars",
]


def statement_rows(s: Statement) -> list[list[str]]:
    rows = [STATEMENT_HEADINGS]
    for line in s.lines:
        rows.append([
            s.when(line),
            KIND_LABELS.get(line.kind, line.kind),
            line.request_id, line.service, *s.where(line),
            str(line.hours), str(line.points), str(line.balance),
            "" if line.stars is None else str(line.stars),
        ])
    return rows


def write_csv(path: Path, rows: Iterable[Sequence[str]]) -> None:
    # The BOM is what makes Excel on a Chinese Windows read UTF-8 instead of GBK.
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        csv.writer(out).writerows(rows)


# ---------------------------------------------------------------- fonts

FONT_PACKAGE = "pylopdf-fonts-zh-cn"


class NoChineseFont(RuntimeError):
    pass


def cjk_font(style: Literal["sans", "serif"] = "sans") -> Path:
    """A font with Simplified Chinese glyphs: LINLI_CJK_FONT if set, else the one the pip package ships."""
    if configured := os.environ.get("LINLI_CJK_FONT"):
        path = Path(configured)
        if not path.is_file():
            raise NoChineseFont(f"LINLI_CJK_FONT={configured} is not a font file")
        return path
    try:
        import pylopdf_fonts_zh_cn as fonts
    except ImportError:
        raise NoChineseFont(
            f"no Chinese font: install the {FONT_PACKAGE} package (pip install -e . installs it), "
            f"or set LINLI_CJK_FONT to a .otf/.ttf file with Simplified Chinese glyphs"
        ) from None
    return Path(fonts.serif_path() if style == "serif" else fonts.sans_path())


@functools.lru_cache(maxsize=4)
def _characters(font: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    with TTFont(font, lazy=True, fontNumber=0) as parsed:
        return frozenset(parsed.getBestCmap())


def require_glyphs(font: Path, texts: Iterable[str]) -> None:
    """Stops before drawing boxes (tofu) where characters should be: a report nobody can read is worse than none."""
    have = _characters(font)
    missing = sorted({ch for t in texts for ch in t if not ch.isspace() and ord(ch) not in have})
    if missing:
        raise NoChineseFont(f"the font {font} has no glyphs for {''.join(missing)!r}; "
                            f"install {FONT_PACKAGE} or point LINLI_CJK_FONT at a font that has them")


# ---------------------------------------------------------------- the wall chart

CHART_BARS = 12  # more bars than this cannot be read from across a room; the rest share one bar


def chart_bars(table: Table, named: Callable[[str, str], str] = label) -> list[tuple[str, Decimal]]:
    """Largest first; beyond CHART_BARS the smallest groups are summed into one, so the bars still add up."""
    dimension = table.by[0]
    ranked = sorted(table.rows, key=lambda r: (-r.figures.hours, r.key))
    bars = [(named(dimension, r.key[0]), r.figures.hours) for r in ranked[:CHART_BARS]]
    rest = ranked[CHART_BARS:]
    if rest:
        rest_hours = sum((r.figures.hours for r in rest), Decimal("0.00"))
        bars.append((f"其他 {len(rest)} {UNITS.get(dimension, '组')}", rest_hours))
    return bars


BY_WORDS = {"grid": "各网格", "team": "各服务队", "volunteer": "各志愿者"}
UNITS = {"grid": "个网格", "team": "个服务队", "volunteer": "位志愿者"}
LABEL_CHARACTERS = 14


def short_label(name: str) -> str:
    # Grid names often differ only at the end ("…第9组", "…第10组"): keep both ends, drop the middle.
    if len(name) <= LABEL_CHARACTERS:
        return name
    head = (LABEL_CHARACTERS - 1) // 2
    return f"{name[:head]}…{name[head + 1 - LABEL_CHARACTERS:]}"


def chart_texts(report: MonthlyReport, community: str | None, made: datetime | date) -> dict[str, str]:
    total = report.table.total
    made = local_date(made, report.district, report.places)
    return {
        "title": f"{community or report.district_name}  {month_words(report.month)}志愿服务月报",
        "headline": headline(total),
        "points": f"获得积分 {plain(total.points_earned)} 分 · 使用积分 {plain(total.points_spent)} 分 · "
                  f"居民评价 {rating_words(total)}",
        "axis": f"{BY_WORDS.get(report.by, report.by)}志愿时长（小时）",
        "empty": "本月暂无志愿服务记录",
        "footer": f"数据来源：邻里志愿服务台账　统计口径：时长含服务、调整、转入　制表日期：{date_words(made)}",
    }


def render_chart(
    report: MonthlyReport, path: Path, community: str | None = None, made: datetime | date | None = None
) -> None:
    """An A4 landscape poster: headline numbers in large print over a bar chart of hours. PNG or SVG by suffix."""
    if path.suffix.lower() not in {".png", ".svg"}:
        raise ValueError(f"{path}: the chart is written as .png or .svg")
    # Imported here: matplotlib takes a second to load, and only the chart needs it.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.font_manager import FontProperties

    font = cjk_font("sans")
    words = chart_texts(report, community, made or datetime.now(timezone.utc))
    bars = chart_bars(report.table, report.label)
    names = [short_label(name) for name, _ in bars]
    require_glyphs(font, [*words.values(), *names])
    at = functools.partial(FontProperties, fname=str(font))

    fig = plt.figure(figsize=(11.69, 8.27), dpi=150)
    try:
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]

        def line(y: float, key: str, size: float, color: str) -> None:
            # A long community name or a big number shrinks its own line instead of running off the page.
            shown = fig.text(0.5, y, words[key], ha="center", va="center", fontproperties=at(size=size), color=color)
            while shown.get_window_extent(renderer).width > 0.95 * fig.bbox.width and size > 10:
                size -= 1
                shown.set_fontproperties(at(size=size))

        line(0.935, "title", 26, "#333333")
        line(0.855, "headline", 27, "#b71c1c")
        line(0.785, "points", 17, "#333333")
        line(0.03, "footer", 11, "#666666")
        ax = fig.add_axes((0.22, 0.12, 0.70, 0.58))
        ax.set_title(words["axis"], fontproperties=at(size=18), loc="left", pad=12)
        if bars:
            values = [float(hours) for _, hours in bars]
            positions = list(range(len(bars)))
            ax.barh(positions, values, color="#c62828", height=0.6)
            ax.set_yticks(positions, names)
            # Largest at the top, where the eye starts; room for six bars at least, so one bar is not a wall.
            ax.set_ylim(max(len(bars), 6) - 0.5, -0.5)
            ax.spines["left"].set_bounds(len(bars) - 0.5, -0.5)
            top = max(values) or 1.0
            ax.set_xlim(0, top * 1.18)
            label_size = 17 if len(bars) <= 8 else 13
            for y, (_, hours) in zip(positions, bars):
                ax.text(float(hours) + top * 0.01, y, f"{plain(hours)} 小时", va="center",
                        fontproperties=at(size=label_size), color="#222222")
            for tick in ax.get_yticklabels():
                tick.set_fontproperties(at(size=label_size))
        else:
            ax.set_yticks([])
            ax.spines["left"].set_visible(False)
            ax.text(0.5, 0.5, words["empty"], ha="center", va="center", transform=ax.transAxes,
                    fontproperties=at(size=24), color="#666666")
        ax.set_xticks([])  # the value is written at each bar; a scale only distracts
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
        # Searchable text, since the glyphs themselves are drawn as shapes.
        metadata = {"Title": words["title"], "Description": words["headline"]}
        fig.savefig(path, format=path.suffix.lower()[1:], metadata=metadata)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- the service certificate


def date_words(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def period_words(c: Certificate) -> str:
    first, last = month_words(c.first_month), month_words(c.last_month)
    return first if first == last else f"{first}至{last}"


def certificate_texts(c: Certificate) -> dict[str, str]:
    t = c.total
    where = "、".join(c.districts) or "本社区"
    # A certificate states only what the ledger recorded: no residents line when none were recorded.
    served = "" if t.services_without_resident == t.services else f"{residents_words(t)}，"
    return {
        "title": "志愿服务证明",
        "subtitle": "Certificate of Volunteer Service",
        # Lines broken by hand: a wrapping library would split "15 次" or "225" across lines.
        "body_1": f"兹证明 {c.name} 同志，",
        "body_2": f"志愿者编号 {c.volunteer_id}，",
        "body_3": f"于{period_words(c)}在 {where} 参加志愿服务，",
        "body_4": f"累计服务 {t.services} 次，{served}获得志愿积分 {plain(t.points_earned)} 分。",
        "hours_label": "累计志愿服务时长",
        "hours": f"{plain(t.hours)} 小时",
        "closing": "特此证明。",
        "issuer": c.issuer,
        "seal": "（盖章）",
        "issued": f"开具日期：{date_words(c.issued)}",
        "footer": "本证明依据邻里志愿服务台账记录生成。时长含服务、调整与转入记录；志愿者编号可用于核验。",
    }


CERTIFICATE_COLUMNS = [("月份", 46.0), ("服务次数", 34.0), ("服务时长（小时）", 46.0), ("获得积分", 34.0)]


def certificate_cells(c: Certificate) -> list[list[str]]:
    """Heading, one row per month (or year), and the total."""
    by_month = c.periods.by == ("month",)
    rows = [["月份" if by_month else "年份", *(name for name, _ in CERTIFICATE_COLUMNS[1:])]]
    for r in c.periods.rows:
        period = month_words(r.key[0]) if by_month else f"{r.key[0]}年"
        rows.append([period, str(r.figures.services), plain(r.figures.hours), plain(r.figures.points_earned)])
    t = c.total
    rows.append(["合计", str(t.services), plain(t.hours), plain(t.points_earned)])
    return rows


def render_certificate(c: Certificate, path: Path) -> None:
    """One A4 page in large print, with the Chinese fonts embedded so it prints the same anywhere."""
    from fpdf import FPDF  # imported here: only the certificate needs it

    sans, serif = cjk_font("sans"), cjk_font("serif")
    words = certificate_texts(c)
    cells = certificate_cells(c)
    require_glyphs(sans, [*words.values(), *(cell for row in cells for cell in row)])
    require_glyphs(serif, [words["title"]])

    red, ink, grey = (170, 30, 30), (30, 30, 30), (110, 110, 110)
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)  # one page, always: the layout below is sized to fit
    pdf.set_title(f"{words['title']} {c.name}")
    pdf.set_subject(f"{c.volunteer_id} {words['hours']}")
    pdf.set_creator("linli")
    pdf.add_font("sans", fname=str(sans))
    pdf.add_font("serif", fname=str(serif))
    pdf.add_page()

    pdf.set_draw_color(*red)
    pdf.set_line_width(1.4)
    pdf.rect(10, 10, 190, 277)
    pdf.set_line_width(0.4)
    pdf.rect(13, 13, 184, 271)

    pdf.set_text_color(*red)
    pdf.set_font("serif", size=38)
    pdf.set_xy(15, 22)
    pdf.cell(180, 18, words["title"], align="C")
    pdf.set_text_color(*grey)
    pdf.set_font("sans", size=12)
    pdf.set_xy(15, 40)
    pdf.cell(180, 7, words["subtitle"], align="C")

    pdf.set_text_color(*ink)
    for n, key in enumerate(["body_1", "body_2", "body_3", "body_4"]):
        # A long name or id shrinks its own line rather than running past the border.
        size = 17.0
        pdf.set_font("sans", size=size)
        while pdf.get_string_width(words[key]) > 166 and size > 11:
            size -= 0.5
            pdf.set_font("sans", size=size)
        pdf.set_xy(22, 53 + n * 10)
        pdf.cell(166, 10, words[key])

    # The hours are what the certificate is for: the largest thing on the page after the title.
    y = 96.0
    pdf.set_draw_color(*red)
    pdf.set_line_width(0.6)
    pdf.rect(45, y, 120, 27)
    pdf.set_font("sans", size=15)
    pdf.set_xy(45, y + 2)
    pdf.cell(120, 8, words["hours_label"], align="C")
    pdf.set_text_color(*red)
    pdf.set_font("sans", size=30)
    pdf.set_xy(45, y + 11)
    pdf.cell(120, 14, words["hours"], align="C")

    y += 33
    pdf.set_text_color(*ink)
    width = sum(w for _, w in CERTIFICATE_COLUMNS)
    left = (210 - width) / 2
    # Up to 12 months, a heading and a total must leave room for the signature block below.
    row_height = min(9.0, (236 - y) / len(cells))
    pdf.set_draw_color(*grey)
    pdf.set_line_width(0.2)
    pdf.set_fill_color(245, 228, 228)
    pdf.set_font("sans", size=15 if row_height >= 8.5 else 13)
    for n, row in enumerate(cells):
        pdf.set_xy(left, y + row_height * n)
        shaded = n in (0, len(cells) - 1)
        for cell, (_, w) in zip(row, CERTIFICATE_COLUMNS):
            pdf.cell(w, row_height, cell, border=1, align="C", fill=shaded)

    y = max(y + row_height * len(cells) + 6, 226.0)
    pdf.set_font("sans", size=17)
    pdf.set_xy(24, y)
    pdf.cell(60, 9, words["closing"])
    pdf.set_font("sans", size=16)
    for n, key in enumerate(["issuer", "seal", "issued"]):
        pdf.set_xy(86, y + n * 9)
        pdf.cell(100, 9, words[key], align="R")
    pdf.set_text_color(*grey)
    pdf.set_font("sans", size=9)
    pdf.set_xy(15, 277)
    pdf.cell(180, 5, words["footer"], align="C")
    pdf.output(str(path))
