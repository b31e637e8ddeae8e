from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from services.common.places import DEFAULT_PATH, Places
from services.ledger import reports
from services.ledger.reports import CHINA

pytestmark = pytest.mark.domain


def at(year: int, month: int, day: int, hour: int = 10) -> float:
    return datetime(year, month, day, hour, tzinfo=CHINA).timestamp()


def entry(n: int | str, kind: str = "credit", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": f"e-{n}", "kind": kind, "volunteer_id": "v-1", "district": "quanwai",
                           "hours_cents": 0, "points_cents": 0, "at": at(2026, 11, 10)}
    if kind == "credit":
        doc.update(request_id=f"r-{n}", hours_cents=150, points_cents=1500)
    doc.update(fields)
    return doc


def a_month() -> list[dict[str, Any]]:
    """Two grids, two teams, every kind, one resident served twice and one resident served in both grids."""
    return [
        entry(1, grid="g-01", team="党员先锋队", resident_ref="res-a", hours_cents=150, points_cents=1500),
        entry(2, grid="g-01", team="党员先锋队", resident_ref="res-a", hours_cents=225, points_cents=2250,
              volunteer_id="v-2"),
        entry(3, grid="g-02", team="便民服务队", resident_ref="res-b", hours_cents=100, points_cents=1200),
        entry(4, grid="g-02", team="便民服务队", resident_ref="res-a", hours_cents=75, points_cents=750,
              volunteer_id="v-2"),
        entry(5, "bonus", grid="g-02", points_cents=500),
        entry(6, "spend", grid="g-01", points_cents=-800),
        entry(7, "adjust", grid="g-01", hours_cents=-25, points_cents=-250),
        entry(8, "import", grid="g-02", hours_cents=300, points_cents=3000, volunteer_id="v-3"),
        entry(9, "confirm", grid="g-01", request_id="r-1"),
    ]


RATINGS = [{"_id": "r-1", "stars": 5}, {"_id": "r-2", "stars": 4}, {"_id": "r-3", "stars": 4},
           {"_id": "r-elsewhere", "stars": 1}]


def test_a_month_is_counted_in_shanghai_time() -> None:
    # 00:30 on 1 December in Shanghai is still 30 November in UTC.
    half_past_midnight = datetime.fromisoformat("2026-11-30T16:30:00+00:00").timestamp()
    assert reports.month_of(half_past_midnight) == "2026-12"
    start, end = reports.month_span("2026-12")
    assert start == datetime.fromisoformat("2026-11-30T16:00:00+00:00").timestamp()
    assert end == datetime.fromisoformat("2026-12-31T16:00:00+00:00").timestamp()
    assert start <= half_past_midnight < end


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "202611", "2026-00", "26-11", "2026/11"])
def test_a_malformed_month_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="month"):
        reports.month_span(text)


def test_per_grid_rows_add_up_to_the_community_and_to_the_raw_entries() -> None:
    raw = a_month()
    by_grid = reports.tabulate(raw, RATINGS, ["grid"])
    community = reports.tabulate(raw, RATINGS, ["district"])
    [(key, whole)] = [(row.key, row.figures) for row in community.rows]

    assert key == ("quanwai",) and whole == by_grid.total == community.total
    rows = [row.figures for row in by_grid.rows]
    assert sum(f.hours for f in rows) == whole.hours == Decimal(sum(e["hours_cents"] for e in raw)) / 100
    assert sum(f.points_earned for f in rows) == whole.points_earned
    assert sum(f.points_spent for f in rows) == whole.points_spent
    assert whole.points_balance == Decimal(sum(e["points_cents"] for e in raw)) / 100
    assert sum(f.services for f in rows) == whole.services == 4
    assert sum(f.ratings for f in rows) == whole.ratings == 3
    # Residents are people, not visits: res-a was served in both grids and counts once for the community.
    assert [f.residents for f in rows] == [1, 2] and whole.residents == 2


def test_hours_include_service_corrections_and_imports_and_points_split_earned_from_spent() -> None:
    total = reports.tabulate(a_month(), RATINGS, []).total
    assert total.hours == Decimal("8.25")  # 1.5 + 2.25 + 1 + 0.75 service, -0.25 adjust, +3 import
    assert total.points_earned == Decimal("89.50")  # 57 service + 5 bonus - 2.5 adjust + 30 import
    assert total.points_spent == Decimal("8.00")
    assert total.points_balance == Decimal("81.50")
    assert str(total.hours) == "8.25" and str(total.points_spent) == "8.00"


def test_per_volunteer_and_per_team_rows_add_up_too() -> None:
    raw = a_month()
    for by in (["volunteer"], ["team"], ["team", "grid"], ["month"]):
        table = reports.tabulate(raw, RATINGS, by)
        assert sum(r.figures.hours for r in table.rows) == table.total.hours
        assert sum(r.figures.points_balance for r in table.rows) == table.total.points_balance
    volunteers = {r.key[0]: r.figures for r in reports.tabulate(raw, RATINGS, ["volunteer"]).rows}
    assert volunteers["v-3"].hours == Decimal("3.00") and volunteers["v-3"].services == 0
    assert volunteers["v-2"].services == 2 and volunteers["v-2"].residents == 1


def test_a_service_is_a_request_counted_once_however_many_entries_it_has() -> None:
    raw = [entry(1), entry("1b", request_id="r-1"), entry("hand-written", request_id="")]
    total = reports.tabulate(raw, [], []).total
    assert total.services == 2
    assert total.hours == Decimal("4.50")


def test_average_rating_is_over_the_groups_own_requests_and_absent_without_ratings() -> None:
    raw = a_month()
    by_grid = {r.key[0]: r.figures for r in reports.tabulate(raw, RATINGS, ["grid"]).rows}
    assert (by_grid["g-01"].ratings, by_grid["g-01"].average_rating) == (2, Decimal("4.50"))
    assert (by_grid["g-02"].ratings, by_grid["g-02"].average_rating) == (1, Decimal("4.00"))
    assert reports.tabulate(raw, RATINGS, []).total.average_rating == Decimal("4.33")
    assert reports.tabulate(raw, [], []).total.average_rating is None


def test_entries_from_before_teams_grids_and_residents_existed_read_as_blank_and_say_so() -> None:
    old = [{"_id": "e-old", "kind": "credit", "volunteer_id": "v-1", "district": "quanwai", "request_id": "r-old",
            "hours_cents": 200, "points_cents": 2000, "at": at(2026, 11, 3)}]
    table = reports.tabulate(old + [entry(1, team="便民服务队", resident_ref="res-a")], [], ["team"])
    assert [r.key for r in table.rows] == [("便民服务队",), ("",)]
    assert table.total.services_without_resident == 1
    assert reports.headline(table.total) == "本月服务 2 次，服务居民至少 1 人，志愿时长 3.5 小时"
    assert "服务居民人数未登记" in reports.headline(reports.tabulate(old, [], []).total)
    assert reports.table_rows(table)[2][0] == "未分队"


def test_a_kind_reports_do_not_know_or_hours_where_none_belong_stop_the_report() -> None:
    with pytest.raises(ValueError, match="'refund'"):
        reports.tabulate([entry(1, "refund", points_cents=100)], [], [])
    with pytest.raises(ValueError, match="carries hours"):
        reports.tabulate([entry(1, "bonus", hours_cents=100)], [], [])
    with pytest.raises(ValueError, match="cannot group by"):
        reports.tabulate([], [], ["street"])


def test_the_monthly_report_keeps_only_its_community_and_month() -> None:
    raw = a_month() + [entry("oct", at=at(2026, 10, 31, 23)), entry("other", district="tiansheng")]
    report = reports.monthly_report("quanwai", "2026-11", "grid", raw, RATINGS)
    assert report.table.total == reports.tabulate(a_month(), RATINGS, []).total
    rows = reports.monthly_rows(report)
    assert rows[0][:3] == ["社区 Community", "月份 Month", "网格 Grid"]
    assert [r[2] for r in rows[1:]] == ["g-01", "g-02", "合计 Total"]
    assert rows[-1][:2] == ["泉外测试区", "2026-11"] and rows[-1][6] == "8.25"


def test_a_statement_lists_entries_in_order_with_a_running_balance() -> None:
    raw = [entry(2, at=at(2026, 11, 12)), entry(1, at=at(2026, 10, 2)),
           entry(3, "spend", points_cents=-2000, at=at(2026, 11, 20)), entry(4, volunteer_id="v-other")]
    s = reports.statement("v-1", raw, [{"_id": "r-2", "stars": 5}])
    assert [(line.kind, str(line.balance), line.stars) for line in s.lines] == [
        ("credit", "15.00", None), ("credit", "30.00", 5), ("spend", "10.00", None)]
    assert [r.key for r in s.months.rows] == [("2026-10",), ("2026-11",)]
    assert s.months.total.points_balance == s.lines[-1].balance
    rows = reports.statement_rows(s)
    assert rows[1][:2] == ["2026-10-02 10:00", "服务 service"] and rows[3][8] == "10.00"


def test_a_certificate_covers_service_not_spending_and_goes_by_year_past_a_year_of_months() -> None:
    raw = [entry(m, at=at(2025 + (m - 1) // 12, (m - 1) % 12 + 1, 5)) for m in range(1, 11)]
    raw.append(entry("spend", "spend", points_cents=-500, at=at(2026, 6, 1)))
    cert = reports.certificate("v-1", " 袁文 ", raw, [], date(2026, 11, 23), "泉外社区志愿服务站")
    assert (cert.name, cert.first_month, cert.last_month) == ("袁文", "2025-01", "2025-10")
    assert cert.periods.by == ("month",) and len(cert.periods.rows) == 10
    assert cert.total.hours == Decimal("15.00") and cert.total.points_spent == 0
    assert reports.period_words(cert) == "2025年1月至2025年10月"
    cells = reports.certificate_cells(cert)
    assert cells[0][0] == "月份" and cells[-1] == ["合计", "10", "15", "150"]
    # No resident was recorded on these entries: the certificate does not claim "0 residents".
    assert reports.certificate_texts(cert)["body_4"] == "累计服务 10 次，获得志愿积分 150 分。"

    longer = [entry(m, at=at(2025 + (m - 1) // 12, (m - 1) % 12 + 1, 5)) for m in range(1, 15)]
    by_year = reports.certificate("v-1", "袁文", longer, [], date(2026, 11, 23), "站")
    assert by_year.periods.by == ("year",)
    assert [(r.key, r.figures.services) for r in by_year.periods.rows] == [(("2025",), 12), (("2026",), 2)]


def test_a_certificate_needs_a_name_and_some_service() -> None:
    with pytest.raises(ValueError, match="name"):
        reports.certificate("v-1", "  ", [entry(1)], [], date(2026, 11, 23), "站")
    with pytest.raises(ValueError, match="nothing to certify"):
        reports.certificate("v-1", "袁文", [entry(1, volunteer_id="v-2")], [], date(2026, 11, 23), "站")


def test_the_chart_keeps_twelve_bars_and_sums_the_rest_into_one() -> None:
    raw = [entry(n, grid=f"g-{n:02d}", hours_cents=100 * (n + 1)) for n in range(15)]
    table = reports.tabulate(raw, [], ["grid"])
    bars = reports.chart_bars(table)
    assert len(bars) == 13 and bars[0] == ("g-14", Decimal("15.00"))
    assert bars[-1] == ("其他 3 个网格", Decimal("6.00"))  # g-00, g-01, g-02: 1 + 2 + 3 hours
    assert sum(hours for _, hours in bars) == table.total.hours


def test_long_labels_keep_both_ends_and_numbers_read_plainly() -> None:
    assert reports.short_label("网格-0019-大坪村第19组") == "网格-001…大坪村第19组"
    assert reports.short_label("泉外-01") == "泉外-01"
    assert [reports.plain(Decimal(v)) for v in ("12.50", "3.00", "0.05", "120.00")] == ["12.5", "3", "0.05", "120"]


# The shipped places file: Beibei, its communities and grids, with their names.
BEIBEI = Places.load(DEFAULT_PATH)


def beibei(n: int | str, grid: str, **fields: Any) -> dict[str, Any]:
    return entry(n, district="beibei", grid=grid, **fields)


def test_the_month_report_names_the_district_community_and_grid_instead_of_ids() -> None:
    raw = [beibei(1, "quanwai-01"), beibei(2, "xinglong-01", hours_cents=300), beibei(3, "", hours_cents=50)]
    report = reports.monthly_report("beibei", "2026-11", "grid", raw, [], BEIBEI)

    rows = reports.monthly_rows(report)
    assert [r[2] for r in rows[1:]] == ["泉外社区泉外第一网格", "兴隆社区兴隆第一网格", "未填网格", "合计 Total"]
    assert {r[0] for r in rows[1:]} == {"北碚区"}
    assert not [cell for row in rows for cell in row if "quanwai" in cell or "beibei" in cell]
    assert [name for name, _ in reports.chart_bars(report.table, report.label)] == [
        "兴隆社区兴隆第一网格", "泉外社区泉外第一网格", "未填网格"]
    assert reports.chart_texts(report, None, date(2026, 12, 1))["title"] == "北碚区  2026年11月志愿服务月报"
    s = reports.statement("v-1", raw, [], BEIBEI)
    assert reports.statement_rows(s)[1][4:6] == ["北碚区", "泉外社区泉外第一网格"]
    cert = reports.certificate("v-1", "袁文", raw, [], date(2026, 12, 1), "站", BEIBEI)
    assert reports.certificate_texts(cert)["body_3"] == "于2026年11月在 兴隆社区、泉外社区 参加志愿服务，"


def test_a_chart_and_a_certificate_made_in_the_same_minute_carry_the_same_date_on_the_district_clock() -> None:
    # 17:30 UTC on 30 November is 01:30 on 1 December in Beibei.
    moment = datetime(2026, 11, 30, 17, 30, tzinfo=UTC)
    raw = [beibei(1, "quanwai-01"), beibei(2, "quanwai-02", at=moment.timestamp() - 3600)]
    report = reports.monthly_report("beibei", "2026-12", "grid", raw, [], BEIBEI)
    cert = reports.certificate("v-1", "袁文", raw, [], moment, "泉外社区志愿服务站", BEIBEI)

    assert reports.chart_texts(report, None, moment)["footer"].endswith("制表日期：2026年12月1日")
    assert reports.certificate_texts(cert)["issued"] == "开具日期：2026年12月1日"
    # 00:30 on 1 December in Beibei: December's service, shown with December's date.
    assert [r.key for r in report.table.rows] == [("quanwai-02",)]
    assert reports.statement_rows(reports.statement("v-1", raw, [], BEIBEI))[2][0] == "2026-12-01 00:30"


def test_a_request_served_twice_after_a_bad_rating_is_two_services_each_with_its_own_rating() -> None:
    raw = [entry(1, request_id="r-again", hours_cents=100), entry(2, request_id="r-again", volunteer_id="v-2")]
    ratings = [{"_id": "r-again/v-1", "request_id": "r-again", "volunteer_id": "v-1", "stars": 2},
               {"_id": "r-again/v-2", "request_id": "r-again", "volunteer_id": "v-2", "stars": 5}]
    table = reports.tabulate(raw, ratings, ["volunteer"])
    assert [(r.key[0], r.figures.services, r.figures.average_rating) for r in table.rows] == [
        ("v-1", 1, Decimal("2.00")), ("v-2", 1, Decimal("5.00"))]
    assert (table.total.services, table.total.ratings, table.total.average_rating) == (2, 2, Decimal("3.50"))
