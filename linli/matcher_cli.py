"""`linli explain | assign | reassign | volunteers`: the matcher's calls for operators, printed for people (names
and short codes) or as JSON with --json."""

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from contracts import API
from linli.client import DEFAULT_DATA, CallFailed, print_refusal, Client, nats_url
from services.common.places import Places, format_local


def add_commands(subparsers: Any) -> None:
    explain = subparsers.add_parser("explain", help="why a request went to whom: offers, scores, who fell out")
    explain.add_argument("request", help="the request's id or short code")

    assign = subparsers.add_parser("assign", help="give a request to a named volunteer, by hand")
    assign.add_argument("request", help="the request's id or short code")
    assign.add_argument("--volunteer", required=True)
    assign.add_argument("--operator", required=True)
    assign.add_argument("--reason", required=True)
    assign.add_argument("--confirmed", action="store_true", help="the volunteer has already said yes")

    reassign = subparsers.add_parser(
        "reassign", help="take a request back and match it again, or re-dispatch a reopened one"
    )
    reassign.add_argument("request", help="the request's id or short code")
    reassign.add_argument("--operator", required=True)
    reassign.add_argument("--reason", required=True)
    reassign.add_argument("--volunteer", help="offer it to this volunteer instead of matching again")

    volunteers = subparsers.add_parser("volunteers", help="a district's volunteers with their load this week")
    volunteers.add_argument("--district", required=True)
    volunteers.add_argument("--grid")
    volunteers.add_argument("--skill", help="a menu category or item id")
    volunteers.add_argument("--team")
    volunteers.add_argument("--limit", type=int, default=50)
    volunteers.add_argument("--cursor", default="", help="the next page, as the previous page printed it")

    for command in (explain, assign, reassign, volunteers):
        command.add_argument("--json", action="store_true", help="print the reply as JSON")
        command.set_defaults(run=run)


def call_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    match args.command:
        case "explain":
            return API.MATCHER_EXPLAIN, {"request_id": args.request}
        case "assign":
            return API.MATCHER_ASSIGN, {"request_id": args.request, "volunteer_id": args.volunteer,
                                        "operator": args.operator, "reason": args.reason, "confirmed": args.confirmed}
        case "reassign":
            return API.MATCHER_REASSIGN, {"request_id": args.request, "operator": args.operator,
                                          "reason": args.reason, "volunteer_id": args.volunteer}
        case _:
            return API.MATCHER_VOLUNTEERS, {"district": args.district, "grid": args.grid, "skill": args.skill,
                                            "team": args.team, "limit": args.limit, "cursor": args.cursor}


def volunteer_ids(result: dict[str, Any]) -> list[str]:
    ids = [o["volunteer_id"] for o in result.get("offers", [])] + [f["volunteer_id"] for f in result.get("fell_out", [])]
    ids += [v["volunteer_id"] for v in result.get("items", [])]
    return sorted(set(ids))


async def names_of(client: Client, ids: list[str]) -> dict[str, str]:
    """Names live with intake; the matcher knows volunteers by id only. An id intake cannot name stands for itself."""
    names = {}
    for volunteer_id in ids:
        try:
            names[volunteer_id] = (await client.call(API.INTAKE_CONTACT, {"kind": "volunteer", "id": volunteer_id}))["name"]
        except (CallFailed, TimeoutError, asyncio.TimeoutError):
            names[volunteer_id] = volunteer_id
    return names


def who(names: dict[str, str], volunteer_id: str) -> str:
    name = names.get(volunteer_id, volunteer_id)
    return name if name == volunteer_id else f"{name} ({volunteer_id})"


def explain_text(r: dict[str, Any], names: dict[str, str], places: Places, district: str) -> str:
    zone = places.zone(district)
    lines = [f"request {r.get('code') or r['request_id']}: {r['state']}{' (reopened)' if r.get('reopened') else ''}, "
             f"{r['urgency']}"]
    for offer in r["offers"]:
        why = offer.get("explanation", {})
        score = f"score {why['score']} (rank {why.get('rank')} of {why.get('considered')}, {why.get('tier')})" \
            if "score" in why else f"by {offer.get('by')}: {why.get('reason', '')}"
        lines.append(f"  offer {offer.get('code') or offer['assignment_id']} to {who(names, offer['volunteer_id'])}: "
                     f"{offer['state']}, stage {offer.get('stage')}, {score}")
    for fell in r["fell_out"]:
        lines.append(f"  fell out: {who(names, fell['volunteer_id'])}: {fell['why']}")
    if r.get("not_considered"):
        lines.append("  not considered: " + ", ".join(f"{k} {v}" for k, v in sorted(r["not_considered"].items())))
    for action in r.get("operator_actions", []):
        at = format_local(datetime.fromtimestamp(action["at"], UTC), zone) if action.get("at") else ""
        lines.append(f"  {at} {action['action']} by {action['operator']}: {action['reason']}")
    return "\n".join(lines)


def volunteers_text(r: dict[str, Any], names: dict[str, str]) -> str:
    lines = [f"{'volunteer':<28} {'grids':<24} {'load':>6} {'offers':>7} {'hours':>6}  team",
             *(f"{who(names, v['volunteer_id']):<28} {','.join(v['grids']):<24} {v['load']:>3}/{v['capacity']:<2} "
               f"{v['offers_this_week']:>7} {v['hours_this_week']:>6}  {v.get('team', '')}" for v in r["items"])]
    if r.get("next_cursor"):
        lines.append(f"more: --cursor {r['next_cursor']}")
    return "\n".join(lines)


def render(args: argparse.Namespace, result: dict[str, Any], names: dict[str, str]) -> str:
    if args.json:
        return json.dumps(result, ensure_ascii=False, indent=2)
    if args.command == "explain":
        return explain_text(result, names, Places.load(), result.get("district", ""))
    if args.command == "volunteers":
        return volunteers_text(result, names)
    status = {"offered": "offered", "accepted": "accepted", "withdrawn": "nobody free: it waits for an operator"}
    return f"request {args.request}: {status.get(result['status'], result['status'])}" + (
        f" (assignment {result['assignment_id']})" if result.get("assignment_id") else "")


async def call(url: str, subject: str, payload: dict[str, Any], with_names: bool) -> tuple[dict[str, Any], dict[str, str]]:
    client = await Client.connect(url)
    try:
        result = await client.call(subject, payload)
        return result, (await names_of(client, volunteer_ids(result)) if with_names else {})
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    url = nats_url(getattr(args, "data", DEFAULT_DATA))
    subject, payload = call_for(args)
    try:
        result, names = asyncio.run(call(url, subject, payload, not args.json))
    except CallFailed as exc:
        print_refusal(exc)
        return 1
    print(render(args, result, names))
    return 0
