"""Notifier's decisions: who is told what, when to try again. Plain functions over plain data, no I/O."""

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal

from contracts import Envelope, new_event
from contracts.envelope import derived_id
from contracts.events import (
    AssignmentAccepted,
    AssignmentWithdrawn,
    NotificationDelivered,
    NotificationFailed,
    PointsEarned,
    RequestReopened,
    RequestUnmatched,
    VolunteerAssigned,
)

SOURCE = "linli/notifier"
URGENCY = {"routine": "一般", "soon": "尽快", "urgent": "紧急"}
FINAL = {"delivered", "failed"}
ContactKind = Literal["volunteer", "resident"]


@dataclass(frozen=True)
class Route:
    kind: str
    recipient: str
    lookup: tuple[ContactKind, str] | None


def route(event: Envelope[Any]) -> Route:
    match event.data:
        case VolunteerAssigned(volunteer_id=volunteer):
            return Route("offer", f"volunteer:{volunteer}", ("volunteer", volunteer))
        case AssignmentAccepted(request_id=request):
            return Route("volunteer_coming", f"resident:{request}", ("resident", request))
        case AssignmentWithdrawn(volunteer_id=volunteer):
            return Route("offer_withdrawn", f"volunteer:{volunteer}", ("volunteer", volunteer))
        case RequestUnmatched():
            return Route("unmatched", "operators", None)
        case RequestReopened():
            return Route("reopened", "operators", None)
        case PointsEarned(volunteer_id=volunteer):
            return Route("points_earned", f"volunteer:{volunteer}", ("volunteer", volunteer))
    raise ValueError(f"the notifier has nothing to say about {event.type}")


def number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def local_time(at: datetime, zone: tzinfo) -> str:
    local = at.astimezone(zone)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def greeting(name: str) -> str:
    return f"{name}您好，" if name else "您好，"


def text(event: Envelope[Any], name: str, labels: dict[str, str], zone: tzinfo) -> str:
    match event.data:
        case VolunteerAssigned() as offer:
            where = f"，网格{offer.grid}" if offer.grid else ""
            service = labels.get(offer.service) or offer.service or "服务"
            return (
                f"新的服务请求：{service}{where}，{URGENCY[offer.urgency]}。"
                f"请于{local_time(offer.expires_at, zone)}前回复，派单号{offer.assignment_id}"
            )
        case AssignmentAccepted():
            return f"{greeting(name)}已有志愿者接下您的服务请求，将按约定上门。"
        case AssignmentWithdrawn() as withdrawn:
            return f"{greeting(name)}派单{withdrawn.assignment_id}已撤回（{withdrawn.reason}），无需前往。谢谢！"
        case RequestUnmatched() as unmatched:
            tried = f"已联系{len(unmatched.tried)}位志愿者，" if unmatched.tried else ""
            return f"[{event.district}] 请求{unmatched.request_id}无人接单：{unmatched.reason}。{tried}请尽快跟进。"
        case RequestReopened() as reopened:
            return (f"[{event.district}] 请求{reopened.request_id}被居民退回（{reopened.reason}），"
                    f"志愿者{reopened.volunteer_id}的时长待复核，请尽快回访。")
        case PointsEarned() as earned:
            return (
                f"{greeting(name)}本次服务{number(earned.hours)}小时，获得{number(earned.points)}积分，"
                f"当前积分{number(earned.balance_points)}。感谢您的奉献！"
            )
    raise ValueError(f"the notifier has nothing to say about {event.type}")


def notification_id(event_id: str, kind: str) -> str:
    return derived_id("notification", event_id, kind)


def new_notification(
    event: Envelope[Any], to: Route, contact: dict[str, str] | None, body: str, channel: str, now: datetime
) -> dict[str, Any]:
    return {
        "_id": notification_id(event.id, to.kind),
        "kind": to.kind,
        "recipient": to.recipient,
        # Empty when a person's contact is unknown: nobody can be reached, which is a failure to report.
        "name": contact["name"] if contact else "",
        "phone": contact["phone"] if contact else "",
        "reachable": contact is not None or to.lookup is None,
        "text": body,
        "channel": channel,
        "district": event.district,
        "request_id": event.data.request_id,
        "event_id": event.id,
        "created_at": now.isoformat(),
        "created": now.timestamp(),
        "status": "pending",
        "attempts": 0,
        "error": "",
    }


WEBHOOK_FIELDS = (
    "notification_id", "kind", "recipient", "name", "phone", "text", "district", "request_id", "event_id", "created_at"
)


def webhook_payload(doc: dict[str, Any]) -> dict[str, Any]:
    return {name: doc["_id"] if name == "notification_id" else doc[name] for name in WEBHOOK_FIELDS}


def backoff(after_attempt: int, base: float, cap: float) -> float:
    return min(base * 2.0 ** (after_attempt - 1), cap)


def retryable(status: int | None) -> bool:
    """`status` is the HTTP status, or None when no answer came (connection error, timeout)."""
    if status is None or status in (408, 429):
        return True
    return not (200 <= status < 300 or 400 <= status < 500)


def outcome_event(doc: dict[str, Any]) -> Envelope[Any]:
    common = {
        "notification_id": doc["_id"],
        "channel": doc["channel"],
        "recipient": doc["recipient"],
        "kind": doc["kind"],
        "attempts": max(doc["attempts"], 1),
    }
    data = NotificationDelivered(**common) if doc["status"] == "delivered" else NotificationFailed(
        **common, error=doc["error"]
    )
    return new_event(
        data,
        source=SOURCE,
        district=doc["district"],
        subject=doc["request_id"],
        correlationid=doc["request_id"],
        causationid=doc["event_id"],
        event_id=derived_id(f"notification.{doc['status']}", doc["_id"]),
    )
