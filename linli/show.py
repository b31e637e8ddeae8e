"""How events and results look in a terminal: one readable line each."""

import os
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console

console = Console(highlight=False)
# People read times in the district's own zone; events carry UTC.
DISTRICT_TZ = ZoneInfo(os.environ.get("LINLI_TIMEZONE", "Asia/Shanghai"))

STYLE = {
    "care.duty.missed": "bold red",
    "care.escalated": "red",
    "care.escalation.stopped": "green",
    "request.created": "bold cyan",
    "volunteer.registered": "dim",
    "volunteer.assigned": "yellow",
    "assignment.accepted": "green",
    "assignment.declined": "red",
    "assignment.expired": "red",
    "assignment.completed": "bold green",
    "request.unmatched": "bold red",
    "hours.logged": "magenta",
    "points.earned": "bold magenta",
    "request.rated": "cyan",
    "request.cancelled": "red",
    "assignment.withdrawn": "dim red",
    "request.reopened": "bold red",
    "points.redeemed": "magenta",
    "notification.delivered": "blue",
    "notification.failed": "bold red",
}


def short(value: str | None) -> str:
    return (value or "")[:10]


def describe(event: dict[str, Any]) -> str:
    kind = event["type"].removeprefix("linli.")
    d = event.get("data", {})
    match kind:
        case "request.created":
            return f"{short(d['request_id'])} {d['service']} in grid {d['grid']} ({d['urgency']}, via {d['channel']})"
        case "volunteer.registered":
            return f"{short(d['volunteer_id'])} grids={','.join(d['grids'])} skills={','.join(d['skills'])}"
        case "volunteer.assigned":
            return f"offer {short(d['assignment_id'])}: request {short(d['request_id'])} -> {short(d['volunteer_id'])}"
        case "assignment.accepted" | "assignment.expired":
            return f"{short(d['volunteer_id'])} on request {short(d['request_id'])}"
        case "assignment.declined":
            return f"{short(d['volunteer_id'])} on request {short(d['request_id'])}: {d.get('reason') or 'no reason'}"
        case "assignment.completed":
            return f"{short(d['volunteer_id'])} finished request {short(d['request_id'])} in {d['hours']} h"
        case "assignment.withdrawn":
            return f"{short(d['volunteer_id'])} on request {short(d['request_id'])}: {d.get('reason', '')}"
        case "pairing.created" | "pairing.ended":
            return f"{d.get('kind', '')} {short(d['volunteer_id'])} for resident {short(d['resident_ref'])}"
        case "request.reopened":
            return f"{short(d['request_id'])}: {d['reason']} -> operator"
        case "points.redeemed":
            return f"{short(d.get('volunteer_id'))} spent {d.get('points', '')} points"
        case "request.unmatched":
            return f"{short(d['request_id'])}: {d['reason']} -> operator"
        case "care.duty.missed":
            return f"plan {short(d['plan_id'])} {d['duty_id']} due {d['due_at'][11:16]} UTC: {d['alert']}"
        case "care.escalated":
            return f"plan {short(d['plan_id'])} step {d['step']} ({d['level']}) -> {', '.join(d['recipients'])}"
        case "care.escalation.stopped":
            return f"plan {short(d['plan_id'])} {d['duty_id']}: {d['by']} checked in at step {d['step']}"
        case "care.contact.overdue":
            return f"plan {short(d['plan_id'])}: no contact for {d['days']} days -> {d['director']}"
        case "care.plan.changed":
            return f"plan {short(d['plan_id'])} {d['action']} by {d['by']} for resident {short(d['resident_ref'])}"
        case "hours.logged":
            return f"{d['hours']} h of {d['category']} for {short(d['volunteer_id'])}"
        case "points.earned":
            return f"{short(d['volunteer_id'])} +{d['points']} points (balance {d['balance_points']})"
        case "request.rated":
            return f"{short(d['request_id'])} {'★' * d['stars']} {d.get('comment', '')}"
        case "notification.delivered" | "notification.failed":
            return f"{d['kind']} to {d['recipient'][:18]} by {d['channel']} after {d['attempts']} attempt(s)"
        case _:
            return str(d)[:100]


def local_time(moment: datetime | str | None) -> str:
    """HH:MM:SS in the district's time zone, for an aware datetime or an ISO 8601 string."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment[11:19]
    if moment is None:
        return ""
    return moment.astimezone(DISTRICT_TZ).strftime("%H:%M:%S")


def print_event(event: dict[str, Any]) -> None:
    kind = event["type"].removeprefix("linli.")
    at = local_time(event.get("time"))
    console.print(f"[dim]{at}[/dim] [{STYLE.get(kind, 'white')}]{kind:<24}[/] {describe(event)}")
