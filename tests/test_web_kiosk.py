"""The kiosk, the hotline and the resident's page, in Debian's Chromium against the whole system as
`linli up` runs it: three steps to a request, the code in large print, the page back at its start after
the idle time, bad input refused next to its field, and the resident's status and rating."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import API
from tests.browser import WebSystem, check, min_font_px, min_target_px, start_web_system

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSystem]:
    yield from start_web_system(tmp_path_factory.mktemp("web"))



def kiosk_page(web: WebSystem, browser: object, lang: str = "zh") -> object:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{web.url}/kiosk?lang={lang}")
    assert page.url.endswith("/kiosk/setup")  # a kiosk nobody has signed in shows only its sign-in
    device, secret = web.kiosk
    page.fill("#f-device_id", device)
    page.fill("#f-secret", secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/kiosk")
    return page


def test_a_resident_at_the_kiosk_gets_a_code_in_three_steps_and_follows_it_at_home(web: WebSystem, browser: object) -> None:
    page = kiosk_page(web, browser)
    check(page, "kiosk-1-menu")
    assert min_font_px(page, "main p, main a, main li, main label, main dd, main dt") >= 24
    assert min_target_px(page, "main a, main button, header nav a") >= 64

    page.click("text=水电维修")                                              # step 1: the menu, by picture and name
    page.fill("#f-phone", "13800138000")                                     # step 2: the phone, and a few words
    page.fill("#f-description", "厨房水管漏水")
    check(page, "kiosk-2-phone")
    page.click("button[type=submit]")
    assert "13800138000" in page.inner_text("dl.facts")                      # step 3: confirm
    check(page, "kiosk-3-confirm")
    page.get_by_role("button", name="确认提交").click()
    code = page.inner_text(".code").strip()
    assert len(code) == 6
    assert min_font_px(page, ".code") >= 48
    check(page, "kiosk-4-receipt")

    status = web.call(API.INTAKE_STATUS, {"request_id": code})
    assert status["channel" if "channel" in status else "service"] and status["grid"] == "quanwai-03"

    # At home: the code and the wrong digits show nothing; the right ones show the status in plain words.
    home = browser.new_page()  # type: ignore[attr-defined]
    home.goto(f"{web.url}/r/{code}")
    home.fill("#f-last4", "0000")
    home.click("button[type=submit]")
    assert "不对" in home.inner_text("#e-last4")
    home.fill("#f-last4", "8000")
    home.click("button[type=submit]")
    assert home.locator("[data-status]").count() == 1
    assert "志愿者" in home.inner_text("[data-status]")
    check(home, "resident-status")


def test_bad_input_is_refused_next_to_its_field_in_the_page_language_and_sends_nothing(
    web: WebSystem, browser: object
) -> None:
    page = kiosk_page(web, browser, lang="en")
    before = web.call(API.INTAKE_REQUESTS, {"state": "any", "limit": 500}, web.token("dispatcher"))["items"]
    page.click("text=Haircut at home")
    page.fill("#f-phone", "12ab")
    page.fill("#f-name", "x" * 60)
    page.click("button[type=submit]")
    assert page.get_attribute("#f-phone", "aria-invalid") == "true"
    assert "valid phone number" in page.inner_text("#e-phone")
    assert "at most 50" in page.inner_text("#e-name")
    check(page, "kiosk-bad-input")
    after = web.call(API.INTAKE_REQUESTS, {"state": "any", "limit": 500}, web.token("dispatcher"))["items"]
    assert len(after) == len(before)


def test_the_kiosk_goes_back_to_its_start_and_forgets_what_was_typed_when_left_alone(
    web: WebSystem, browser: object
) -> None:
    page = kiosk_page(web, browser)
    page.clock.install()  # the page's own clock, moved on by the test instead of waited out
    page.click("text=上门理发")
    page.fill("#f-phone", "13700000000")
    page.clock.run_for(50_000)
    page.fill("#f-name", "张")  # a touch starts the minute again
    page.clock.run_for(50_000)
    assert page.url.endswith("/kiosk/ask?service=haircut.home")
    page.clock.run_for(11_000)
    page.wait_for_url(f"{web.url}/kiosk")
    page.go_back()
    assert page.locator("#f-phone").count() == 0 or page.input_value("#f-phone") == ""


def test_pressing_confirm_twice_makes_one_request(web: WebSystem, browser: object) -> None:
    page = kiosk_page(web, browser)
    page.click("text=送餐上门")
    page.fill("#f-phone", "13600000001")
    page.click("button[type=submit]")
    form = {name: page.get_attribute(f"form[action='/kiosk/send'] input[name={name}]", "value")
            for name in ("service", "phone", "key")}
    page.get_by_role("button", name="确认提交").click()
    first = page.inner_text(".code")
    replay = page.request.post(f"{web.url}/kiosk/send", form=form, max_redirects=0)
    assert replay.status == 303 and replay.headers["location"].endswith(f"/kiosk/receipt/{first}")


def test_a_hotline_operator_enters_a_request_for_a_caller_in_their_district(web: WebSystem, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{web.url}/hotline")
    assert "/signin" in page.url
    page.fill("#f-user", "dispatcher")
    page.fill("#f-password", web.passwords["dispatcher"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.url}/hotline")
    page.click("text=电话问候")
    page.fill("#f-phone", "13500000002")
    page.click("button[type=submit]")
    assert page.get_attribute("#f-grid", "aria-invalid") == "true"  # the caller's grid is asked for
    page.select_option("#f-grid", "quanwai-01")
    page.click("button[type=submit]")
    page.get_by_role("button", name="确认提交").click()
    code = page.inner_text(".code")
    status = web.call(API.INTAKE_STATUS, {"request_id": code})
    assert status["grid"] == "quanwai-01"
    check(page, "hotline-receipt")


def test_a_page_without_a_kiosk_sign_in_cannot_submit(web: WebSystem, browser: object, tmp_path: Path) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    answer = page.request.post(f"{web.url}/kiosk/send", form={"service": "meals.delivery", "phone": "13600000009",
                                                               "key": "web-nobody-123"}, max_redirects=0)
    assert answer.status == 303 and answer.headers["location"] == "/kiosk/setup"
