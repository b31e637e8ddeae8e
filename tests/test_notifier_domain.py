import hashlib
import hmac
import json
import re
import typing
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import new_event
from contracts.care import ContactOverdue, Escalated
from contracts.envelope import Envelope
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentExpired,
    AssignmentWithdrawn,
    NotificationDelivered,
    NotificationFailed,
    PointsEarned,
    RequestClosed,
    RequestRedispatched,
    RequestReopened,
    RequestUnmatched,
    UnmatchedReason,
    VolunteerAssigned,
)
from services.common.codes import short_code
from services.common.places import DEFAULT_PATH as DEFAULT_PLACES
from services.common.places import District, Places
from services.notifier import handlers
from services.notifier.messages import Messages
from services.notifier.channels import encode, masked, signature, webhook_headers

pytestmark = pytest.mark.domain

NOW = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


def event(data: BaseModel, event_id: str = "e-1") -> Envelope[Any]:
    return new_event(data, source="test", district="beibei", subject="r-1", correlationid="r-1", event_id=event_id)


MESSAGES = Messages.load()
PLACES = Places.load(DEFAULT_PLACES)
CODE, REQUEST_CODE = "K7QX3M", "R4T8NB"
VOLUNTEER = {"name": "袁文", "phone": "13900139000", "address": ""}
RESIDENT = {"name": "王秀英", "phone": "13800138000", "address": "泉外园小区3栋2单元401"}
CONTACTS = {"volunteer:v-1": VOLUNTEER, "resident:r-1": RESIDENT}
SERVICES = {"repair.plumbing": "水电维修"}
WINDOW = {
    "window_start": datetime(2026, 12, 2, 1, 30, tzinfo=UTC), "window_end": datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
}


def offer(**overrides: Any) -> Envelope[Any]:
    fields: dict[str, Any] = {
        "request_id": "r-1", "volunteer_id": "v-1", "assignment_id": "3f2a9c1e-8b7d-4e6f-a5c4-1b2d3e4f5a6b",
        "expires_at": datetime(2026, 12, 2, 0, 30, tzinfo=UTC), "service": "repair.plumbing",
        "category": "repair", "grid": "quanwai-01", "urgency": "urgent", "code": CODE, "request_code": REQUEST_CODE,
        "district": "beibei", "description": "厨房水管漏水", "place": "neighbour", **WINDOW,
    }
    return event(VolunteerAssigned(**{**fields, **overrides}))


def ids(**more: Any) -> dict[str, Any]:
    return {"request_id": "r-1", "volunteer_id": "v-1", "assignment_id": "a-42", "code": CODE,
            "request_code": REQUEST_CODE, **more}


def accepted(**more: Any) -> Envelope[Any]:
    return event(AssignmentAccepted(**ids(service="repair.plumbing", **WINDOW, **more)))


def say(
    event: Envelope[Any], kind: str | None = None, lang: str = "zh", contacts: dict[str, Any] | None = None,
    places: Places = PLACES,
) -> str:
    to = next(r for r in handlers.routes(event) if kind in (None, r.kind))
    facts = handlers.Facts(CONTACTS if contacts is None else contacts, SERVICES, places, lang)
    return handlers.text(event, to, facts, MESSAGES)


def every_event() -> list[Envelope[Any]]:
    earned = PointsEarned(volunteer_id="v-1", request_id="r-1", hours=Decimal("1.50"), points=Decimal("15.00"),
                          balance_points=Decimal("120"), rate=Decimal("10"))
    return [
        offer(), offer(description="", place="", window_start=None, window_end=None), accepted(),
        event(AssignmentWithdrawn(**ids(reason="another volunteer accepted first"), by="matcher")),
        event(AssignmentWithdrawn(**ids(reason="the request was cancelled"), by="resident")),
        event(AssignmentWithdrawn(**ids(reason="reassign by 李主任: 改派"), by="李主任")),
        event(AssignmentExpired(**ids())),
        event(AssignmentCompleted(**ids(hours=Decimal("1.5")))),
        *[event(RequestUnmatched(request_id="r-1", reason="no volunteer is registered in this district",
                                 reason_code=code, request_code=REQUEST_CODE, tried=["v-1", "v-2"]))
          for code in typing.get_args(UnmatchedReason)],
        event(RequestReopened(request_id="r-1", volunteer_id="v-1", stars=1, reason="1 stars: 没修好")),
        event(RequestRedispatched(request_id="r-1", operator="李主任", reason="换一位师傅")),
        event(RequestClosed(request_id="r-1", operator="李主任", reason="已电话回访解决")),
        event(earned),
        *[care_step(level) for level in ("holder", "group", "grid_worker", "operators")],
        event(ContactOverdue(plan_id="cp-1", district="beibei", resident_ref="res-1", caring_parent="p-1",
                             director="person:d-1", days=14)),
    ]


def care_step(level: str, alert: str = "missed", recipients: tuple[str, ...] = ("person:n-1",)) -> Envelope[Any]:
    return event(Escalated(plan_id="cp-3f2a9c1e", duty_id="visit", district="beibei", resident_ref="res-1",
                           due_at=datetime(2026, 12, 1, 10, tzinfo=UTC), step=1, level=level,  # type: ignore[arg-type]
                           recipients=list(recipients), alert=alert))  # type: ignore[arg-type]


def test_each_care_escalation_step_tells_each_of_its_people_in_the_district_clock_without_a_name() -> None:
    step = care_step("group", recipients=("person:n-1", "person:w-1"))
    assert [(r.recipient, r.kind) for r in handlers.routes(step)] == [
        ("person:n-1", "care_group:person:n-1"), ("person:w-1", "care_group:person:w-1")]
    text = say(care_step("holder", alert="not_home"))
    assert "上门探访" in text and "12月1日 18:00" in text and "无人应答" in text and short_code("cp-3f2a9c1e") in text
    assert "Please act now" in say(care_step("operators"), lang="en")


def test_an_offer_names_the_service_place_window_urgency_need_nearness_and_code_in_the_district_clock() -> None:
    text = say(offer())

    assert "水电维修" in text and "泉外社区泉外第一网格" in text and "相邻网格" in text
    assert "12月2日 09:30–11:00" in text and "紧急" in text and "厨房水管漏水" in text
    assert "12月2日 08:30前回复" in text and CODE in text
    assert "3f2a9c1e" not in text and "quanwai-01" not in text


def test_an_offer_from_before_codes_quotes_the_code_its_id_gives_never_the_id() -> None:
    text = say(offer(code=""))
    assert short_code("3f2a9c1e-8b7d-4e6f-a5c4-1b2d3e4f5a6b") in text and "3f2a9c1e" not in text


def test_an_offer_without_a_window_or_need_says_as_soon_as_possible_and_has_no_empty_parts() -> None:
    text = say(offer(window_start=None, window_end=None, description="", place=""))
    assert "时间：尽快" in text and "需求" not in text and "（" not in text


def test_an_offer_for_a_service_the_catalogue_lacks_names_no_id() -> None:
    text = say(offer(service="repair.unknown"))
    assert "志愿服务" in text and "repair" not in text


def test_an_offer_reads_in_english_when_english_is_chosen() -> None:
    text = say(offer(), lang="en", places=PLACES)
    assert "Quanwai Community Quanwai Grid 1" in text and "2 Dec 09:30–11:00" in text and "urgent" in text
    assert CODE in text and "neighbouring grid" in text


def test_times_are_read_in_the_districts_own_clock() -> None:
    far = Places({"kashi": District("kashi", "喀什", "", "Asia/Urumqi", {}, {}, {})})
    text = say(offer(district="kashi", grid="g1"), places=far)
    assert "12月2日 07:30–09:00" in text and "12月2日 06:30前回复" in text


def test_the_accepted_volunteer_gets_the_address_the_residents_name_and_phone_and_the_window() -> None:
    text = say(accepted(), "accepted_details")
    assert text.startswith("袁文您好") and CODE in text and "水电维修" in text
    assert "王秀英" in text and "13800138000" in text and "泉外园小区3栋2单元401" in text
    assert "12月2日 09:30–11:00" in text


def test_the_accepted_volunteers_text_leaves_out_an_address_intake_does_not_have() -> None:
    text = say(accepted(), "accepted_details", contacts={**CONTACTS, "resident:r-1": {**RESIDENT, "address": ""}})
    assert "地址" not in text and "13800138000" in text


def test_the_resident_hears_who_is_coming_and_when_but_not_their_phone() -> None:
    text = say(accepted(), "volunteer_coming")
    assert text.startswith("王秀英您好") and "志愿者袁文" in text and "12月2日 09:30–11:00" in text
    assert REQUEST_CODE in text and "13900139000" not in text and "13800138000" not in text


def test_an_acceptance_tells_the_volunteer_and_the_resident_and_no_one_else() -> None:
    assert [(r.kind, r.recipient) for r in handlers.routes(accepted())] == [
        ("accepted_details", "volunteer:v-1"), ("volunteer_coming", "resident:r-1")
    ]


def test_only_the_accepted_volunteer_is_ever_given_the_residents_phone_or_address() -> None:
    for each in every_event():
        for to in handlers.routes(each):
            text = say(each, to.kind)
            told = "13800138000" in text or "泉外园小区" in text
            assert told == (to.kind == "accepted_details"), (to.kind, text)


def test_a_completed_service_asks_the_resident_to_rate_it_with_the_request_code() -> None:
    completed = event(AssignmentCompleted(**ids(hours=Decimal("1.5"))))
    assert handlers.route(completed) == handlers.Route(
        "please_rate", "resident:r-1", ("resident", "r-1"), (("volunteer", "v-1"),)
    )
    text = say(completed)
    assert text.startswith("王秀英您好") and "志愿者袁文" in text and "星" in text and REQUEST_CODE in text


@pytest.mark.parametrize("code", typing.get_args(UnmatchedReason))
def test_operators_hear_which_request_went_unmatched_and_why_in_words_chosen_by_the_reason_code(code: str) -> None:
    unmatched = event(RequestUnmatched(request_id="r-77", reason="no volunteer is registered in this district",
                                       reason_code=code, request_code=REQUEST_CODE, tried=["v-1", "v-2"]))
    text = say(unmatched)
    assert text.startswith("【北碚区】") and REQUEST_CODE in text and "2位" in text
    assert MESSAGES.render("zh", f"unmatched.reason.{code or 'other'}") in text
    assert "volunteer" not in text


def test_each_unmatched_reason_has_its_own_words() -> None:
    reasons = [MESSAGES.render("zh", f"unmatched.reason.{c or 'other'}") for c in typing.get_args(UnmatchedReason)]
    assert len(set(reasons)) == len(reasons)


def test_points_text_gives_hours_points_and_balance_without_trailing_zeros() -> None:
    earned = event(
        PointsEarned(
            volunteer_id="v-1", request_id="r-1", hours=Decimal("1.50"), points=Decimal("15.00"),
            balance_points=Decimal("120"), rate=Decimal("10"),
        )
    )
    text = say(earned)
    assert "袁文" in text and "1.5小时" in text and "15积分" in text and "当前积分120" in text


def test_both_catalogues_have_the_same_texts_with_the_same_placeholders() -> None:
    zh, en = MESSAGES.catalogues["zh"], MESSAGES.catalogues["en"]
    assert set(zh) == set(en)
    for key in zh:
        assert MESSAGES.placeholders("zh", key) == MESSAGES.placeholders("en", key), key


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_template_renders_with_sample_data_and_leaves_no_placeholder(lang: str) -> None:
    for key in MESSAGES.catalogues[lang]:
        sample = {name: "样" for name in MESSAGES.placeholders(lang, key)}
        rendered = MESSAGES.render(lang, key, **sample)
        assert "{" not in rendered and "}" not in rendered, key
    with pytest.raises(KeyError):
        MESSAGES.render(lang, "offer", greeting="")


def test_no_chinese_template_holds_an_english_word() -> None:
    for key, template in MESSAGES.catalogues["zh"].items():
        assert re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", "", template)) == [], key


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_text_renders_in_both_languages_and_chinese_ones_leak_no_english(lang: str) -> None:
    for each in every_event():
        for to in handlers.routes(each):
            text = say(each, to.kind, lang)
            assert text and "{" not in text and "None" not in text, (to.kind, text)
            if lang == "zh":
                words = set(re.findall(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*", text))
                assert words <= {CODE, REQUEST_CODE, short_code("r-1"), short_code("cp-3f2a9c1e"),
                                     short_code("cp-1")}, (to.kind, text)


def test_operators_hear_of_a_redispatch_and_a_close_with_who_and_why() -> None:
    redispatched = event(RequestRedispatched(request_id="r-1", operator="李主任", reason="换一位师傅"))
    closed = event(RequestClosed(request_id="r-1", operator="李主任", reason="已电话回访解决"))
    assert handlers.route(redispatched).recipient == handlers.route(closed).recipient == "operators"
    assert "李主任" in say(redispatched) and "换一位师傅" in say(redispatched) and "重新派单" in say(redispatched)
    assert "李主任" in say(closed) and "已电话回访解决" in say(closed) and "结案" in say(closed)
    assert short_code("r-1") in say(closed)


@pytest.mark.parametrize(
    ("data", "kind", "recipient", "lookup"),
    [
        (RequestUnmatched(request_id="r-1", reason="x"), "unmatched", "operators", None),
        (PointsEarned(volunteer_id="v-1", request_id="r-1", hours=Decimal(1), points=Decimal(10),
                      balance_points=Decimal(10), rate=Decimal(10)), "points_earned", "volunteer:v-1",
         ("volunteer", "v-1")),
    ],
)
def test_each_of_these_events_has_one_recipient(data: BaseModel, kind: str, recipient: str, lookup: Any) -> None:
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


@pytest.mark.parametrize(
    ("by", "words"), [("matcher", "其他志愿者接下"), ("resident", "居民已取消"), ("李主任", "工作人员收回")]
)
def test_a_withdrawn_offer_tells_the_volunteer_why_and_not_to_come(by: str, words: str) -> None:
    withdrawn = event(AssignmentWithdrawn(**ids(reason="another volunteer accepted first"), by=by))
    assert handlers.route(withdrawn) == handlers.Route("offer_withdrawn", "volunteer:v-1", ("volunteer", "v-1"))
    text = say(withdrawn)
    assert text.startswith("袁文您好") and CODE in text and words in text and "无需前往" in text
    assert "another" not in text


def test_a_lapsed_offer_tells_the_volunteer_it_has_gone_to_someone_else() -> None:
    lapsed = event(AssignmentExpired(**ids()))
    assert handlers.route(lapsed) == handlers.Route("offer_lapsed", "volunteer:v-1", ("volunteer", "v-1"))
    assert CODE in say(lapsed) and "已过回复时间" in say(lapsed)


def test_a_reopened_request_reaches_the_operators_with_the_volunteers_name() -> None:
    reopened = event(RequestReopened(request_id="r-7", volunteer_id="v-1", stars=1, reason="1 stars: 没修好"))
    to = handlers.route(reopened)
    assert (to.kind, to.recipient, to.lookup, to.about) == ("reopened", "operators", None, (("volunteer", "v-1"),))
    text = say(reopened)
    assert short_code("r-7") in text and "1星" in text and "志愿者袁文" in text and "复核" in text
