"""The issue's whole story in one browser, with every role on its own page at the same time: a resident
orders at the kiosk → the volunteer's page shows the offer → accept → the details → done → the resident's
page rates it → and the operator console, open all along and never reloaded, showed each step live."""

from collections.abc import Iterator
from typing import Any

import pytest

from contracts import API
from tests.browser import WebSystem, check, start_web_system, until

pytestmark = pytest.mark.system

VOLUNTEER_PHONE = "13912340001"
RESIDENT_PHONE = "13800135678"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSystem]:
    yield from start_web_system(tmp_path_factory.mktemp("web-story"))


def test_kiosk_order_to_rating_with_the_console_following_every_step_live(web: WebSystem, browser: Any) -> None:
    from playwright.sync_api import expect

    volunteer_id = web.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "王师傅", "phone": VOLUNTEER_PHONE, "district": "beibei", "grids": ["quanwai-03"],
        "skills": ["repair"], "capacity": 2})["volunteer_id"]
    until(lambda: "error" not in web.call(API.IDENTITY_CODE_REQUEST, {"phone": VOLUNTEER_PHONE, "district": "beibei"}))

    # The grid worker's console is open on the queue before anything happens, and is never reloaded.
    console = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    console.goto(f"{web.url}/ops?state=any")
    console.fill("#f-user", "dispatcher")
    console.fill("#f-password", web.passwords["dispatcher"])
    console.click("button[type=submit]")
    console.wait_for_url(lambda url: "/signin" not in url)
    expect(console.locator("body[data-live-state=on]")).to_have_count(1)
    console.evaluate("window.notReloaded = true")

    # The volunteer signs in on their phone with the code the notifier sent.
    phone = browser.new_context(viewport={"width": 360, "height": 800}).new_page()
    phone.goto(f"{web.url}/v/signin")
    before = len(web.codes_sent(volunteer_id))
    phone.fill("#f-phone", VOLUNTEER_PHONE)
    if phone.locator("#f-district").count():
        phone.select_option("#f-district", "beibei")
    phone.get_by_role("button", name="发送验证码").click()
    phone.wait_for_selector("#f-code")
    phone.fill("#f-code", until(lambda: web.codes_sent(volunteer_id)[before:])[-1])
    phone.get_by_role("button", name="登录").click()
    phone.wait_for_url(f"{web.url}/v")

    # The resident orders at the kiosk of quanwai-03.
    kiosk = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    kiosk.goto(f"{web.url}/kiosk/setup")
    kiosk.fill("#f-device_id", web.kiosk[0])
    kiosk.fill("#f-secret", web.kiosk[1])
    kiosk.click("button[type=submit]")
    kiosk.wait_for_url(f"{web.url}/kiosk")
    kiosk.click("text=水电维修")
    kiosk.fill("#f-phone", RESIDENT_PHONE)
    kiosk.fill("#f-name", "王秀英")
    kiosk.fill("#f-address", "泉外园小区3栋2单元401")
    kiosk.get_by_role("button", name="下一步").click()
    kiosk.get_by_role("button", name="确认提交").click()
    code = kiosk.inner_text(".code").strip()
    request_id = web.call(API.INTAKE_STATUS, {"request_id": code})["request_id"]

    row = console.locator(f"#t-list-queue tr[data-request='{request_id}']")
    expect(row).to_have_count(1, timeout=20_000)  # the console saw it arrive

    # The offer reaches the volunteer's open page; they accept and get the details.
    expect(phone.locator(".offer")).to_have_count(1, timeout=30_000)
    expect(row).to_have_attribute("data-state", "offered", timeout=20_000)
    phone.get_by_role("button", name="接受").click()
    phone.wait_for_url(f"{web.url}/v/a/*")
    assert "泉外园小区3栋2单元401" in phone.inner_text("dl.details")
    assert phone.get_attribute("a[href^='tel:']", "href") == f"tel:{RESIDENT_PHONE}"
    expect(row).to_have_attribute("data-state", "accepted", timeout=20_000)

    # The resident's page says who is coming.
    home = browser.new_context(viewport={"width": 360, "height": 800}).new_page()
    home.goto(f"{web.url}/r/{code}")
    home.fill("#f-last4", RESIDENT_PHONE[-4:])
    home.get_by_role("button", name="查看").click()
    expect(home.locator("[data-status]")).to_have_attribute("data-status", "accepted")
    assert "王师傅" in home.inner_text("main")

    # Done, with hours; the console shows it completed.
    phone.fill("#f-hours", "1.5")
    phone.get_by_role("button", name="标记为已完成").click()
    expect(row).to_have_attribute("data-state", "completed", timeout=20_000)

    # The resident rates it with the stars; the console shows it rated.
    home.get_by_role("button", name="刷新").click()
    expect(home.locator("[data-status]")).to_have_attribute("data-status", "completed")
    check(home, "story-resident-rate")
    home.get_by_role("button", name="5 颗星").click()
    expect(home.locator("[data-status]")).to_have_attribute("data-status", "rated")
    expect(row).to_have_attribute("data-state", "rated", timeout=20_000)
    assert console.evaluate("window.notReloaded") is True
    check(console, "story-console")

    # And the hours became points in the volunteer's bank.
    balance = until(lambda: (b := web.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer_id}))
                    .get("hours") not in (None, "0", "0.00", 0) and b)
    assert str(balance["hours"]).startswith("1.5")

    # At the desk, the bank clerk prints the volunteer's certificate; a dispatcher may not.
    console.goto(f"{web.url}/ops/volunteers")
    link = console.locator(f"tr[data-volunteer='{volunteer_id}'] a[href$='certificate.pdf']").get_attribute("href")
    assert console.request.get(f"{web.url}{link}").status == 403
    clerk = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    clerk.goto(f"{web.url}/signin?next=/ops/volunteers")
    clerk.fill("#f-user", "clerk")
    clerk.fill("#f-password", web.passwords["clerk"])
    clerk.click("button[type=submit]")
    clerk.wait_for_url(lambda url: "/ops/volunteers" in url)
    pdf = clerk.request.get(f"{web.url}{link}")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
