import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from contracts import new_event
from contracts.envelope import Envelope
from contracts.events import (
    AssignmentAccepted,
    NotificationDelivered,
    NotificationFailed,
    PointsEarned,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.notifier import handlers
from services.notifier.channels import encode, masked, signature, webhook_headers

pytestmark = pytest.mark.domain

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


def event(data: BaseModel, event_id: str = "e-1") -> Envelope[Any]:
    return new_event(data, source="test", district="beibei", subject="r-1", correlationid="r-1", event_id=event_id)


def offer(**overrides: Any) -> Envelope[Any]:
    fields: dict[str, Any] = {
        "request_id": "r-1", "volunteer_id": "v-1", "assignment_id": "a-42",
        "expires_at": datetime(2026, 5, 1, 6, 30, tzinfo=UTC), "service": "repair.plumbing",
        "category": "repair", "grid": "quanwai-01", "urgency": "urgent",
    }
    return event(VolunteerAssigned(**{**fields, **overrides}))


def test_an_offer_names_the_service_grid_urgency_deadline_in_local_time_and_assignment() -> None:
    text = handlers.text(offer(), "袁文", {"repair.plumbing": "水电维修"}, SHANGHAI)

    assert "水电维修" in text and "quanwai-01" in text and "紧急" in text
    assert "5月1日 14:30" in text and "a-42" in text
    assert len(text) <= 140


def test_an_offer_for_an_unknown_service_shows_its_id() -> None:
    text = handlers.text(offer(urgency="routine", grid=""), "", {}, SHANGHAI)
    assert "repair.plumbing" in text and "一般" in text and "网格" not in text


def test_the_resident_hears_a_volunteer_is_coming() -> None:
    accepted = event(AssignmentAccepted(request_id="r-1", volunteer_id="v-1", assignment_id="a-42"))
    text = handlers.text(accepted, "王秀英", {}, SHANGHAI)
    assert text.startswith("王秀英您好") and "志愿者" in text and "上门" in text
    assert "v-1" not in text


def test_operators_hear_which_request_went_unmatched_and_why() -> None:
    unmatched = event(RequestUnmatched(request_id="r-77", reason="该网格暂无空闲志愿者", tried=["v-1", "v-2"]))
    text = handlers.text(unmatched, "", {}, SHANGHAI)
    assert "r-77" in text and "该网格暂无空闲志愿者" in text and "2位" in text and "beibei" in text


def test_points_text_gives_hours_points_and_balance_without_trailing_zeros() -> None:
    earned = event(
        PointsEarned(
            volunteer_id="v-1", request_id="r-1", hours=Decimal("1.50"), points=Decimal("15.00"),
            balance_points=Decimal("120"), rate=Decimal("10"),
        )
    )
    text = handlers.text(earned, "袁文", {}, SHANGHAI)
    assert "袁文" in text and "1.5小时" in text and "15积分" in text and "当前积分120" in text


@pytest.mark.parametrize(
    ("data", "kind", "recipient", "lookup"),
    [
        (AssignmentAccepted(request_id="r-1", volunteer_id="v-1", assignment_id="a"), "volunteer_coming",
         "resident:r-1", ("resident", "r-1")),
        (RequestUnmatched(request_id="r-1", reason="x"), "unmatched", "operators", None),
        (PointsEarned(volunteer_id="v-1", request_id="r-1", hours=Decimal(1), points=Decimal(10),
                      balance_points=Decimal(10), rate=Decimal(10)), "points_earned", "volunteer:v-1",
         ("volunteer", "v-1")),
    ],
)
def test_each_event_has_one_recipient(data: BaseModel, kind: str, recipient: str, lookup: Any) -> None:
    assert handlers.route(event(data)) == handlers.Route(kind, recipient, lookup)


def test_an_offer_goes_to_the_volunteer_found_through_intake() -> None:
    assert handlers.route(offer()) == handlers.Route("offer", "volunteer:v-1", ("volunteer", "v-1"))


def test_the_same_event_always_gives_the_same_notification_id() -> None:
    first = handlers.new_notification(offer(), handlers.route(offer()), None, "t", "webhook", NOW)
    again = handlers.new_notification(offer(), handlers.route(offer()), None, "t", "webhook", NOW)
    other = event(offer().data, event_id="e-2")
    assert first["_id"] == again["_id"] == handlers.notification_id("e-1", "offer")
    assert handlers.notification_id(other.id, "offer") != first["_id"]


def test_a_person_without_a_contact_is_unreachable_but_operators_need_none() -> None:
    assert not handlers.new_notification(offer(), handlers.route(offer()), None, "t", "webhook", NOW)["reachable"]
    unmatched = event(RequestUnmatched(request_id="r-1", reason="x"))
    assert handlers.new_notification(unmatched, handlers.route(unmatched), None, "t", "webhook", NOW)["reachable"]


def test_the_webhook_body_carries_the_contact_and_text_and_is_signed_over_its_exact_bytes() -> None:
    doc = handlers.new_notification(
        offer(), handlers.route(offer()), {"name": "袁文", "phone": "13900139000"}, "新的服务请求", "webhook", NOW
    )
    body = encode(handlers.webhook_payload(doc))
    payload = json.loads(body)
    assert set(payload) == set(handlers.WEBHOOK_FIELDS)
    assert payload["notification_id"] == doc["_id"] and payload["phone"] == "13900139000"
    assert payload["text"] == "新的服务请求" and payload["event_id"] == "e-1" and payload["request_id"] == "r-1"

    headers = webhook_headers(b"s3cret", body, doc["_id"], 1_700_000_000.9)
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature(b"s3cret", body) == expected
    assert headers["X-Linli-Signature"] == f"sha256={expected}"
    assert headers["X-Linli-Timestamp"] == "1700000000" and headers["Idempotency-Key"] == doc["_id"]


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [handlers.backoff(n, 0.5, 8.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # The default five attempts wait 7.5 s in all, well inside the default ack_wait of 30 s.
    assert sum(handlers.backoff(n, 0.5, 8.0) for n in range(1, 5)) == 7.5


@pytest.mark.parametrize(
    ("status", "retry"),
    [(None, True), (500, True), (502, True), (503, True), (408, True), (429, True),
     (400, False), (401, False), (403, False), (404, False), (422, False), (200, False), (204, False)],
)
def test_server_errors_timeouts_and_throttling_are_retried_other_client_errors_are_not(
    status: int | None, retry: bool
) -> None:
    assert handlers.retryable(status) is retry


def test_the_outcome_event_is_derived_from_the_notification_and_caused_by_its_event() -> None:
    doc = handlers.new_notification(offer(), handlers.route(offer()), None, "t", "webhook", NOW)
    delivered = handlers.outcome_event({**doc, "status": "delivered", "attempts": 3})
    failed = handlers.outcome_event({**doc, "status": "failed", "attempts": 5, "error": "HTTP 500"})

    assert isinstance(delivered.data, NotificationDelivered) and delivered.data.attempts == 3
    assert isinstance(failed.data, NotificationFailed) and failed.data.error == "HTTP 500"
    assert delivered.id == handlers.outcome_event({**doc, "status": "delivered", "attempts": 3}).id
    assert delivered.id != failed.id
    assert delivered.causationid == "e-1" and delivered.correlationid == "r-1" and delivered.district == "beibei"
    assert delivered.type == "linli.notification.delivered" and failed.type == "linli.notification.failed"


def test_phones_are_masked_in_the_console_log() -> None:
    assert masked("139 0013 9000") == "139****9000"
    assert masked("12345") == "****"


def test_a_withdrawn_offer_tells_the_volunteer_not_to_come() -> None:
    from contracts import new_event
    from contracts.events import AssignmentWithdrawn
    from services.notifier import handlers as notifier

    event = new_event(
        AssignmentWithdrawn(request_id="r1", volunteer_id="v1", assignment_id="a-9", reason="another volunteer accepted first"),
        source="linli/matcher", district="beibei", subject="r1", correlationid="r1",
    )
    route = notifier.route(event)
    assert (route.kind, route.recipient, route.lookup) == ("offer_withdrawn", "volunteer:v1", ("volunteer", "v1"))
    message = notifier.text(event, "袁文", {}, ZoneInfo("Asia/Shanghai"))
    assert "a-9" in message and "无需前往" in message and message.startswith("袁文您好")


def test_a_reopened_request_reaches_the_operators() -> None:
    from contracts.events import RequestReopened
    from services.notifier import handlers as notifier

    event = new_event(
        RequestReopened(request_id="r-7", volunteer_id="v-3", stars=1, reason="rated 1 star: 没修好"),
        source="linli/intake", district="beibei", subject="r-7", correlationid="r-7",
    )
    route = notifier.route(event)
    assert (route.kind, route.recipient, route.lookup) == ("reopened", "operators", None)
    message = notifier.text(event, "", {}, ZoneInfo("Asia/Shanghai"))
    assert "r-7" in message and "没修好" in message and "复核" in message
