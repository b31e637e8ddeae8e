import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel
from pymongo import monitoring

from contracts import API, Envelope, event_subject, new_event
from contracts.events import AssignmentAccepted, AssignmentCompleted, PointsEarned, RequestUnmatched, VolunteerAssigned
from linli.client import caught_up
from services.common.bus import envelope_json
from services.common.codes import short_code
from services.common.places import DEFAULT_PATH as DEFAULT_PLACES
from services.common.config import BusSettings
from services.common.runtime import Service
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.notifier import handlers
from services.notifier.app import build
from services.notifier.config import NotifierSettings
from tests.conftest import Bus, eventually, stored_events

pytestmark = pytest.mark.service

SECRET = "test-secret-不要外传"
VOLUNTEER = {"name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"]}


class Hook:
    """A real HTTP endpoint standing in for the SMS gateway: it records every POST and answers as scripted."""

    def __init__(self) -> None:
        self.url = ""
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.posts.append((headers, body))
            return self.script.pop(0) if self.script else self.status

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def hook() -> Iterator[Hook]:
    hook = Hook()

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = hook.answer({k.lower(): v for k, v in self.headers.items()}, body)
            time.sleep(hook.delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_port}/notify"
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
async def run() -> AsyncIterator[Callable[[Service], Awaitable[Service]]]:
    running: list[Service] = []

    async def start(service: Service) -> Service:
        await service.start()
        running.append(service)
        return service

    yield start
    for service in reversed(running):
        await service.stop()


def notifier_settings(bus: BusSettings, hook: Hook | None, **overrides: Any) -> NotifierSettings:
    return NotifierSettings(
        **{
            "bus": bus,
            "webhook_url": hook.url if hook else None,
            "webhook_secret": SECRET if hook else "",
            "webhook_attempts": 3,
            "webhook_backoff": 0.05,
            "webhook_backoff_cap": 0.2,
            "webhook_timeout": 3.0,
            "contact_timeout": 1.0,
            "places": DEFAULT_PLACES,
            **overrides,
        }
    )


async def publish(nc: NATS, event: Envelope[Any], msg_id: str | None = None) -> None:
    subject = event_subject(event.short_type, event.district)
    await nc.jetstream().publish(subject, envelope_json(event), headers={"Nats-Msg-Id": msg_id or event.id})


def about(data: BaseModel, request_id: str) -> Envelope[Any]:
    return new_event(data, source="linli/matcher", district="beibei", subject=request_id, correlationid=request_id)


async def volunteer_and_request(bus: Bus) -> tuple[str, str]:
    volunteer_id = (await bus.call(API.INTAKE_REGISTER_VOLUNTEER, VOLUNTEER))["volunteer_id"]
    request_id = (
        await bus.call(
            API.INTAKE_SUBMIT,
            {
                "idempotency_key": f"kiosk-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-01",
                "service": "repair.plumbing", "urgency": "urgent",
                "resident": {"name": "王秀英", "phone": "13800138000", "address": "泉外园小区3栋2单元401"},
            },
        )
    )["request_id"]
    return volunteer_id, request_id


WINDOW = {
    "window_start": datetime(2026, 12, 2, 1, 30, tzinfo=UTC), "window_end": datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
}


def offer(volunteer_id: str, request_id: str) -> Envelope[Any]:
    assignment_id = str(uuid.uuid4())
    return about(
        VolunteerAssigned(
            request_id=request_id, volunteer_id=volunteer_id, assignment_id=assignment_id,
            expires_at=datetime(2026, 12, 2, 0, 30, tzinfo=UTC), service="repair.plumbing", grid="quanwai-01",
            urgency="urgent", code=short_code(assignment_id), request_code=short_code(request_id), district="beibei",
            description="厨房水管漏水", place="neighbour", **WINDOW,
        ),
        request_id,
    )


async def test_an_offer_reaches_the_volunteer_once_signed_and_with_their_phone(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    event = offer(volunteer_id, request_id)

    await publish(bus.nc, event)

    notification_id = handlers.notification_id(event.id, "offer")
    [delivered] = await bus.wait_for("notification.delivered", notification_id=notification_id)
    assert delivered["data"] == {
        "notification_id": notification_id, "channel": "webhook", "recipient": f"volunteer:{volunteer_id}",
        "kind": "offer", "attempts": 1,
    }
    assert delivered["causationid"] == event.id and delivered["correlationid"] == request_id
    [(headers, body)] = hook.posts
    assert headers["x-linli-signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["idempotency-key"] == notification_id and headers["x-linli-timestamp"].isdigit()
    sent = json.loads(body)
    assert sent["phone"] == "13900139000" and sent["name"] == "袁文" and sent["request_id"] == request_id
    text = sent["text"]
    assert "水电维修" in text and "泉外社区泉外第一网格" in text and "12月2日 09:30–11:00" in text and "紧急" in text
    assert "厨房水管漏水" in text and event.data.code in text and event.data.assignment_id not in text

    stored = await notifier.db["notifications"].find_one({"_id": notification_id})
    assert stored is not None
    assert (stored["status"], stored["attempts"], stored["channel"]) == ("delivered", 1, "webhook")
    assert stored["text"] == sent["text"] and stored["event_id"] == event.id
    assert await notifier.db["attempts"].count_documents({"notification_id": notification_id}) == 1
    assert await notifier.db["contacts"].find_one({"_id": f"volunteer:{volunteer_id}"})


async def test_a_webhook_that_fails_twice_is_tried_three_times_and_every_attempt_is_recorded(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook, webhook_attempts=5)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    hook.script = [500, 500]
    event = offer(volunteer_id, request_id)

    await publish(bus.nc, event)

    notification_id = handlers.notification_id(event.id, "offer")
    [delivered] = await bus.wait_for("notification.delivered", notification_id=notification_id)
    assert delivered["data"]["attempts"] == 3
    assert len(hook.posts) == 3
    assert {h["idempotency-key"] for h, _ in hook.posts} == {notification_id}
    assert len({body for _, body in hook.posts}) == 1  # a retry sends the same bytes
    attempts = await notifier.db["attempts"].find({"notification_id": notification_id}).sort("n", 1).to_list()
    assert [(a["n"], a["outcome"], a["status"]) for a in attempts] == [
        (1, "failed", 500), (2, "failed", 500), (3, "delivered", 200)
    ]
    assert attempts[0]["at"] < attempts[1]["at"] < attempts[2]["at"]


@pytest.mark.parametrize(("status", "tries"), [(503, 3), (429, 3), (400, 1), (403, 1)])
async def test_a_webhook_that_keeps_failing_gives_notification_failed(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]], status: int, tries: int
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook, webhook_attempts=3)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    hook.status = status
    event = offer(volunteer_id, request_id)

    await publish(bus.nc, event)

    notification_id = handlers.notification_id(event.id, "offer")
    [failed] = await bus.wait_for("notification.failed", notification_id=notification_id)
    assert failed["data"]["attempts"] == tries and failed["data"]["error"] == f"HTTP {status}"
    assert len(hook.posts) == tries
    stored = await notifier.db["notifications"].find_one({"_id": notification_id})
    assert stored is not None and (stored["status"], stored["attempts"]) == ("failed", tries)
    assert await notifier.db["attempts"].count_documents({"notification_id": notification_id}) == tries
    assert bus.of_type("notification.delivered") == []


async def test_an_unreachable_webhook_is_retried_and_then_reported(
    settings: BusSettings, bus: Bus, run: Callable[[Service], Awaitable[Service]]
) -> None:
    dead = Hook()
    dead.url = "http://127.0.0.1:9/nobody-listens"
    await run(build(notifier_settings(settings, dead, webhook_attempts=2)))
    event = about(RequestUnmatched(request_id="r-1", reason="no volunteer"), "r-1")

    await publish(bus.nc, event)

    notification_id = handlers.notification_id(event.id, "unmatched")
    [failed] = await bus.wait_for("notification.failed", notification_id=notification_id)
    assert failed["data"]["attempts"] == 2 and "Connect" in failed["data"]["error"]


async def test_the_same_event_published_twice_past_jetstream_dedup_sends_once(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    event = offer(volunteer_id, request_id)

    await publish(bus.nc, event, msg_id="first-copy")
    await publish(bus.nc, event, msg_id="second-copy")

    notification_id = handlers.notification_id(event.id, "offer")
    await bus.wait_for("notification.delivered", notification_id=notification_id)
    await caught_up(bus.nc, "notifier", "volunteer.assigned")
    await asyncio.sleep(0.5)
    assert len(await stored_events(bus.nc, "volunteer.assigned")) == 2
    assert len(hook.posts) == 1
    assert len(await stored_events(bus.nc, "notification.delivered")) == 1


async def test_an_unmatched_request_reaches_operators_without_any_contact_lookup(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    notifier = await run(build(notifier_settings(settings, hook)))  # no intake running: a lookup would fail
    unmatched = RequestUnmatched(request_id="r-77", reason="no volunteer has this skill", reason_code="no_skill",
                                 request_code="K7QX3M", tried=["v-1"])
    event = about(unmatched, "r-77")

    await publish(bus.nc, event)

    notification_id = handlers.notification_id(event.id, "unmatched")
    [delivered] = await bus.wait_for("notification.delivered", notification_id=notification_id)
    assert delivered["data"]["recipient"] == "operators"
    [sent] = hook.bodies()
    assert sent["recipient"] == "operators" and sent["phone"] == "" and "K7QX3M" in sent["text"]
    assert "没有具备这项技能的志愿者" in sent["text"] and "skill" not in sent["text"]
    assert await notifier.db["contacts"].count_documents({}) == 0


def accepted_event(volunteer_id: str, request_id: str) -> Envelope[Any]:
    assignment_id = str(uuid.uuid4())
    data = AssignmentAccepted(
        request_id=request_id, volunteer_id=volunteer_id, assignment_id=assignment_id, code=short_code(assignment_id),
        request_code=short_code(request_id), service="repair.plumbing", **WINDOW,
    )
    return about(data, request_id)


async def test_an_acceptance_gives_the_volunteer_the_residents_details_and_tells_the_resident_who_comes_when(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    await run(build(notifier_settings(settings, hook)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    event = accepted_event(volunteer_id, request_id)

    await publish(bus.nc, event)

    await bus.wait_for("notification.delivered", count=2)
    bodies = {b["kind"]: b for b in hook.bodies()}
    assert set(bodies) == {"accepted_details", "volunteer_coming"}
    details, coming = bodies["accepted_details"], bodies["volunteer_coming"]
    assert details["recipient"] == f"volunteer:{volunteer_id}" and details["phone"] == "13900139000"
    assert "王秀英" in details["text"] and "13800138000" in details["text"] and "12月2日 09:30–11:00" in details["text"]
    assert event.data.code in details["text"] and event.data.assignment_id not in details["text"]
    # The address is whatever intake.contact gives for the resident (intake adds it to the reply).
    contact = await bus.call(API.INTAKE_CONTACT, {"kind": "resident", "id": request_id})
    if contact.get("address"):
        assert f"地址：{contact['address']}" in details["text"]
    else:
        assert "地址" not in details["text"]
    assert coming["recipient"] == f"resident:{request_id}" and coming["phone"] == "13800138000"
    assert coming["text"].startswith("王秀英您好") and "志愿者袁文" in coming["text"]
    assert "12月2日 09:30–11:00" in coming["text"] and event.data.request_code in coming["text"]
    assert "13900139000" not in coming["text"]


async def test_an_acceptance_handled_again_after_a_crash_sends_nothing_twice(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    event = accepted_event(volunteer_id, request_id)
    await publish(bus.nc, event, msg_id="first-copy")
    await bus.wait_for("notification.delivered", count=2)
    await caught_up(bus.nc, "notifier", "assignment.accepted")

    # What a process killed after sending but before acknowledging leaves behind: the event delivered again.
    await publish(bus.nc, event, msg_id="second-copy")

    await caught_up(bus.nc, "notifier", "assignment.accepted")
    assert len(await stored_events(bus.nc, "assignment.accepted")) == 2
    assert sorted(b["kind"] for b in hook.bodies()) == ["accepted_details", "volunteer_coming"]
    assert len(await stored_events(bus.nc, "notification.delivered")) == 2


async def test_a_completed_service_asks_the_resident_to_rate_it_with_the_request_code(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    await run(build(notifier_settings(settings, hook)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    assignment_id = str(uuid.uuid4())
    completed = AssignmentCompleted(
        request_id=request_id, volunteer_id=volunteer_id, assignment_id=assignment_id, code=short_code(assignment_id),
        request_code=short_code(request_id), hours=Decimal("1.5"),
    )

    await publish(bus.nc, about(completed, request_id))

    await bus.wait_for("notification.delivered", kind="please_rate")
    [sent] = hook.bodies()
    assert sent["recipient"] == f"resident:{request_id}" and sent["phone"] == "13800138000"
    assert sent["text"].startswith("王秀英您好") and "星" in sent["text"] and short_code(request_id) in sent["text"]
    assert request_id not in sent["text"]


async def test_without_a_webhook_points_earned_goes_to_the_console(
    settings: BusSettings, bus: Bus, run: Callable[[Service], Awaitable[Service]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="linli.notifier")
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, None)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    earned = PointsEarned(
        volunteer_id=volunteer_id, request_id=request_id, hours=Decimal("1.5"), points=Decimal("15"),
        balance_points=Decimal("135"), rate=Decimal("10"),
    )
    event = about(earned, request_id)

    await publish(bus.nc, event)

    [delivered] = await bus.wait_for("notification.delivered", kind="points_earned")
    assert delivered["data"]["channel"] == "console" and delivered["data"]["attempts"] == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "linli.notifier" and "NOTIFY" in r.getMessage()]
    assert "1.5小时" in line and "15积分" in line and "当前积分135" in line
    assert "139****9000" in line and "13900139000" not in line
    [stored] = await notifier.db["notifications"].find({"kind": "points_earned"}).to_list()
    assert (stored["status"], stored["channel"], stored["attempts"]) == ("delivered", "console", 1)
    assert stored["attempt"]["outcome"] == "delivered"


async def test_a_volunteer_intake_does_not_know_is_reported_as_failed_not_dropped(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    await run(build_intake(IntakeSettings(bus=settings)))
    await run(build(notifier_settings(settings, hook)))
    _, request_id = await volunteer_and_request(bus)
    event = offer("v-nobody", request_id)

    await publish(bus.nc, event)

    [failed] = await bus.wait_for("notification.failed", recipient="volunteer:v-nobody")
    assert "no contact" in failed["data"]["error"]
    assert hook.posts == []


async def test_an_offer_published_while_intake_is_down_is_sent_once_intake_is_back(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    intake = build_intake(IntakeSettings(bus=settings))
    await intake.start()
    volunteer_id, request_id = await volunteer_and_request(bus)
    await intake.stop()
    patient = dataclasses.replace(settings, max_deliver=20)  # a slow machine must not dead-letter it first
    notifier = await run(build(notifier_settings(patient, hook)))
    event = offer(volunteer_id, request_id)

    await publish(bus.nc, event)
    await asyncio.sleep(0.3)
    assert hook.posts == [] and await notifier.db["notifications"].count_documents({}) == 0
    await run(build_intake(IntakeSettings(bus=settings)))

    await bus.wait_for("notification.delivered", notification_id=handlers.notification_id(event.id, "offer"))
    assert [b["phone"] for b in hook.bodies()] == ["13900139000"]


async def test_a_notification_left_pending_by_a_crash_resumes_without_repeating_attempts(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    notifier = await run(build(notifier_settings(settings, hook, webhook_attempts=3)))
    event = about(RequestUnmatched(request_id="r-9", reason="no volunteer"), "r-9")
    to = handlers.route(event)
    doc = handlers.new_notification(event, to, None, "请求r-9无人接单", "webhook", datetime.now(UTC))
    # What a process killed during its first attempt leaves behind: one attempt used, its claim lapsed.
    await notifier.db["notifications"].insert_one({**doc, "attempts": 1, "owner": "dead", "claimed_until": 0.0})

    await publish(bus.nc, event)

    [delivered] = await bus.wait_for("notification.delivered", notification_id=doc["_id"])
    assert delivered["data"]["attempts"] == 2
    assert [b["text"] for b in hook.bodies()] == ["请求r-9无人接单"]
    assert [a["n"] async for a in notifier.db["attempts"].find({"notification_id": doc["_id"]})] == [2]


async def test_a_notification_another_consumer_is_sending_is_not_sent_again(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    notifier = await run(build(notifier_settings(dataclasses.replace(settings, max_deliver=20), hook)))
    event = about(RequestUnmatched(request_id="r-9", reason="no volunteer"), "r-9")
    doc = handlers.new_notification(event, handlers.route(event), None, "t", "webhook", datetime.now(UTC))
    await notifier.db["notifications"].insert_one({**doc, "owner": "busy", "claimed_until": time.time() + 60})

    await publish(bus.nc, event)

    await asyncio.sleep(1.0)
    assert hook.posts == []
    # The other consumer finishes; a redelivery then only publishes the outcome it recorded.
    await notifier.db["notifications"].update_one(
        {"_id": doc["_id"]}, {"$set": {"status": "delivered", "attempts": 1}}
    )
    await bus.wait_for("notification.delivered", notification_id=doc["_id"])
    assert hook.posts == []


async def test_a_slow_webhook_does_not_let_the_event_go_to_another_replica(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    quick_acks = dataclasses.replace(settings, ack_wait=1.0)
    # Two replicas: the idle one would be handed the event if the busy one let ack_wait pass.
    for _ in range(2):
        await run(build(notifier_settings(quick_acks, hook, webhook_timeout=5.0)))
    hook.delay = 2.5
    event = about(RequestUnmatched(request_id="r-5", reason="no volunteer"), "r-5")

    await publish(bus.nc, event)

    await bus.wait_for("notification.delivered", notification_id=handlers.notification_id(event.id, "unmatched"))
    info = await bus.nc.jetstream().consumer_info("LINLI", "notifier-request-unmatched")
    assert info.num_redelivered == 0 and len(hook.posts) == 1


def test_a_webhook_without_a_secret_is_refused_at_start(settings: BusSettings) -> None:
    with pytest.raises(ValueError, match="NOTIFIER_WEBHOOK_SECRET"):
        build(NotifierSettings(bus=settings, webhook_url="http://127.0.0.1:1/x", webhook_secret=""))




async def test_a_crash_during_the_last_allowed_attempt_is_reported_as_failed_not_retried(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    notifier = await run(build(notifier_settings(settings, hook, webhook_attempts=3)))
    event = about(RequestUnmatched(request_id="r-9", reason="no volunteer"), "r-9")
    doc = handlers.new_notification(event, handlers.route(event), None, "t", "webhook", datetime.now(UTC))
    await notifier.db["notifications"].insert_one({**doc, "attempts": 3, "owner": "dead", "claimed_until": 0.0})

    await publish(bus.nc, event)

    [failed] = await bus.wait_for("notification.failed", notification_id=doc["_id"])
    assert failed["data"]["attempts"] == 3 and "interrupted" in failed["data"]["error"]
    assert hook.posts == []


async def test_a_contact_just_used_is_taken_from_memory_without_asking_intake_or_the_database(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    intake = build_intake(IntakeSettings(bus=settings))
    await intake.start()
    notifier = await run(build(notifier_settings(settings, hook, contact_memory=600.0)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    first = offer(volunteer_id, request_id)
    await publish(bus.nc, first)
    await bus.wait_for("notification.delivered", notification_id=handlers.notification_id(first.id, "offer"))
    await intake.stop()
    await notifier.db["contacts"].delete_many({})

    second = offer(volunteer_id, request_id)
    await publish(bus.nc, second)

    await bus.wait_for("notification.delivered", notification_id=handlers.notification_id(second.id, "offer"))
    assert [b["phone"] for b in hook.bodies()] == ["13900139000", "13900139000"]


class Commands(monitoring.CommandListener):
    """What the clients made after it send to one database, as (command, collection) pairs."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.sent: list[tuple[str, str]] = []

    def started(self, event: Any) -> None:
        if event.database_name == self.database:
            self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass

    def of(self, collection: str) -> list[str]:
        return sorted(command for command, name in self.sent if name == collection)


def counting(settings: BusSettings) -> Commands:
    commands = Commands(settings.database("notifier"))
    monitoring.register(commands)  # the notifier's client, made after this, reports to it; the name is this test's
    return commands


def notify_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "linli.notifier" and "NOTIFY" in r.getMessage()]


async def test_an_acceptance_on_the_console_stores_both_notifications_in_one_command_and_a_repeat_logs_nothing(
    settings: BusSettings, bus: Bus, run: Callable[[Service], Awaitable[Service]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="linli.notifier")
    commands = counting(settings)
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, None)))
    volunteer_id, request_id = await volunteer_and_request(bus)
    event = accepted_event(volunteer_id, request_id)
    commands.sent.clear()

    await publish(bus.nc, event, msg_id="first-copy")
    await bus.wait_for("notification.delivered", count=2)
    await caught_up(bus.nc, "notifier", "assignment.accepted")

    assert commands.of("notifications") == ["insert"]  # written once, final, without looking first
    assert len(notify_lines(caplog)) == 2

    await publish(bus.nc, event, msg_id="second-copy")  # past JetStream's de-duplication
    await caught_up(bus.nc, "notifier", "assignment.accepted")

    assert commands.of("notifications") == ["find", "insert", "insert"]  # read back only on the collision
    assert len(notify_lines(caplog)) == 2
    assert await notifier.db["notifications"].count_documents({}) == 2
    assert len(await stored_events(bus.nc, "notification.delivered")) == 2


async def test_a_contact_intake_gives_again_unchanged_is_neither_read_from_nor_written_to_the_database(
    settings: BusSettings, bus: Bus, hook: Hook, run: Callable[[Service], Awaitable[Service]]
) -> None:
    commands = counting(settings)
    await run(build_intake(IntakeSettings(bus=settings)))
    notifier = await run(build(notifier_settings(settings, hook, contact_memory=0.0)))  # intake asked every time
    volunteer_id, request_id = await volunteer_and_request(bus)
    commands.sent.clear()

    for _ in range(3):
        sent = offer(volunteer_id, request_id)
        await publish(bus.nc, sent)
        await bus.wait_for("notification.delivered", notification_id=handlers.notification_id(sent.id, "offer"))

    assert commands.of("contacts") == ["update"]  # stored once, for when intake does not answer
    stored = await notifier.db["contacts"].find_one({"_id": f"volunteer:{volunteer_id}"})
    assert stored is not None and stored["phone"] == "13900139000"
    assert [b["phone"] for b in hook.bodies()] == ["13900139000"] * 3
