"""The resident's page, /r/<code>: the request's status in plain words, who is coming and when, and the
rating. Nothing to sign in with but the code on the receipt and the last four digits of the phone."""

import re
import time
from collections import defaultdict, deque
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from contracts import API
from linli.client import CallFailed
from services.web.gateway import Unavailable
from services.web.pages import Pages
from services.web.texts import Words

LAST4 = re.compile(r"^[0-9]{4}$")
CODE = re.compile(r"^[A-Za-z0-9-]{4,40}$")
# Wrong digits allowed per code in a quarter of an hour: 10,000 guesses must not be a morning's work.
TRIES, TRY_WINDOW = 5, 900.0


class Tries:
    """Wrong tries per code, forgotten after TRY_WINDOW; kept in this process only."""

    def __init__(self, limit: int = TRIES, window: float = TRY_WINDOW) -> None:
        self.limit, self.window = limit, window
        self.failed: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, code: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        seen = self.failed[code.upper()]
        while seen and now - seen[0] > self.window:
            seen.popleft()
        return len(seen) >= self.limit

    def fail(self, code: str, now: float | None = None) -> None:
        self.failed[code.upper()].append(time.monotonic() if now is None else now)


def local(moment: str | None, zone: str) -> datetime | None:
    return datetime.fromisoformat(moment).astimezone(ZoneInfo(zone)) if moment else None


def when_words(status: dict[str, Any], zone: str, words: Words) -> str:
    """The window in the district's clock: 12月3日 14:00–17:00, or an empty string without one."""
    start, end = local(status.get("window_start"), zone), local(status.get("window_end"), zone)
    if not start:
        return ""
    day = words("resident.date", month=start.month, day=start.day)
    return f"{day} {start:%H:%M}" + (f"–{end:%H:%M}" if end else "")


def plain_status(status: dict[str, Any], zone: str, words: Words) -> str:
    return words(f"resident.status_{status['status']}", name=status.get("volunteer_name") or words("resident.a_volunteer"),
                 when=when_words(status, zone, words) or words("resident.soon"))


class Resident:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.tries = Tries()

    async def zone(self, district: str) -> str:
        return str((await self.pages.directory.district(district)).get("timezone", "Asia/Shanghai"))

    def ask_digits(self, request: Request, code: str, error: str = "", status_code: int = 200) -> Response:
        return self.pages.render(request, "resident_find.html", status_code=status_code, code=code,
                                 errors={"last4": error} if error else {}, error="")

    async def find(self, request: Request) -> Response:
        code = request.query_params.get("code", "").strip()
        if code and CODE.match(code):
            return self.pages.redirect(f"/r/{code.upper()}")
        return self.pages.render(request, "resident_find.html", code="", errors={}, error="")

    async def page(self, request: Request, code: str, last4: str = "", notice: str = "") -> Response:
        words = self.pages.words(request)
        if not CODE.match(code):
            return self.ask_digits(request, "", words("common.not_found"), 404)
        if not last4:
            return self.ask_digits(request, code)
        if not LAST4.match(last4):
            return self.ask_digits(request, code, words("resident.four_digits"), 422)
        if self.tries.blocked(code):
            return self.ask_digits(request, code, words("resident.too_many_tries"), 429)
        try:
            status = await self.pages.gateway.call(API.INTAKE_STATUS, {"request_id": code, "phone_last4": last4})
            zone = await self.zone(status["district"])
        except CallFailed:
            self.tries.fail(code)
            return self.ask_digits(request, code, words("resident.no_match"), 404)
        except Unavailable:
            return self.pages.busy(request, "resident_find.html", code=code, errors={})
        return self.pages.render(request, "resident_status.html", status=status, last4=last4, notice=notice,
                                 plain=plain_status(status, zone, words), when=when_words(status, zone, words))

    async def rate(self, request: Request, code: str) -> Response:
        form = await request.form()
        words = self.pages.words(request)
        last4 = str(form.get("last4", ""))
        not_done = form.get("not_done") == "1"
        stars = str(form.get("stars", "1" if not_done else ""))
        if not (LAST4.match(last4) and CODE.match(code)) or self.tries.blocked(code):
            return self.ask_digits(request, code, words("resident.four_digits"), 422)
        if stars not in {"1", "2", "3", "4", "5"}:
            return await self.page(request, code, last4, words("resident.choose_stars"))
        try:
            await self.pages.gateway.call(API.INTAKE_RATE, {
                "request_id": code, "phone_last4": last4, "stars": int(stars), "done": not not_done,
                "comment": str(form.get("comment", ""))[:500]})
        except CallFailed as exc:
            if exc.error.get("code") == "not_found":
                self.tries.fail(code)
            return await self.page(request, code, last4, words("resident.rating_refused"))
        except Unavailable:
            return await self.page(request, code, last4, words("common.busy"))
        return await self.page(request, code, last4, words("resident.thanks_not_done" if not_done else "resident.thanks"))


def routes(resident: Resident) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/r", response_class=HTMLResponse)
    async def find(request: Request) -> Response:
        return await resident.find(request)

    @router.get("/r/{code}", response_class=HTMLResponse)
    async def ask(request: Request, code: str) -> Response:
        return await resident.page(request, code)

    @router.post("/r/{code}", response_class=HTMLResponse)
    async def show(request: Request, code: str) -> Response:
        return await resident.page(request, code, str((await request.form()).get("last4", "")).strip())

    @router.post("/r/{code}/rate", response_class=HTMLResponse)
    async def rate(request: Request, code: str) -> Response:
        return await resident.rate(request, code)

    return router
