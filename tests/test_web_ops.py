"""The operator console in Debian's Chromium against the whole system as `linli up` runs it: a request submitted
through the bus appears in the live queue without a reload, is opened, explained and assigned by hand, and its
row changes state live; whoever is not an operator is sent to sign in and refused the stream; the ledger's
review queue, the month's report with its downloads, dead letters, volunteers and pairings; every page
checked by axe at a phone's width and a desk's."""

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from contracts import API, event_subject
from linli.client import Client
from tests.browser import WebSystem, check, start_web_system

pytestmark = pytest.mark.system

DISTRICT, GRID = "beibei", "quanwai-01"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSystem]:
    # Tokens checked by every service, as in production (the test session's default turns them off): what the
    # console shows each role is what the services allow it.
    yield from start_web_system(tmp_path_factory.mktemp("web-ops"), env={"LINLI_AUTH": "required"})



@pytest.fixture(scope="module")
def volunteer(web: WebSystem) -> str:
    """A volunteer of the district whom the matcher never offers plumbing (not their skill): only an operator
    hands them a request, so every state change in these tests is one the test made."""
    reply = web.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "袁文", "phone": f"139{uuid.uuid4().int % 10**8:08d}", "district": DISTRICT, "grids": [GRID],
        "skills": ["tutoring.homework"], "capacity": 20})
    dispatcher = web.token("dispatcher")
    wait_until(lambda: any(v["volunteer_id"] == reply["volunteer_id"] for v in web.call(
        API.MATCHER_VOLUNTEERS, {"district": DISTRICT, "limit": 500}, dispatcher)["items"]))
    return str(reply["volunteer_id"])


def wait_until(condition: Any, tries: int = 100) -> None:
    import time

    for _ in range(tries):
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("the condition never held")


def signed_in(web: WebSystem, browser: Any, user: str, start: str = "/ops", lang: str = "zh") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{web.url}{start}{'&' if '?' in start else '?'}lang={lang}")
    assert "/signin" in page.url  # nobody is let in before signing in
    page.fill("#f-user", user)
    page.fill("#f-password", web.passwords[user])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/signin" not in url)
    return page


def submitted(web: WebSystem, phone: str = "13800138123", service: str = "repair.plumbing") -> dict[str, Any]:
    return web.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"ops-test-{uuid.uuid4()}", "district": DISTRICT, "grid": GRID, "service": service,
        "channel": "hotline", "description": "厨房水管漏水",
        "resident": {"name": "王阿姨", "phone": phone, "address": "泉外路 3 号"}}, web.token("dispatcher"))


def test_a_request_appears_live_and_is_explained_and_assigned_by_hand_and_its_row_changes_live(
    web: WebSystem, browser: Any, volunteer: str
) -> None:
    from playwright.sync_api import expect

    queue = signed_in(web, browser, "dispatcher")
    queue.select_option("#f-state", "any")
    queue.get_by_role("button", name="筛选").click()
    queue.wait_for_url(lambda url: "state=any" in url)
    expect(queue.locator("body[data-live-state=on]")).to_have_count(1)
    queue.evaluate("window.notReloaded = true")
    check(queue, "ops-queue")

    made = submitted(web)
    row = queue.locator(f"#t-list-queue tr[data-request='{made['request_id']}']")
    expect(row).to_have_count(1, timeout=15_000)  # pushed by the stream: the page was never reloaded
    assert queue.evaluate("window.notReloaded") is True
    expect(queue.locator(f"#t-list-unmatched tr[data-request='{made['request_id']}']")).to_have_count(1, timeout=15_000)

    page = queue.context.new_page()
    page.goto(f"{web.url}/ops")
    page.locator(f"#t-list-unmatched tr[data-request='{made['request_id']}'] a").click()
    page.wait_for_url(f"**/ops/r/{made['request_id']}")
    expect(page.get_by_role("heading", name="派单说明")).to_be_visible()
    assert page.locator("ol.history li").count() >= 1
    check(page, "ops-request")

    # Nothing chosen and no reason: each fault next to its field, in Chinese, and nothing assigned.
    page.get_by_role("button", name="指派志愿者").click()
    assert page.get_attribute("#f-assign_volunteer", "aria-invalid") == "true"
    assert "请填写" in page.inner_text("#e-assign_reason")
    check(page, "ops-request-bad-input")
    assert web.call(API.INTAKE_STATUS, {"request_id": made["request_id"]})["status"] == "unmatched"

    page.select_option("#f-assign_volunteer", volunteer)
    page.fill("#f-assign_reason", "电话联系过，志愿者同意")
    page.check("input[name=assign_confirmed]")
    page.get_by_role("button", name="指派志愿者").click()
    page.wait_for_url(lambda url: "done=assign" in url)
    expect(page.locator(".notice")).to_be_visible()

    expect(row).to_have_attribute("data-state", "accepted", timeout=15_000)  # the queue, still not reloaded
    assert queue.evaluate("window.notReloaded") is True


def test_a_requests_page_follows_the_request_live_when_it_is_assigned_elsewhere(
    web: WebSystem, browser: Any, volunteer: str
) -> None:
    from playwright.sync_api import expect

    made = submitted(web, phone="13800138127")
    wait_until(lambda: web.call(API.INTAKE_STATUS, {"request_id": made["request_id"]})["status"] == "unmatched")
    page = signed_in(web, browser, "dispatcher", f"/ops/r/{made['request_id']}")
    expect(page.locator("body[data-live-state=on]")).to_have_count(1)
    page.evaluate("window.notReloaded = true")
    web.call(API.MATCHER_ASSIGN, {"request_id": made["request_id"], "volunteer_id": volunteer, "operator": "x",
                                  "reason": "on the phone", "confirmed": True}, web.token("dispatcher"))
    expect(page.locator("#facts dd[data-state]")).to_have_attribute("data-state", "accepted", timeout=15_000)
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("ol.history li").count() >= 2


def test_a_refusal_from_the_service_is_shown_next_to_its_field_in_english(
    web: WebSystem, browser: Any, volunteer: str
) -> None:
    made = submitted(web, phone="13800138124")
    page = signed_in(web, browser, "dispatcher", f"/ops/r/{made['request_id']}", lang="en")
    page.get_by_role("button", name="Reassign").click()
    assert "Please fill this in" in page.inner_text("#e-reassign_reason")
    page.fill("#f-cancel_reason", "x" * 501)
    page.get_by_role("button", name="Cancel the request").click()
    assert "at most 500" in page.inner_text("#e-cancel_reason")
    page.fill("#f-cancel_reason", "The resident fixed it herself")
    page.get_by_role("button", name="Cancel the request").click()
    page.wait_for_url(lambda url: "done=cancel" in url)
    assert web.call(API.INTAKE_STATUS, {"request_id": made["request_id"]})["status"] == "cancelled"
    # A cancelled request cannot be assigned: the matcher's refusal, in English, next to the volunteer.
    page.select_option("#f-assign_volunteer", volunteer)
    page.fill("#f-assign_reason", "try anyway")
    page.get_by_role("button", name="Assign to a volunteer").click()
    assert page.locator("[aria-invalid=true]").count() >= 1
    assert page.locator(".field-error").count() >= 1
    check(page, "ops-request-refused-en")


def test_someone_not_signed_in_or_a_kiosk_is_sent_to_sign_in_and_refused_the_stream(
    web: WebSystem, browser: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{web.url}/ops/review")
    assert "/signin" in page.url and "next=%2Fops%2Freview" in page.url
    check(page, "ops-signin")
    assert page.request.get(f"{web.url}/ops/events").status == 401
    assert page.request.get(f"{web.url}/ops/rows").status == 401

    device, secret = web.kiosk
    kiosk_token = web.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": device, "secret": secret})["token"]
    context.add_cookies([{"name": "linli_session", "value": kiosk_token, "url": web.url}])
    assert page.request.get(f"{web.url}/ops/events").status == 401
    page.goto(f"{web.url}/ops")
    assert "/signin" in page.url


def served_and_rated_badly(web: WebSystem, volunteer: str) -> str:
    """A request served by the volunteer and rated one star: the ledger holds its hours for review."""
    made = submitted(web, phone="13800138125")
    dispatcher = web.token("dispatcher")
    wait_until(lambda: web.call(API.INTAKE_STATUS, {"request_id": made["request_id"]})["status"] == "unmatched")
    assignment = web.call(API.MATCHER_ASSIGN, {"request_id": made["request_id"], "volunteer_id": volunteer,
                                               "operator": "dispatcher", "reason": "by phone", "confirmed": True},
                          dispatcher)
    web.call(API.MATCHER_COMPLETE, {"assignment_id": assignment["assignment_id"], "volunteer_id": volunteer,
                                    "hours": "1.5"}, dispatcher)
    wait_until(lambda: web.call(API.INTAKE_STATUS, {"request_id": made["request_id"]})["status"] == "completed")
    web.call(API.INTAKE_RATE, {"request_id": made["request_id"], "phone_last4": "8125", "stars": 1, "done": True})
    clerk = web.token("clerk")
    wait_until(lambda: any(i["request_id"] == made["request_id"]
                           for i in web.call(API.LEDGER_REVIEW, {"limit": 100}, clerk)["items"]))
    return str(made["request_id"])


def test_the_bank_clerk_confirms_disputed_hours_from_the_review_queue(
    web: WebSystem, browser: Any, volunteer: str
) -> None:
    request_id = served_and_rated_badly(web, volunteer)
    page = signed_in(web, browser, "clerk", "/ops/review")
    card = page.locator(f"[data-review='{request_id}']")
    assert card.count() == 1
    check(page, "ops-review")
    card.locator("input[name=reason]").fill("回访确认已修好")
    card.get_by_role("button", name="确认时长").click()
    assert "已确认" in page.inner_text(".notice")
    assert page.locator(f"[data-review='{request_id}']").count() == 0
    still = web.call(API.LEDGER_REVIEW, {"limit": 100}, web.token("clerk"))["items"]
    assert request_id not in [item["request_id"] for item in still]


def test_the_months_report_shows_the_chart_and_the_table_and_downloads_csv_and_png(
    web: WebSystem, browser: Any
) -> None:
    page = signed_in(web, browser, "clerk", "/ops/report")
    headline = page.inner_text(".headline")
    assert headline.startswith("本月服务")
    image = page.get_by_role("img")
    assert headline in (image.get_attribute("alt") or "")
    page.wait_for_function("document.querySelector('figure.chart img').naturalWidth > 0")
    assert page.locator("table caption").count() == 1 and page.locator("tbody tr").count() >= 1
    check(page, "ops-report")

    csv_link, png_link = (page.get_attribute(f"a[href*='/download/{kind}']", "href") for kind in ("csv", "png"))
    answer = page.request.get(f"{web.url}{csv_link}")
    assert answer.status == 200 and "attachment" in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.body().decode("utf-8-sig"))))
    assert rows[0][0].startswith("社区") and rows[-1][2] == "合计 Total"
    png = page.request.get(f"{web.url}{png_link}")
    assert png.body().startswith(b"\x89PNG")


def poisoned(web: WebSystem) -> None:
    """A body that can never be an event, on a subject the services consume: a dead letter at once."""
    async def publish() -> None:
        client = await Client.connect(web.system.nats_url)
        try:
            await client.nc.jetstream().publish(event_subject("request.cancelled", DISTRICT), b'{"not": "an event"}',
                                                headers={"Nats-Msg-Id": f"poison-{uuid.uuid4()}"})
        finally:
            await client.close()

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        thread.submit(asyncio.run, publish()).result()


def test_dead_letters_are_the_administrators_and_volunteers_and_pairings_are_the_dispatchers(
    web: WebSystem, browser: Any, volunteer: str
) -> None:
    poisoned(web)
    admin_token = web.token("admin")
    wait_until(lambda: web.call("linli.api.matcher.dead_letters", {"action": "list"}, admin_token)["dead_letters"])
    letter = web.call("linli.api.matcher.dead_letters", {"action": "list"}, admin_token)["dead_letters"][0]
    admin = signed_in(web, browser, "admin", "/ops/dead-letters")
    assert admin.get_by_role("heading", name="死信").count() == 1
    card = admin.locator(f"[data-letter='{letter['_id']}']")
    assert "永远无法处理" in card.inner_text() and card.get_by_role("button").count() == 0
    check(admin, "ops-dead-letters")
    # Replaying it anyway is refused, in Chinese, and the letter stays.
    refused = admin.request.post(f"{web.url}/ops/dead-letters/replay", form={"service": "matcher", "id": letter["_id"]})
    assert refused.status == 422 and "只能丢弃" in refused.text()
    assert web.call("linli.api.matcher.dead_letters", {"action": "list"}, admin_token)["dead_letters"][0]["replays"] == 0
    dispatcher = signed_in(web, browser, "dispatcher", "/ops/dead-letters")
    assert "没有权限" in dispatcher.inner_text(".alert")
    assert dispatcher.request.get(f"{web.url}/ops/dead-letters").status == 403

    dispatcher.goto(f"{web.url}/ops/volunteers")
    assert dispatcher.locator(f"tr[data-volunteer='{volunteer}']").count() == 1
    check(dispatcher, "ops-volunteers")

    dispatcher.goto(f"{web.url}/ops/pairings")
    dispatcher.fill("#f-resident_phone", "12ab")
    dispatcher.get_by_role("button", name="居民与志愿者结对").click()
    assert dispatcher.get_attribute("#f-resident_phone", "aria-invalid") == "true"
    assert dispatcher.get_attribute("#f-pair_volunteer", "aria-invalid") == "true"
    check(dispatcher, "ops-pairings-bad-input")
    dispatcher.fill("#f-resident_phone", "13800138126")
    dispatcher.select_option("#f-pair_volunteer", volunteer)
    dispatcher.get_by_role("button", name="居民与志愿者结对").click()
    notice = dispatcher.inner_text(".notice")
    assert "结对编号" in notice
    check(dispatcher, "ops-pairings")
