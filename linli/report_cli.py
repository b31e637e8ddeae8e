"""`linli report`: monthly reports, volunteer statements and service certificates, read from the ledger database.

These are operator reports over the whole ledger. They read the ledger's own database directly (read-only), the
way a district statistics office would read a replica, instead of through a call: a year of a district's entries
is too big for one NATS message, and the ledger service stays as small as it is.
"""

import argparse
import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from rich.table import Table as RichTable

from contracts import API
from linli.client import DEFAULT_DATA, CallFailed, Client, mongo_url, nats_url
from linli.show import console
from services.ledger import reports
from services.ledger.report_store import ReportStore


def month_arg(text: str) -> str:
    try:
        reports.parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def this_month() -> str:
    return datetime.now(reports.CHINA).strftime("%Y-%m")  # the default district clock; --month names another


def add_commands(subparsers: Any) -> None:
    ledger = argparse.ArgumentParser(add_help=False)
    ledger.add_argument("--mongo-url", help="the ledger's MongoDB (default: MONGO_URL, else the running `linli up`'s)")
    ledger.add_argument("--db-prefix", default=os.environ.get("LINLI_DB_PREFIX", "linli"),
                        help="databases are <prefix>_<service> (default: LINLI_DB_PREFIX or linli)")
    report = subparsers.add_parser("report", help="monthly reports, volunteer statements and service certificates")
    sub = report.add_subparsers(dest="report", required=True)

    month = sub.add_parser("month", parents=[ledger],
                           help="a community's month: services, residents, hours, points, ratings")
    month.add_argument("--district", required=True, help="the community (district id in the ledger)")
    month.add_argument("--month", type=month_arg, default=this_month(), help="YYYY-MM, Shanghai time (default: now)")
    month.add_argument("--by", choices=["grid", "team", "volunteer"], default="grid", help="one row per (default grid)")
    month.add_argument("--community", help="the name printed on the chart (default: the district's name in places)")
    month.add_argument("--csv", type=Path, help="write the table as CSV (UTF-8 with BOM, opens in Excel)")
    month.add_argument("--png", type=Path, help="write the wall chart as PNG (A4 landscape, 150 dpi)")
    month.add_argument("--svg", type=Path, help="write the wall chart as SVG")

    statement = sub.add_parser("statement", parents=[ledger],
                               help="one volunteer's entries with the running points balance")
    statement.add_argument("volunteer")
    statement.add_argument("--from", dest="since", type=month_arg, help="first month, YYYY-MM")
    statement.add_argument("--to", dest="until", type=month_arg, help="last month, YYYY-MM")
    statement.add_argument("--csv", type=Path, help="write the entries as CSV (UTF-8 with BOM)")

    cert = sub.add_parser("certificate", parents=[ledger],
                          help="a volunteer's service certificate (志愿服务证明) as a one-page PDF")
    cert.add_argument("volunteer")
    cert.add_argument("--out", type=Path, required=True, help="the PDF to write")
    cert.add_argument("--name", help="the volunteer's name (default: asked from intake over NATS)")
    cert.add_argument("--issuer", default="社区志愿服务站", help="who issues it, printed above the seal")
    cert.add_argument("--from", dest="since", type=month_arg, help="first month, YYYY-MM")
    cert.add_argument("--to", dest="until", type=month_arg, help="last month, YYYY-MM")


class Refused(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    data_dir: Path = getattr(args, "data", DEFAULT_DATA)
    url = args.mongo_url or mongo_url(data_dir)
    try:
        asyncio.run(report(args, url, data_dir))
    except (ValueError, Refused) as exc:
        console.print(f"[bold red]refused[/] {exc}", soft_wrap=True)  # one line, however narrow the terminal
        return 1
    except PyMongoError as exc:
        console.print(f"[bold red]cannot read the ledger[/] at {url}: {exc}. Is `linli up` running, or MONGO_URL set?")
        return 2
    except reports.NoChineseFont as exc:
        console.print(f"[bold red]cannot draw Chinese text[/] {exc}")
        return 3
    return 0


async def report(args: argparse.Namespace, url: str, data_dir: Path, now: datetime | None = None) -> None:
    # One moment for everything this run writes: the chart and a certificate made together carry one date.
    now = now or datetime.now(UTC)
    # Fail in seconds when nothing listens, unless the operator's URL sets its own timeout.
    waits: dict[str, Any] = {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": 5000}
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, tz_aware=True, **waits)
    try:
        store = ReportStore(mongo[f"{args.db_prefix}_ledger"])
        match args.report:
            case "month":
                await month(args, store, now)
            case "statement":
                await statement(args, store)
            case "certificate":
                await certificate(args, store, data_dir, now)
    finally:
        await mongo.close()


async def month(args: argparse.Namespace, store: ReportStore, now: datetime) -> None:
    places = reports.configured_places()
    entries = await store.month_entries(args.district, args.month, places.zone(args.district))
    result = reports.monthly_report(args.district, args.month, args.by, entries, await store.ratings_for(entries),
                                    places)
    show_table(f"{result.district_name} {reports.month_words(args.month)}", result.table, result.label)
    console.print(f"[bold]{reports.headline(result.table.total)}[/]")
    if args.csv:
        reports.write_csv(args.csv, reports.monthly_rows(result))
        console.print(f"wrote {args.csv}")
    for path in (args.png, args.svg):
        if path:
            reports.render_chart(result, path, args.community, made=now)
            console.print(f"wrote {path}")


async def unknown(store: ReportStore, volunteer_id: str) -> None:
    if not await store.known(volunteer_id):
        raise Refused(f"the ledger has never heard of volunteer {volunteer_id}: check the id")


async def statement(args: argparse.Namespace, store: ReportStore) -> None:
    entries = await store.volunteer_entries(args.volunteer, args.since, args.until)
    if not entries:
        await unknown(store, args.volunteer)
    result = reports.statement(args.volunteer, entries, await store.ratings_for(entries))
    show_lines(f"statement of {args.volunteer}", result)
    show_table("by month", result.months)
    total = result.months.total
    console.print(f"[bold]{reports.plain(total.hours)} hours, {total.services} services, "
                  f"points balance {total.points_balance}[/]")
    if args.csv:
        reports.write_csv(args.csv, reports.statement_rows(result))
        console.print(f"wrote {args.csv}")


async def certificate(args: argparse.Namespace, store: ReportStore, data_dir: Path, now: datetime) -> None:
    entries = await store.volunteer_entries(args.volunteer, args.since, args.until)
    if not entries:
        await unknown(store, args.volunteer)
        raise Refused(f"the ledger has no entries for volunteer {args.volunteer} in that period: nothing to certify")
    # Names live with intake, not in the ledger; ask only when the operator did not type one.
    name = args.name or await volunteer_name(data_dir, args.volunteer)
    result = reports.certificate(args.volunteer, name, entries, await store.ratings_for(entries), now, args.issuer)
    reports.render_certificate(result, args.out)
    console.print(f"wrote {args.out}: {result.name}, {reports.plain(result.total.hours)} hours, "
                  f"{result.total.services} services, {reports.period_words(result)}")


async def volunteer_name(data_dir: Path, volunteer_id: str) -> str:
    url = nats_url(data_dir)
    try:
        client = await Client.connect(url)
    except Exception as exc:  # nats-py raises its own errors as well as OSError for an unreachable server
        raise Refused(f"cannot ask intake for the name at {url} ({exc!r}); pass --name") from None
    try:
        reply = await client.call(API.INTAKE_CONTACT, {"kind": "volunteer", "id": volunteer_id})
    except CallFailed as exc:
        raise Refused(f"intake does not know volunteer {volunteer_id}: {exc}; pass --name") from None
    except TimeoutError:
        raise Refused(f"intake did not answer at {url}; pass --name") from None
    finally:
        await client.close()
    return str(reply["name"])


# A terminal is 80 columns wide: short Chinese headings here; the CSV carries the full bilingual ones.
SHORT = ["服务次数", "居民", "未登记居民", "时长(小时)", "获得积分", "使用积分", "评价数", "平均评分"]


def show_table(title: str, table: reports.Table, named: Callable[[str, str], str] = reports.label) -> None:
    shown = RichTable(title=title, title_justify="left")
    for heading in [reports.HEADINGS[d].split(" ")[0] for d in table.by] + SHORT:
        shown.add_column(heading, overflow="fold")
    for row in table.rows:
        shown.add_row(*(named(d, v) for d, v in zip(table.by, row.key)), *reports.figure_cells(row.figures))
    shown.add_row(*(["合计"] * len(table.by)), *reports.figure_cells(table.total), style="bold")
    console.print(shown)


def show_lines(title: str, s: reports.Statement) -> None:
    shown = RichTable(title=title, title_justify="left")
    for heading in ["日期", "类别", "请求", "服务项目", "时长", "积分", "余额", "评分"]:
        shown.add_column(heading, overflow="fold")
    for line in s.lines:
        shown.add_row(s.when(line),
                      reports.KIND_LABELS.get(line.kind, line.kind).split(" ")[0], line.request_id[:10],
                      line.service, str(line.hours), str(line.points), str(line.balance),
                      "" if line.stars is None else "★" * line.stars)
    console.print(shown)
