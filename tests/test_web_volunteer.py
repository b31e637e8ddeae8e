"""The volunteer's pages at /v in Debian's Chromium against the whole system as `linli up` runs it: sign in
by a code sent to the phone, an offer that arrives while the page is open, accept, the details, done with
hours refused next to the field until they are right, history, the bank with its catalogue and refusals,
the certificate as a PDF, declining with a reason, and when the volunteer can serve."""

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pypdfium2
import pytest

from contracts import API
from tests.browser import WebSystem, check, min_target_px, start_web_system, until

pytestmark = pytest.mark.system

PHONE = "13912345678"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSystem]:
    # Each test signs in afresh: more codes in an hour than a volunteer would ask for.
    yield from start_web_system(tmp_path_factory.mktemp("web"), env={"IDENTITY_CODES_PER_HOUR": "20"})



@pytest.fixture(scope="module")
def volunteer_id(web: WebSystem) -> str:
    reply = web.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": "袁文", "phone": PHONE, "district": "beibei", "grids": ["quanwai-03"],
        "skills": ["repair", "meals"], "capacity": 1})
    assert "volunteer_id" in reply, reply
    # Identity follows volunteer.registered: once it answers for the phone, the pages can sign in.
    until(lambda: "error" not in web.call(API.IDENTITY_CODE_REQUEST, {"phone": PHONE, "district": "beibei"}))
    return str(reply["volunteer_id"])




def kiosk_request(web: WebSystem, service: str, phone: str, **window: str) -> str:
    device, secret = web.kiosk
    token = web.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": device, "secret": secret})["token"]
    made = web.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"test-{uuid.uuid4()}", "district": "beibei", "grid": "quanwai-03", "service": service,
        "description": "厨房水管漏水", "channel": "kiosk", "resident": {"name": "王秀英", "phone": phone,
                                                                      "address": "泉外园小区3栋2单元401"},
        **window}, token)
    assert "request_id" in made, made
    return str(made["request_id"])


def signed_in_page(web: WebSystem, browser: Any, volunteer_id: str, look: bool = False) -> Any:
    context = browser.new_context(viewport={"width": 360, "height": 800})
    page = context.new_page()
    page.goto(f"{web.url}/v")
    page.wait_for_url(f"{web.url}/v/signin")
    before = len(web.codes_sent(volunteer_id))
    page.fill("#f-phone", PHONE)
    if page.locator("#f-district").count():
        page.select_option("#f-district", "beibei")
    page.get_by_role("button", name="发送验证码").click()
    page.wait_for_selector("#f-code")
    if look:
        check(page, "volunteer-1-code")
    code = until(lambda: web.codes_sent(volunteer_id)[before:])[-1]  # the code this page asked for
    page.fill("#f-code", code)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{web.url}/v")
    return page


def test_the_volunteer_signs_in_by_code_accepts_an_offer_serves_and_gets_the_certificate(
    web: WebSystem, browser: Any, volunteer_id: str
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 360, "height": 800})
    page.goto(f"{web.url}/v/signin")
    check(page, "volunteer-0-signin")
    page.fill("#f-phone", "13000000000")  # nobody's phone: refused next to the field
    if page.locator("#f-district").count():
        page.select_option("#f-district", "beibei")
    page.get_by_role("button", name="发送验证码").click()
    assert page.get_attribute("#f-phone", "aria-invalid") == "true"
    assert "没有登记" in page.inner_text("#e-phone")
    page.close()

    page = signed_in_page(web, browser, volunteer_id, look=True)
    expect(page.locator(".offer")).to_have_count(0)
    check(page, "volunteer-2-no-offers")

    # 06:00–09:00 UTC is 14:00–17:00 on the district's clock (Asia/Shanghai).
    request_id = kiosk_request(web, "repair.plumbing", "13800001111", window_start="2030-12-10T06:00:00Z",
                               window_end="2030-12-10T09:00:00Z")
    expect(page.locator(".offer")).to_have_count(1, timeout=30_000)  # arrives while the page is open
    assert "12月10日 14:00–17:00" in page.inner_text(".offer")
    check(page, "volunteer-3-offer")
    assert min_target_px(page, "main a.button, main button") >= 48
    page.get_by_role("button", name="接受").click()

    page.wait_for_url(f"{web.url}/v/a/*")
    assert "王秀英" in page.inner_text("dl.details")
    assert "泉外园小区3栋2单元401" in page.inner_text("dl.details")
    assert page.get_attribute("a[href^='tel:']", "href") == "tel:13800001111"
    assert "12月10日 14:00–17:00" in page.inner_text("dl.details")
    check(page, "volunteer-4-details")

    page.fill("#f-hours", "0")
    page.get_by_role("button", name="标记为已完成").click()
    assert page.get_attribute("#f-hours", "aria-invalid") == "true"
    assert "大于 0" in page.inner_text("#e-hours")
    check(page, "volunteer-5-bad-hours")
    details_url = page.url.removesuffix("/done")
    page.get_by_role("link", name="English").click()  # from the refused form's address back to its page
    page.wait_for_url(details_url)
    page.fill("#f-hours", "two")
    page.get_by_role("button", name="Mark as done").click()
    assert "Please enter a number" in page.inner_text("#e-hours")
    page.fill("#f-hours", "25")
    page.get_by_role("button", name="Mark as done").click()
    assert "At most 24" in page.inner_text("#e-hours")
    assert web.call(API.INTAKE_STATUS, {"request_id": request_id})["status"] == "accepted"  # nothing changed
    page.get_by_role("link", name="中文").click()
    page.wait_for_url(details_url)

    page.fill("#f-hours", "1.5")
    page.fill("#f-note", "换了水龙头")
    page.get_by_role("button", name="标记为已完成").click()
    page.wait_for_url(f"{web.url}/v/history?notice=done")
    expect(page.locator("[data-status=completed]")).to_have_count(1)
    assert "1.5" in page.inner_text("[data-status=completed]")
    check(page, "volunteer-6-history")

    until(lambda: Decimal(web.call(API.LEDGER_BALANCE, {"volunteer_id": volunteer_id}).get("hours", "0")) > 0)
    clerk = web.token("clerk")
    for item_id, name, points in (("rice", "大米 5kg", "100000"), ("soap", "肥皂", "1")):
        put = web.call(API.LEDGER_CATALOG_PUT, {"item_id": item_id, "name": name, "kind": "goods",
                                                "points": points, "stock": 10}, clerk)
        assert "error" not in put, put
    page.get_by_role("link", name="文明银行").click()
    assert Decimal(page.inner_text("[data-hours]")) == Decimal("1.5")
    check(page, "volunteer-7-bank")
    page.get_by_role("button", name="兑换 大米 5kg").click()
    assert "积分不够" in page.inner_text("#e-rice")  # the ledger's refusal, next to the item
    check(page, "volunteer-8-bank-refused")
    page.get_by_role("button", name="兑换 肥皂").click()
    expect(page.get_by_role("status")).to_contain_text("兑换成功")

    with page.expect_download() as downloading:
        page.get_by_role("link", name="下载志愿服务证明（PDF）").click()
    pdf = open(downloading.value.path(), "rb").read()
    assert pdf.startswith(b"%PDF")
    document = pypdfium2.PdfDocument(pdf)
    assert "袁文" in "".join(p.get_textpage().get_text_range() for p in document)
    document.close()


def test_the_volunteer_declines_an_offer_with_a_reason(web: WebSystem, browser: Any, volunteer_id: str) -> None:
    from playwright.sync_api import expect

    page = signed_in_page(web, browser, volunteer_id)
    kiosk_request(web, "meals.delivery", "13800002222")
    expect(page.locator(".offer")).to_have_count(1, timeout=30_000)
    page.get_by_role("link", name="婉拒").first.click()
    page.wait_for_url(f"{web.url}/v/offers/*/decline")
    page.get_by_role("button", name="确认婉拒").click()  # no reason: refused next to the field
    assert "原因" in page.inner_text("#e-reason")
    check(page, "volunteer-9-decline")
    page.fill("#f-reason", "这周不在家")
    page.get_by_role("button", name="确认婉拒").click()
    page.wait_for_url(f"{web.url}/v?notice=declined")
    expect(page.locator(".offer")).to_have_count(0)
    page.get_by_role("link", name="记录").click()
    expect(page.locator("[data-status=declined]")).to_have_count(1)


def test_the_volunteer_says_when_they_can_serve_and_when_they_are_away(
    web: WebSystem, browser: Any, volunteer_id: str
) -> None:
    page = signed_in_page(web, browser, volunteer_id)
    page.get_by_role("link", name="服务时间").click()
    check(page, "volunteer-10-availability")
    page.fill("#f-start", "09:00")
    page.fill("#f-end", "12:00")
    page.get_by_role("button", name="添加", exact=True).click()
    assert "至少选一天" in page.inner_text("#e-days")  # no day chosen: nothing saved
    page.get_by_label("周一").check()
    page.get_by_label("周三").check()
    page.get_by_role("button", name="添加", exact=True).click()
    page.wait_for_url(f"{web.url}/v/availability?notice=saved")
    assert "09:00–12:00" in page.inner_text(".windows")
    page.fill("#f-away_start", "2031-05-10")
    page.fill("#f-away_end", "2031-05-01")
    page.get_by_role("button", name="添加不在的日子").click()
    assert "晚于" in page.inner_text("#e-away_end")
    check(page, "volunteer-11-availability-bad")
    page.fill("#f-away_end", "2031-05-20")
    page.get_by_role("button", name="添加不在的日子").click()
    page.wait_for_url(f"{web.url}/v/availability?notice=saved")
    profile = web.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": volunteer_id}, web.token("dispatcher"))
    assert profile["availability"] == [{"days": [0, 2], "start": "09:00", "end": "12:00"}]
    assert profile["away"] == [{"start": "2031-05-10", "end": "2031-05-20"}]

    page.get_by_role("button", name="退出").click()
    page.wait_for_url(f"{web.url}/v/signin?notice=signed_out")
    page.goto(f"{web.url}/v/bank")
    page.wait_for_url(f"{web.url}/v/signin")
