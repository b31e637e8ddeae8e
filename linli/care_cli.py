"""`linli care report`: a month of care for one community, through linli.api.care.report."""

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from contracts import API
from linli.client import Client, nats_url
from linli.show import console
from services.care import reports
from services.common.places import Places


def add_commands(subparsers: Any) -> None:
    care = subparsers.add_parser("care", help="care plans: the monthly report")
    sub = care.add_subparsers(dest="care", required=True)
    report = sub.add_parser("report", help="a community's month: deadlines, on time, late, missed, escalations")
    report.add_argument("--district", required=True)
    report.add_argument("--community", required=True)
    report.add_argument("--month", required=True, help="YYYY-MM, the district's time")
    report.add_argument("--operator", default="",
                        help="who reads it (an operator of the district); default: the signed-in user")
    report.add_argument("--csv", type=Path, help="one line per resident, with the last contact (UTF-8 with BOM)")
    report.add_argument("--png", type=Path, help="the wall chart, PNG (or --png x.svg for SVG)")


async def fetch(args: argparse.Namespace) -> dict[str, Any]:
    client = await Client.connect(nats_url(args.data))
    try:
        return await client.call(API.CARE_REPORT, {
            "reader": {"person_id": args.operator or signed_in(client.token), "role": "operator",
                       "district": args.district},
            "community": args.community, "month": args.month})
    finally:
        await client.close()


def signed_in(token: str) -> str:
    """The user name a saved token names (care checks it against the signature); "operator" without one."""
    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("sub") or "operator")
    except jwt.PyJWTError:
        return "operator"


def run(args: argparse.Namespace) -> int:
    report = asyncio.run(fetch(args))
    console.print(f"{args.community} {args.month}: due {report['due']}, on time {report['on_time']}, "
                  f"late {report['late']}, missed {report['missed']}, escalations {report['escalations']} "
                  f"({', '.join(f'{k} {v}' for k, v in report['endings'].items())})")
    for line in report["residents"]:
        console.print(f"   {line['resident_ref']}  last contact {line['last_contact'] or 'never'}")
    if args.csv:
        reports.write_report_csv(report, args.csv)
    if args.png:
        name = Places.load().community_name(args.district, args.community)
        reports.render_chart(report, args.png, name, datetime.now(UTC).date())
    return 0
