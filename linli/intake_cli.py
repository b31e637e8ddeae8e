"""`linli places | requests | details | volunteer update/leave | close | pair | unpair`: intake's calls for
operators and volunteers, printed for people (names and short codes) or as JSON with --json."""

import argparse
import asyncio
import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from contracts import API
from linli.client import DEFAULT_DATA, CallFailed, print_refusal, Client, nats_url
from services.common.places import DEFAULT_TIMEZONE, format_local, format_window

STATES = ["open", "offered", "assigned", "unmatched", "reopened", "overdue", "submitted", "accepted", "completed",
          "rated", "cancelled", "closed", "any"]


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def away_period(value: str) -> dict[str, str]:
    """2026-12-01:2026-12-07, or one day as 2026-12-01."""
    start, _, end = value.partition(":")
    try:
        return {"start": date.fromisoformat(start).isoformat(), "end": date.fromisoformat(end or start).isoformat()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a period of days like 2026-12-01:2026-12-07: {value!r}") from None


def add_commands(subparsers: Any) -> None:
    places = subparsers.add_parser("places", help="districts, streets, communities and grids, by name")
    places.add_argument("--district")

    requests = subparsers.add_parser("requests", help="requests by state and place, oldest first")
    requests.add_argument("--state", choices=STATES, default="open",
                          help="open (submitted or offered, the default), assigned, overdue, unmatched, reopened, "
                               "any, or one status")
    requests.add_argument("--district")
    requests.add_argument("--community")
    requests.add_argument("--grid")
    requests.add_argument("--since", help="made at or after this time (ISO 8601)")
    requests.add_argument("--until", help="made before this time (ISO 8601)")
    requests.add_argument("--limit", type=int, default=50)
    requests.add_argument("--cursor", default="", help="the next page, as the previous page printed it")

    details = subparsers.add_parser("details", help="what the accepted volunteer needs: address, resident, time")
    details.add_argument("assignment", help="the assignment's id or short code")
    details.add_argument("--volunteer", required=True)

    volunteer = subparsers.add_parser("volunteer", help="change a volunteer's profile, or record that they left")
    vsub = volunteer.add_subparsers(dest="volunteer_command", required=True)
    update = vsub.add_parser("update", help="change only the fields given; the matcher gets the whole profile")
    update.add_argument("volunteer")
    update.add_argument("--name")
    update.add_argument("--grids", type=split, help="comma-separated grid ids")
    update.add_argument("--skills", type=split, help="comma-separated catalogue category or item ids")
    update.add_argument("--capacity", type=int)
    update.add_argument("--team")
    update.add_argument("--attributes", type=split, help="comma-separated, e.g. sign-language,woman")
    update.add_argument("--away", type=away_period, action="append",
                        help="days away, as 2026-12-01:2026-12-07; repeat for more; replaces the periods stored")
    update.add_argument("--back", action="store_true", help="clear every period away")
    leave = vsub.add_parser("leave", help="the volunteer stops; the matcher offers them nothing more")
    leave.add_argument("volunteer")
    leave.add_argument("--reason", default="")

    close = subparsers.add_parser("close", help="close a reopened request that needs nothing more")
    close.add_argument("request", help="the request's id or short code")
    close.add_argument("--operator", required=True)
    close.add_argument("--reason", required=True)

    pair = subparsers.add_parser("pair", help="a standing pairing of a resident and a volunteer")
    pair.add_argument("--district", required=True)
    pair.add_argument("--resident-phone", required=True)
    pair.add_argument("--volunteer", required=True)
    pair.add_argument("--kind", choices=["caring-parent", "care-group", "other"], default="care-group")
    unpair = subparsers.add_parser("unpair", help="end a standing pairing")
    unpair.add_argument("pairing")
    unpair.add_argument("--reason", default="")

    for command in (places, requests, details, update, leave, close, pair, unpair):
        command.add_argument("--json", action="store_true", help="print the reply as JSON")
        command.set_defaults(run=run)


def call_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    match args.command:
        case "places":
            return API.INTAKE_PLACES, {"district": args.district}
        case "requests":
            query = {"state": args.state, "district": args.district, "community": args.community, "grid": args.grid,
                     "since": args.since, "until": args.until, "limit": args.limit, "cursor": args.cursor}
            return API.INTAKE_REQUESTS, {k: v for k, v in query.items() if v not in (None, "")}
        case "details":
            return API.INTAKE_DETAILS, {"assignment_id": args.assignment, "volunteer_id": args.volunteer}
        case "volunteer" if args.volunteer_command == "update":
            fields = {name: getattr(args, name) for name in ("name", "grids", "skills", "capacity", "team", "attributes")}
            away = [] if args.back else args.away
            return API.INTAKE_UPDATE_VOLUNTEER, {
                "volunteer_id": args.volunteer, "away": away, **{k: v for k, v in fields.items() if v is not None}}
        case "volunteer":
            return API.INTAKE_LEAVE, {"volunteer_id": args.volunteer, "reason": args.reason}
        case "close":
            return API.INTAKE_CLOSE, {"request_id": args.request, "operator": args.operator, "reason": args.reason}
        case "pair":
            return API.INTAKE_PAIR, {"district": args.district, "resident_phone": args.resident_phone,
                                     "volunteer_id": args.volunteer, "kind": args.kind}
        case _:
            return API.INTAKE_UNPAIR, {"pairing_id": args.pairing, "reason": args.reason}


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def places_text(reply: dict[str, Any]) -> str:
    lines = []
    for d in reply["districts"]:
        lines.append(f"{d['name']} ({d['id']}) · {d['timezone']}")
        grids_of: dict[str, list[dict[str, Any]]] = {}
        for g in d["grids"]:
            grids_of.setdefault(g["community"], []).append(g)
        communities_of: dict[str, list[dict[str, Any]]] = {}
        for c in d["communities"]:
            communities_of.setdefault(c["street"], []).append(c)
        streets = [(s["id"], f"{s['name']} ({s['id']})") for s in d["streets"]]
        if "" in communities_of or not streets:
            streets.append(("", ""))
        for street, label in streets:
            indent = "  "
            if label:
                lines.append(f"  {label}")
                indent = "    "
            for c in communities_of.get(street, []):
                lines.append(f"{indent}{c['name']} ({c['id']})")
                lines += [f"{indent}  {g['name']} ({g['id']})" for g in grids_of.get(c["id"], [])]
        lines += [f"  {g['name']} ({g['id']})" for g in grids_of.get("", [])]
    return "\n".join(lines)


Zones = dict[str, ZoneInfo]


def zone_of(zones: Zones, district: str) -> ZoneInfo:
    return zones.get(district) or ZoneInfo(DEFAULT_TIMEZONE)


def requests_text(reply: dict[str, Any], zones: Zones) -> str:
    if not reply["items"]:
        return "no requests"
    lines = []
    for r in reply["items"]:
        zone = zone_of(zones, r["district"])
        mark = "!" if r["overdue"] else " "
        window = format_window(when(r.get("window_start")), when(r.get("window_end")), zone)
        made = format_local(when(r["created_at"]), zone)
        lines.append(f"{mark} {r['code']:<7} {r['status']:<10} {r['urgency']:<8} {made}  "
                     f"{r['service_name'] or r['service']}  {r['place']}  (wanted {window})")
    lines.append(f"{len(reply['items'])} request(s); ! = overdue")
    if reply["next_cursor"]:
        lines.append(f"more: add --cursor {reply['next_cursor']}")
    return "\n".join(lines)


def details_text(d: dict[str, Any], zones: Zones) -> str:
    zone = zone_of(zones, d["district"])
    lines = [
        f"request {d['code']}: {d['service_name']} ({d['urgency']})",
        f"where:    {d['place']}, {d['address'] or 'no address given'}",
        f"when:     {format_window(when(d.get('window_start')), when(d.get('window_end')), zone)}",
        f"resident: {d['resident_name']} {d['resident_phone']}",
    ]
    if d.get("description"):
        lines.append(f"needs:    {d['description']}")
    if d.get("access_until"):
        lines.append(f"given until {format_local(when(d['access_until']), zone)}")
    return "\n".join(lines)


def render(args: argparse.Namespace, result: dict[str, Any], zones: Zones) -> str:
    if args.json:
        return json.dumps(result, ensure_ascii=False, indent=2)
    match args.command:
        case "places":
            return places_text(result)
        case "requests":
            return requests_text(result, zones)
        case "details":
            return details_text(result, zones)
    return json.dumps(result, ensure_ascii=False, indent=2)


async def call(url: str, subject: str, payload: dict[str, Any], with_zones: bool) -> tuple[dict[str, Any], Zones]:
    """The reply, and each district's clock when the reply has times for a person to read."""
    client = await Client.connect(url)
    try:
        result = await client.call(subject, payload)
        zones: Zones = {}
        if with_zones:
            places = await client.call(API.INTAKE_PLACES, {})
            zones = {d["id"]: ZoneInfo(d["timezone"]) for d in places["districts"]}
        return result, zones
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    url = nats_url(getattr(args, "data", DEFAULT_DATA))
    subject, payload = call_for(args)
    try:
        result, zones = asyncio.run(call(url, subject, payload, args.command in ("requests", "details") and not args.json))
    except CallFailed as exc:
        print_refusal(exc)
        return 1
    print(render(args, result, zones))
    return 0
