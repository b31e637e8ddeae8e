"""ledger.report: the month's table and wall chart over a call, so a screen never reads the ledger's database.
The figures are reports.py's, read through report_store.py exactly as `linli report month` reads them."""

import asyncio
import base64
import csv
import io
import tempfile
from datetime import datetime
from pathlib import Path

from contracts.calls import MonthReport, MonthReportQuery
from services.ledger import reports
from services.ledger.report_store import ReportStore

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "png": "image/png", "svg": "image/svg+xml"}


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    # The BOM is what makes Excel on a Chinese Windows read UTF-8 instead of GBK, as the CLI's file does.
    return out.getvalue().encode("utf-8-sig")


def chart_bytes(report: reports.MonthlyReport, kind: str, community: str | None, made: datetime) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"chart.{kind}"
        reports.render_chart(report, path, community, made=made)
        return path.read_bytes()


def file_name(call: MonthReportQuery) -> str:
    return f"{call.district}-{call.month}-{call.by}.{call.format}"


async def month_report(store: ReportStore, call: MonthReportQuery, now: datetime) -> MonthReport:
    places = reports.configured_places()
    entries = await store.month_entries(call.district, call.month, places.zone(call.district))
    result = reports.monthly_report(call.district, call.month, call.by, entries, await store.ratings_for(entries),
                                    places)
    rows = reports.monthly_rows(result)
    reply = MonthReport(district=call.district, district_name=result.district_name, month=call.month, by=call.by,
                        headline=reports.headline(result.table.total), headings=rows[0], rows=rows[1:])
    if call.format == "json":
        return reply
    if call.format == "csv":
        content = csv_bytes(rows)
    else:
        # matplotlib draws for a second or so: in a thread, so the ledger keeps answering meanwhile.
        content = await asyncio.to_thread(chart_bytes, result, call.format, call.community or None, now)
    return reply.model_copy(update={"content_type": CONTENT_TYPES[call.format], "file_name": file_name(call),
                                    "content_base64": base64.b64encode(content).decode("ascii")})
