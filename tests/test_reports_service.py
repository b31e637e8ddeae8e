import argparse
import csv
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from PIL import Image
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts import API, Envelope, event_subject, new_event
from contracts.events import HoursLogged, RequestRated
from linli import report_cli
from services.common.bus import envelope_json
from services.common.config import BusSettings
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.ledger import reports
from services.ledger.app import build as build_ledger
from services.ledger.config import LedgerSettings
from services.ledger.report_store import ReportStore
from services.ledger.reports import CHINA
from tests.conftest import Bus, eventually

pytestmark = pytest.mark.service


@pytest.fixture
async def ledger_db(settings: BusSettings) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    # A fresh <prefix>_ledger per test, written directly: the reports only read what the ledger stores.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    yield client[settings.database("ledger")]
    await client.close()


def at(month: int, day: int, hour: int = 10, year: int = 2026) -> float:
    return datetime(year, month, day, hour, tzinfo=CHINA).timestamp()


def credit(n: int, volunteer: str, grid: str, team: str, resident: str, hours: int, day: int,
           **fields: Any) -> dict[str, Any]:
    doc = {"_id": f"e-{n}", "kind": "credit", "volunteer_id": volunteer, "district": "quanwai", "grid": grid,
           "team": team, "resident_ref": resident, "request_id": f"r-{n}", "category": "repair",
           "service": "repair.plumbing", "hours_cents": hours, "points_cents": hours * 10, "at": at(11, day),
           "posted": at(11, day) + 60}
    doc.update(fields)
    return doc


def november() -> list[dict[str, Any]]:
    return [
        credit(1, "v-yuan", "quanwai-01", "便民服务队", "res-wang", 150, 3),
        credit(2, "v-yuan", "quanwai-01", "便民服务队", "res-li", 225, 9),
        credit(3, "v-zhao", "quanwai-02", "党员先锋队", "res-wang", 100, 12),
        credit(4, "v-zhao", "quanwai-02", "党员先锋队", "res-chen", 300, 20),
        credit(5, "v-qian", "quanwai-02", "", "res-zhou", 50, 28),
        {"_id": "e-bonus", "kind": "bonus", "volunteer_id": "v-yuan", "district": "quanwai", "grid": "quanwai-01",
         "points_cents": 500, "at": at(11, 15)},
        {"_id": "e-spend", "kind": "spend", "volunteer_id": "v-zhao", "district": "quanwai", "grid": "quanwai-02",
         "points_cents": -1200, "at": at(11, 25)},
        # 00:30 on 1 December in Shanghai: December's, though it is still 30 November in UTC.
        credit(6, "v-yuan", "quanwai-01", "便民服务队", "res-li", 400, 1, at=at(12, 1, 0) + 1800),
        credit(7, "v-yuan", "quanwai-01", "便民服务队", "res-li", 200, 30, at=at(10, 30)),
        credit(8, "v-sun", "tiansheng-01", "", "res-xu", 900, 14, district="tiansheng"),
    ]


RATINGS = [{"_id": "r-1", "volunteer_id": "v-yuan", "stars": 5, "at": at(11, 4)},
           {"_id": "r-3", "volunteer_id": "v-zhao", "stars": 4, "at": at(11, 13)},
           {"_id": "r-8", "volunteer_id": "v-sun", "stars": 1, "at": at(11, 15)}]


async def seeded(db: AsyncDatabase[dict[str, Any]]) -> ReportStore:
    await db["entries"].insert_many(november())
    await db["ratings"].insert_many(RATINGS)
    return ReportStore(db)


def pdf_text(path: Path) -> str:
    # PDFium is the engine of Chrome's viewer: what it extracts is what a reader copying the text gets.
    page = pdfium.PdfDocument(path)[0]
    return "".join(page.get_textpage().get_text_range().split())


async def month_report(store: ReportStore, by: str = "grid") -> reports.MonthlyReport:
    entries = await store.month_entries("quanwai", "2026-11")
    return reports.monthly_report("quanwai", "2026-11", by, entries, await store.ratings_for(entries))


async def test_the_month_from_the_store_holds_only_that_community_and_month_and_adds_up(
    ledger_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = await seeded(ledger_db)
    entries = await store.month_entries("quanwai", "2026-11")
    assert sorted(e["_id"] for e in entries) == ["e-1", "e-2", "e-3", "e-4", "e-5", "e-bonus", "e-spend"]

    report = await month_report(store)
    total = report.table.total
    assert (total.services, total.residents, total.hours) == (5, 4, Decimal("8.25"))
    assert (total.points_earned, total.points_spent) == (Decimal("87.50"), Decimal("12.00"))
    assert (total.ratings, total.average_rating) == (2, Decimal("4.50"))
    grids = [row.figures for row in report.table.rows]
    assert sum(f.hours for f in grids) == total.hours
    assert sum(f.services for f in grids) == total.services
    assert sum(f.points_balance for f in grids) == total.points_balance
    assert total.hours == Decimal(sum(e.get("hours_cents", 0) for e in entries)) / 100
    assert reports.headline(total) == "本月服务 5 次，服务居民 4 人，志愿时长 8.25 小时"


async def test_the_csv_opens_in_excel_and_parses_back_to_the_same_figures(
    ledger_db: AsyncDatabase[dict[str, Any]], tmp_path: Path,
) -> None:
    report = await month_report(await seeded(ledger_db), by="team")
    path = tmp_path / "quanwai-2026-11.csv"
    reports.write_csv(path, reports.monthly_rows(report))

    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    with path.open(encoding="utf-8-sig", newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [row["服务队 Team"] for row in parsed] == ["便民服务队", "党员先锋队", "未分队", "合计 Total"]
    hours = "志愿时长(小时,含服务/调整/转入) Hours (service+adjust+import)"
    assert [row[hours] for row in parsed] == ["3.75", "4.00", "0.50", "8.25"]
    assert sum(Decimal(row[hours]) for row in parsed[:-1]) == Decimal(parsed[-1][hours])
    total = parsed[-1]
    assert (total["社区 Community"], total["月份 Month"], total["服务次数 Services"]) == ("泉外测试区", "2026-11", "5")  # the name from the places file
    assert (total["使用积分 Points spent"], total["平均评分 Average rating"]) == ("12.00", "4.50")
    assert parsed[2]["平均评分 Average rating"] == ""  # no ratings: empty, not zero


async def test_the_wall_chart_is_drawn_as_png_and_svg_with_the_headline(
    ledger_db: AsyncDatabase[dict[str, Any]], tmp_path: Path,
) -> None:
    report = await month_report(await seeded(ledger_db))
    png, svg = tmp_path / "wall.png", tmp_path / "wall.svg"
    reports.render_chart(report, png, "泉外社区", made=date(2026, 12, 1))
    reports.render_chart(report, svg, "泉外社区", made=date(2026, 12, 1))

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1753, 1240)  # A4 landscape at 150 dpi
        info = dict(image.info)
    assert info["Title"] == "泉外社区  2026年11月志愿服务月报"
    assert info["Description"] == "本月服务 5 次，服务居民 4 人，志愿时长 8.25 小时"
    assert png.stat().st_size > 30_000
    drawing = svg.read_text(encoding="utf-8")
    assert "本月服务 5 次，服务居民 4 人，志愿时长 8.25 小时" in drawing
    assert drawing.count("<path") > 50  # the Chinese glyphs are drawn as outlines, not left to the viewer's fonts


async def test_the_certificate_is_one_a4_page_that_states_the_hours(
    ledger_db: AsyncDatabase[dict[str, Any]], tmp_path: Path,
) -> None:
    store = await seeded(ledger_db)
    entries = await store.volunteer_entries("v-yuan")
    cert = reports.certificate("v-yuan", "袁文", entries, await store.ratings_for(entries), date(2026, 12, 2),
                               "泉外社区志愿服务站")
    path = tmp_path / "certificate.pdf"
    reports.render_certificate(cert, path)

    assert len(pdfium.PdfDocument(path)) == 1
    assert tuple(round(side) for side in pdfium.PdfDocument(path)[0].get_size()) == (595, 842)  # A4 in points
    text = pdf_text(path)
    for expected in ["志愿服务证明", "兹证明袁文同志", "志愿者编号v-yuan",
                     "于2026年10月至2026年12月在泉外测试区参加志愿服务", "累计服务4次，服务居民2人", "9.75小时",
                     "2026年11月23.7542.5", "合计49.75102.5", "泉外社区志愿服务站", "开具日期：2026年12月2日"]:
        assert expected in text
    assert path.read_bytes().count(b"/FontFile3") == 2  # both fonts embedded: it prints the same anywhere


def test_a_font_without_chinese_stops_the_drawing_instead_of_printing_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import matplotlib

    latin_only = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    monkeypatch.setenv("LINLI_CJK_FONT", str(latin_only))
    report = reports.monthly_report("quanwai", "2026-11", "grid", november(), RATINGS)
    with pytest.raises(reports.NoChineseFont, match="pylopdf-fonts-zh-cn"):
        reports.render_chart(report, tmp_path / "wall.png")
    assert not (tmp_path / "wall.png").exists()
    monkeypatch.setenv("LINLI_CJK_FONT", str(tmp_path / "missing.otf"))
    with pytest.raises(reports.NoChineseFont, match="not a font file"):
        reports.cjk_font()


async def test_a_statement_shows_each_entry_and_a_balance_across_months(
    ledger_db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = await seeded(ledger_db)
    everything = await store.volunteer_entries("v-yuan")
    assert len(everything) == 5
    november_only = await store.volunteer_entries("v-yuan", "2026-11", "2026-11")
    s = reports.statement("v-yuan", november_only, await store.ratings_for(november_only))
    assert [(line.request_id, str(line.balance), line.stars) for line in s.lines] == [
        ("r-1", "15.00", 5), ("r-2", "37.50", None), ("", "42.50", None)]
    assert s.months.total.points_balance == Decimal("42.50")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="linli")
    report_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_the_cli_writes_the_month_and_asks_intake_for_the_volunteers_name(
    ledger_db: AsyncDatabase[dict[str, Any]], settings: BusSettings, bus: Bus, tmp_path: Path,
) -> None:
    intake = build_intake(IntakeSettings(bus=settings))
    await intake.start()
    try:
        registered = await bus.call(API.INTAKE_REGISTER_VOLUNTEER, {
            "name": "袁文", "phone": "13900139000", "district": "quanwai", "grids": ["quanwai-01"],
            "skills": ["repair"]})
        volunteer = registered["volunteer_id"]
        await ledger_db["entries"].insert_many(
            [credit(n, volunteer, "quanwai-01", "便民服务队", "res-wang", 125, 3 + n) for n in range(3)])
        # What `linli up` leaves for other commands: where its servers listen.
        (tmp_path / "urls.env").write_text(f"NATS_URL={settings.nats_url}\nMONGO_URL={settings.mongo_url}\n")
        out = tmp_path / "cert.pdf"
        args = parse("report", "certificate", volunteer, "--out", str(out), "--db-prefix", settings.db_prefix)
        await report_cli.report(args, report_cli.mongo_url(tmp_path), tmp_path)
        text = pdf_text(out)
        assert "兹证明袁文同志" in text and "3.75小时" in text

        csv_path, png = tmp_path / "month.csv", tmp_path / "month.png"
        args = parse("report", "month", "--district", "quanwai", "--month", "2026-11", "--by", "volunteer",
                     "--csv", str(csv_path), "--png", str(png), "--db-prefix", settings.db_prefix)
        await report_cli.report(args, settings.mongo_url, tmp_path)
        with csv_path.open(encoding="utf-8-sig", newline="") as f:
            assert [row[2] for row in csv.reader(f)] == ["志愿者编号 Volunteer ID", volunteer, "合计 Total"]
        assert png.stat().st_size > 30_000
    finally:
        await intake.stop()


def test_a_statement_or_certificate_of_an_unknown_volunteer_is_one_clear_line(
    settings: BusSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--mongo-url", settings.mongo_url, "--db-prefix", settings.db_prefix]
    for argv in (["statement", "v-ghost"], ["certificate", "v-ghost", "--out", str(tmp_path / "c.pdf")]):
        assert report_cli.run(parse("report", *argv, *common)) == 1
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and "never heard of volunteer v-ghost" in out, out
    assert not (tmp_path / "c.pdf").exists()


def test_the_cli_refuses_a_bad_month_and_an_unreachable_database(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse("report", "month", "--district", "quanwai", "--month", "2026-13")
    args = parse("report", "statement", "v-1", "--mongo-url", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200")
    assert report_cli.run(args) == 2


# ---------------------------------------------------------------- through the running ledger


def logged(volunteer: str, request: str, amount: str, category: str, grid: str, resident: str,
           when: datetime) -> Envelope[Any]:
    return new_event(
        HoursLogged(volunteer_id=volunteer, request_id=request, assignment_id=f"a-{request}", hours=Decimal(amount),
                    category=category, service=f"{category}.visit", grid=grid, resident_ref=resident,
                    completed_at=when),
        source="linli/test", district="beibei", subject=request, correlationid=request, time=when,
    )


async def publish(bus: Bus, envelope: Envelope[Any], msg_id: str | None = None) -> None:
    # A msg id other than the event id slips past JetStream's de-duplication: the ledger has to catch it.
    await bus.nc.jetstream().publish(event_subject(envelope.short_type, envelope.district), envelope_json(envelope),
                                     headers={"Nats-Msg-Id": msg_id or envelope.id})


async def test_the_report_over_what_the_running_ledger_wrote_matches_its_balances(
    settings: BusSettings, bus: Bus
) -> None:
    ledger = build_ledger(LedgerSettings(bus=settings))
    await ledger.start()
    try:
        when = datetime(2026, 11, 12, 9, 30, tzinfo=CHINA)
        work = [("v-a", "1.25", "repair", "g-01", "res-1"), ("v-a", "2.5", "elderly", "g-01", "res-2"),
                ("v-b", "0.75", "elderly", "g-02", "res-1"), ("v-b", "3", "repair", "g-02", "res-3")]
        events = [logged(v, f"r-{uuid.uuid4()}", h, c, g, r, when) for v, h, c, g, r in work]
        for event in events:
            await publish(bus, event)
        await publish(bus, events[0], "the-same-again")
        for event, stars in [(events[0], 5), (events[2], 3)]:
            rated = RequestRated(request_id=event.data.request_id, volunteer_id=event.data.volunteer_id, stars=stars)
            await publish(bus, new_event(rated, source="linli/test", district="beibei", subject=rated.request_id,
                                         correlationid=rated.request_id))
        earned = await bus.wait_for("points.earned", count=len(events), timeout=10)

        store = ReportStore(ledger.db)

        async def both_ratings_stored() -> bool:
            return len(await store.ratings_of(e.data.request_id for e in events)) == 2

        await eventually(both_ratings_stored)
        entries = await store.month_entries("beibei", "2026-11")
        report = reports.monthly_report("beibei", "2026-11", "volunteer", entries, await store.ratings_for(entries))
        total = report.table.total
        assert (total.services, total.hours) == (4, Decimal("7.50"))  # the repeated event is credited once
        # Whatever the ledger's rules paid, the report counts exactly what it announced.
        assert total.points_earned == sum(Decimal(e["data"]["points"]) for e in earned) > 0
        assert (total.ratings, total.average_rating) == (2, Decimal("4.00"))
        # Residents are counted from what the ledger keeps of them, whichever version of it wrote the entries.
        assert total.residents == len({e["resident_ref"] for e in entries if e.get("resident_ref")})
        assert total.residents + total.services_without_resident >= 3

        for row in report.table.rows:
            [volunteer] = row.key
            balance = await bus.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer})
            mine = reports.statement(volunteer, await store.volunteer_entries(volunteer), []).months.total
            assert (str(row.figures.hours), str(row.figures.points_balance), row.figures.services) == (
                balance["hours"], balance["points"], balance["services"])
            assert (mine.hours, mine.points_balance) == (row.figures.hours, row.figures.points_balance)
    finally:
        await ledger.stop()
