"""The console's back office: the ledger's review queue with confirm (bank clerks), dead letters with replay
(administrators), and the month's report as the wall chart with its CSV, PNG and SVG (ledger.report)."""

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from contracts import API
from contracts.calls import ConfirmService
from linli.client import CallFailed
from services.web.gateway import Unavailable
from services.web.ops import Console, explained, place_refusal
from services.web.pages import explain_invalid

# The services whose dead letters the console shows (each answers linli.api.<service>.dead_letters).
LETTER_SERVICES = ("intake", "matcher", "notifier", "ledger", "care")
MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
BY = ("grid", "team", "volunteer")
FILES = ("csv", "png", "svg")


def month_asked(asked: str, zone: str, now: datetime | None = None) -> str:
    """The month asked for, or this month on the district's clock."""
    if MONTH.match(asked):
        return asked
    return (now or datetime.now(ZoneInfo(zone))).astimezone(ZoneInfo(zone)).strftime("%Y-%m")


def by_asked(asked: str) -> str:
    return asked if asked in BY else "grid"


def letter_rows(replies: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every service's open dead letters in one list, newest first, each knowing its service."""
    rows = [{**letter, "service": service} for service, letters in replies.items() for letter in letters]
    return sorted(rows, key=lambda letter: -float(letter.get("at") or 0))


def download_headers(reply: Mapping[str, Any], inline: bool = False) -> dict[str, str]:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(reply.get("file_name") or "report"))
    return {"Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
            "Cache-Control": "no-store"}


class Reports:
    def __init__(self, console: Console) -> None:
        self.console = console

    # --- the ledger's review queue -----------------------------------------------------------------

    async def review(self, request: Request, status_code: int = 200, errors: Mapping[str, str] | None = None,
                     notice: str = "", failed: str = "") -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return console.sign_in_first(request)
        try:
            desk = await console.desk(request, session)
            items = (await desk.bus.call(API.LEDGER_REVIEW, {"limit": 200}))["items"]
        except Unavailable:
            return console.busy(request)
        except CallFailed as exc:
            return console.refused(request, desk, exc)
        return console.render(request, desk, "ops_review.html", status_code=status_code, items=items,
                              errors=dict(errors or {}), notice=notice, failed=failed)

    async def confirm(self, request: Request) -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return console.sign_in_first(request)
        form = {name: str(value).strip() for name, value in (await request.form()).items()}
        words = console.pages.words(request)
        item = form.get("request_id", "")
        try:
            call = ConfirmService.model_validate({"request_id": item, "volunteer_id": form.get("volunteer_id", ""),
                                                  "operator": session.actor.sub, "reason": form.get("reason", "")})
        except ValidationError as exc:
            return await self.review(request, 422, explain_invalid(exc, words).fields, failed=item)
        try:
            await console.gateway.call(API.LEDGER_CONFIRM, call.model_dump(mode="json"), session.token)
        except CallFailed as exc:
            errors = place_refusal(explained(exc, words), ("reason",), str(exc.error.get("code", "")))
            return await self.review(request, 422, errors, failed=item)
        except Unavailable:
            return await self.review(request, 503, {"reason": words("common.busy")}, failed=item)
        return await self.review(request, notice=words("ops.confirmed_notice", id=item[:8]))

    # --- dead letters ------------------------------------------------------------------------------

    async def letters(self, request: Request, status_code: int = 200, notice: str = "", error: str = "") -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return console.sign_in_first(request)
        try:
            desk = await console.desk(request, session)
            replies = {service: (await desk.bus.call(f"linli.api.{service}.dead_letters",
                                                     {"action": "list", "limit": 100}))["dead_letters"]
                       for service in LETTER_SERVICES}
        except Unavailable:
            return console.busy(request)
        except CallFailed as exc:
            return console.refused(request, desk, exc)
        return console.render(request, desk, "ops_letters.html", status_code=status_code, letters=letter_rows(replies),
                              notice=notice, error=error)

    async def replay(self, request: Request) -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return console.sign_in_first(request)
        form = await request.form()
        words = console.pages.words(request)
        service, letter = str(form.get("service", "")), str(form.get("id", ""))[:200]
        if service not in LETTER_SERVICES or not letter:
            return await self.letters(request, 422, error=words("common.invalid"))
        try:
            await console.gateway.call(f"linli.api.{service}.dead_letters", {
                "action": "replay", "id": letter, "operator": session.actor.sub,
                "reason": str(form.get("reason", ""))[:500]}, session.token)
        except CallFailed as exc:
            return await self.letters(request, 422, error=explained(exc, words).message)
        except Unavailable:
            return await self.letters(request, 503, error=words("common.busy"))
        return await self.letters(request, notice=words("ops.replayed", id=letter))

    # --- the month's report ------------------------------------------------------------------------

    async def report(self, request: Request) -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return console.sign_in_first(request)
        try:
            desk = await console.desk(request, session)
            month = month_asked(request.query_params.get("month", ""), desk.zone)
            by = by_asked(request.query_params.get("by", ""))
            table = await desk.bus.call(API.LEDGER_REPORT, {"district": desk.district, "month": month, "by": by})
        except Unavailable:
            return console.busy(request)
        except CallFailed as exc:
            return console.refused(request, desk, exc)
        query = f"district={desk.district}&month={month}&by={by}"
        return console.render(request, desk, "ops_report.html", table=table, month=month, by=by, choices=BY,
                              query=query, files=FILES)

    async def file(self, request: Request, kind: str, inline: bool = False) -> Response:
        console = self.console
        session = await console.session(request)
        if session is None:
            return Response(status_code=401)
        try:
            desk = await console.desk(request, session)
            month = month_asked(request.query_params.get("month", ""), desk.zone)
            reply = await desk.bus.call(API.LEDGER_REPORT, {"district": desk.district, "month": month,
                                                             "by": by_asked(request.query_params.get("by", "")),
                                                             "format": kind})
        except Unavailable:
            return Response(status_code=503)
        except CallFailed as exc:
            return Response(status_code=403 if exc.error.get("code") == "forbidden" else 422)
        return Response(base64.b64decode(reply["content_base64"]), media_type=reply["content_type"],
                        headers=download_headers(reply, inline))


def routes(reports: Reports) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/ops/review", response_class=HTMLResponse)
    async def review(request: Request) -> Response:
        return await reports.review(request)

    @router.post("/ops/review/confirm", response_class=HTMLResponse)
    async def confirm(request: Request) -> Response:
        return await reports.confirm(request)

    @router.get("/ops/dead-letters", response_class=HTMLResponse)
    async def letters(request: Request) -> Response:
        return await reports.letters(request)

    @router.post("/ops/dead-letters/replay", response_class=HTMLResponse)
    async def replay(request: Request) -> Response:
        return await reports.replay(request)

    @router.get("/ops/report", response_class=HTMLResponse)
    async def report(request: Request) -> Response:
        return await reports.report(request)

    @router.get("/ops/report/chart.png")
    async def chart(request: Request) -> Response:
        return await reports.file(request, "png", inline=True)

    @router.get("/ops/report/download/{kind}")
    async def download(request: Request, kind: str) -> Response:
        if kind not in FILES:
            return Response(status_code=404)
        return await reports.file(request, kind)

    return router
