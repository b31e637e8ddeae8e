"""The volunteer's pages at /v, made for a phone: sign in with a code sent to it; offers to accept or decline
with a reason; once accepted, where to go and whom to call; done with hours and a note; history; the bank's
balance, catalogue and certificate; and when they can serve.

The offers list asks every few seconds for this volunteer's own assignments (matcher.assignments with their
id): nothing about another volunteer is ever sent to the page."""

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from contracts import API
from contracts.calls import CodeRequest, CodeSignIn, Complete
from contracts.events import AwayPeriod, WeeklyWindow
from linli.client import CallFailed
from services.web.gateway import Gateway, Unavailable
from services.web.pages import SESSION_COOKIE, Pages, Refusal, explain_invalid
from services.web.resident import when_words
from services.web.sessions import Session, Sessions, seconds_left
from services.web.texts import Words

# How often an open offers page asks for news (htmx `every`): an offer lasts minutes, not seconds.
POLL = "every 4s"
NOTICES = ("declined", "done", "saved", "signed_out")
# Just after accepting, intake may not yet have followed the acceptance: asked again this often, this long.
DETAILS_TRIES, DETAILS_PAUSE = 20, 0.25
DAYS = range(7)


# --- the forms' checks: pure, each answering a value or the words to show next to its field -------------

def check_hours(text: str, words: Words) -> Decimal | str:
    """Hours as typed: a number above 0, at most 24, exact to 0.01 (the matcher's own bounds)."""
    text = text.strip().replace("，", ".").replace(",", ".")
    if not text:
        return words("common.required")
    try:
        hours = Decimal(text)
    except InvalidOperation:
        return words("volunteer.hours_not_a_number")
    if not hours.is_finite():
        return words("volunteer.hours_not_a_number")
    if hours <= 0:
        return words("volunteer.hours_positive")
    if hours > 24:
        return words("volunteer.hours_at_most_24")
    if hours != hours.quantize(Decimal("0.01")):
        return words("volunteer.hours_two_places")
    return hours


def check_done(form: Mapping[str, str], words: Words) -> tuple[Decimal, str] | Refusal:
    hours = check_hours(form.get("hours", ""), words)
    note = form.get("note", "").strip()
    problems = {"hours": hours} if isinstance(hours, str) else {}
    if len(note) > 1000:
        problems["note"] = words("common.too_long", n=1000)
    if problems or isinstance(hours, str):
        return Refusal(problems)
    return hours, note


def check_reason(reason: str, words: Words) -> str | Refusal:
    reason = reason.strip()
    if not reason:
        return Refusal({"reason": words("volunteer.reason_required")})
    if len(reason) > 500:
        return Refusal({"reason": words("common.too_long", n=500)})
    return reason


def check_quantity(text: str, words: Words) -> int | str:
    if not text.strip().isdigit():
        return words("volunteer.quantity_whole")
    quantity = int(text.strip())
    return quantity if 1 <= quantity <= 100 else words("volunteer.quantity_range")


def check_window(days: list[str], start: str, end: str, words: Words) -> WeeklyWindow | Refusal:
    problems: dict[str, str] = {}
    chosen = sorted({int(d) for d in days if d.isdigit() and int(d) in DAYS})
    if not chosen:
        problems["days"] = words("volunteer.choose_days")
    for name, value in (("start", start), ("end", end)):
        if not value:
            problems[name] = words("common.required")
    if not problems and end <= start:
        problems["end"] = words("volunteer.end_after_start")
    if problems:
        return Refusal(problems)
    try:
        return WeeklyWindow(days=chosen, start=start, end=end)
    except ValidationError as exc:
        return explain_invalid(exc, words)


def check_away(start: str, end: str, today: date, words: Words) -> AwayPeriod | Refusal:
    problems = {name: words("common.required") for name, value in (("away_start", start), ("away_end", end))
                if not value}
    if problems:
        return Refusal(problems)
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        return Refusal({"away_start": words("common.invalid")})
    if last < first:
        return Refusal({"away_end": words("volunteer.end_after_start")})
    if last < today:
        return Refusal({"away_end": words("volunteer.away_past")})
    return AwayPeriod(start=first, end=last)


def plain_number(value: Any) -> str:
    """15.00 → 15, 1.50 → 1.5: figures read aloud, not accounts."""
    return f"{Decimal(str(value)).normalize():f}"


def fingerprint(assignments: list[dict[str, Any]]) -> str:
    """What the offers list shows, in 12 hex digits: a poll that finds the same gets no new page."""
    seen = [(a["assignment_id"], a["status"]) for a in assignments]
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:12]


def refusal_words(exc: CallFailed, words: Words) -> str:
    """A service's refusal in the page's language: the volunteer pages' own words first, then the common ones."""
    code = str(exc.error.get("code", ""))
    for key in (f"volunteer.refused_{code}", f"common.{code}"):
        if key in words.texts:
            return words(key)
    return words("volunteer.refused")


class Volunteer:
    def __init__(self, pages: Pages, sessions: Sessions) -> None:
        self.pages = pages
        self.sessions = sessions
        self.directory = pages.directory

    @property
    def gateway(self) -> Gateway:
        return self.pages.gateway

    # --- what every page needs -----------------------------------------------------------------------

    async def session(self, request: Request) -> Session | None:
        return await self.sessions.check(self.pages.token(request), ("volunteer",))

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        words = self.pages.words(request)
        notice = request.query_params.get("notice", "")
        context.setdefault("notice", words(f"volunteer.notice_{notice}") if notice in NOTICES else "")
        context.setdefault("error", "")
        context.setdefault("errors", {})
        return self.pages.render(request, template, status_code=status_code, **context)

    def sign_in_first(self) -> Response:
        return self.pages.redirect("/v/signin")

    async def labelled(self, assignments: list[dict[str, Any]], words: Words) -> list[dict[str, Any]]:
        """Each assignment with its service and grid by name, and its window in its district's clock."""
        services = await self.directory.services()
        shown = []
        for a in assignments:
            place = await self.directory.district(a.get("district", ""))
            grids = {g["id"]: g for g in place.get("grids", [])}
            zone = place.get("timezone", "Asia/Shanghai")
            shown.append({**a, "service_name": words.name(services.get(a["service"], {"name": a["service"]})),
                          "grid_name": words.name(grids[a["grid"]]) if a["grid"] in grids else a["grid"],
                          "when": when_words(a, zone, words)})
        return shown

    async def assignments(self, session: Session, past: bool = False) -> list[dict[str, Any]]:
        reply = await self.gateway.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": session.actor.sub, "past": past},
                                        session.token)
        found: list[dict[str, Any]] = reply["assignments"]
        return found

    # --- signing in --------------------------------------------------------------------------------

    async def signin_page(self, request: Request, fields: dict[str, str] | None = None,
                          refusal: Refusal | None = None, status_code: int = 200) -> Response:
        if await self.session(request):
            return self.pages.redirect("/v")
        try:
            districts = await self.directory.districts()
        except Unavailable:
            return self.pages.busy(request, "volunteer_signin.html", fields=fields or {}, errors={}, districts=[])
        return self.render(request, "volunteer_signin.html", status_code=status_code, fields=fields or {},
                           districts=districts, errors=refusal.fields if refusal else {},
                           error=refusal.message if refusal else "")

    async def send_code(self, request: Request) -> Response:
        form = await request.form()
        words = self.pages.words(request)
        try:
            districts = await self.directory.districts()
        except Unavailable:
            return self.pages.busy(request, "volunteer_signin.html", fields={}, errors={}, districts=[])
        fields = {"phone": str(form.get("phone", "")).strip(),
                  "district": str(form.get("district", "")).strip() or (districts[0]["id"] if len(districts) == 1 else "")}
        problems = {}
        if not fields["phone"]:
            problems["phone"] = words("common.required")
        if fields["district"] not in {d["id"] for d in districts}:
            problems["district"] = words("volunteer.choose_district")
        try:
            call = CodeRequest(phone=fields["phone"], district=fields["district"] or "-")
        except ValidationError:
            problems.setdefault("phone", words("common.phone_invalid"))
        if problems:
            return await self.signin_page(request, fields, Refusal(problems), 422)
        try:
            sent = await self.gateway.call(API.IDENTITY_CODE_REQUEST, call.model_dump(include={"phone", "district"}))
        except CallFailed as exc:
            if exc.error.get("code") == "not_found":
                return await self.signin_page(request, fields, Refusal({"phone": words("volunteer.phone_unknown")}), 422)
            return await self.signin_page(request, fields, Refusal({}, refusal_words(exc, words)), 422)
        except Unavailable:
            return await self.signin_page(request, fields, Refusal({}, words("common.busy")), 503)
        minutes = max(1, round((datetime.fromisoformat(sent["expires_at"]).timestamp() - time.time()) / 60))
        return self.render(request, "volunteer_code.html", code_ref=sent["code_ref"], phone=fields["phone"],
                           minutes=minutes)

    async def check_code(self, request: Request) -> Response:
        form = await request.form()
        words = self.pages.words(request)
        code_ref, code = str(form.get("code_ref", "")).strip(), str(form.get("code", "")).strip()
        phone = str(form.get("phone", "")).strip()

        def again(message: str, status_code: int = 422) -> Response:
            return self.render(request, "volunteer_code.html", status_code=status_code, code_ref=code_ref,
                               phone=phone, minutes=0, errors={"code": message})

        if not code:
            return again(words("common.required"))
        try:
            call = CodeSignIn(code_ref=code_ref, code=code)
        except ValidationError:
            return again(words("volunteer.code_six_digits"))
        try:
            signed = await self.gateway.call(API.IDENTITY_CODE_VERIFY, call.model_dump(include={"code_ref", "code"}))
        except CallFailed:
            return again(words("volunteer.code_wrong"))
        except Unavailable:
            return again(words("common.busy"), 503)
        response = self.pages.redirect("/v")
        self.pages.set_cookie(response, SESSION_COOKIE, str(signed["token"]), max_age=seconds_left(signed))
        return response

    # --- offers ------------------------------------------------------------------------------------

    async def offers_context(self, session: Session, words: Words) -> dict[str, Any]:
        mine = await self.labelled(await self.assignments(session), words)
        return {"offers": [a for a in mine if a["status"] == "offered"],
                "accepted": [a for a in mine if a["status"] == "accepted"],
                "seen": fingerprint(mine), "poll": POLL}

    async def home(self, request: Request, error: str = "", status_code: int = 200) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            context = await self.offers_context(session, words)
        except (CallFailed, Unavailable):
            return self.render(request, "volunteer_home.html", status_code=503, error=words("common.busy"),
                               offers=[], accepted=[], seen="", poll=POLL)
        return self.render(request, "volunteer_home.html", status_code=status_code, error=error, **context)

    async def offers(self, request: Request, seen: str = "") -> Response:
        """The offers list alone, for the page's poll: nothing new is answered 204 and the page stays as it is."""
        session = await self.session(request)
        if session is None:
            return Response(status_code=204, headers={"HX-Redirect": "/v/signin"})
        try:
            context = await self.offers_context(session, self.pages.words(request))
        except (CallFailed, Unavailable):
            return Response(status_code=204)
        if context["seen"] == seen:
            return Response(status_code=204)
        return self.render(request, "_volunteer_offers.html", **context)

    async def accept(self, request: Request, assignment_id: str) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        try:
            await self.gateway.call(API.MATCHER_RESPOND, {"assignment_id": assignment_id, "volunteer_id": session.actor.sub,
                                                          "accept": True}, session.token)
        except CallFailed as exc:
            return await self.home(request, refusal_words(exc, self.pages.words(request)), 409)
        except Unavailable:
            return await self.home(request, self.pages.words(request)("common.busy"), 503)
        return self.pages.redirect(f"/v/a/{quote(assignment_id)}")

    async def decline_page(self, request: Request, assignment_id: str, reason: str = "",
                           refusal: Refusal | None = None, status_code: int = 200) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            mine = await self.labelled(await self.assignments(session), words)
        except (CallFailed, Unavailable):
            return await self.home(request, words("common.busy"), 503)
        offer = next((a for a in mine if a["assignment_id"] == assignment_id and a["status"] == "offered"), None)
        if offer is None:
            return await self.home(request, words("volunteer.refused_offer_closed"), 404)
        return self.render(request, "volunteer_decline.html", status_code=status_code, offer=offer,
                           fields={"reason": reason}, errors=refusal.fields if refusal else {},
                           error=refusal.message if refusal else "")

    async def decline(self, request: Request, assignment_id: str) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        typed = str((await request.form()).get("reason", ""))
        reason = check_reason(typed, words)
        if isinstance(reason, Refusal):
            return await self.decline_page(request, assignment_id, typed, reason, 422)
        try:
            await self.gateway.call(API.MATCHER_RESPOND, {"assignment_id": assignment_id, "volunteer_id": session.actor.sub,
                                                          "accept": False, "reason": reason}, session.token)
        except CallFailed as exc:
            return await self.home(request, refusal_words(exc, words), 409)
        except Unavailable:
            return await self.decline_page(request, assignment_id, typed, Refusal({}, words("common.busy")), 503)
        return self.pages.redirect("/v?notice=declined")

    # --- an accepted assignment ------------------------------------------------------------------

    async def details(self, request: Request, assignment_id: str, fields: dict[str, str] | None = None,
                      refusal: Refusal | None = None, status_code: int = 200) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            found = await self.fetch_details(session, assignment_id)
            place = await self.directory.district(found["district"])
        except CallFailed as exc:
            return await self.home(request, refusal_words(exc, words), 404)
        except Unavailable:
            return await self.home(request, words("common.busy"), 503)
        when = when_words(found, place.get("timezone", "Asia/Shanghai"), words)
        return self.render(request, "volunteer_details.html", status_code=status_code, details=found, when=when,
                           tel="tel:" + "".join(c for c in found["resident_phone"] if c.isdigit() or c == "+"),
                           fields=fields or {}, errors=refusal.fields if refusal else {},
                           error=refusal.message if refusal else "")

    async def fetch_details(self, session: Session, assignment_id: str) -> dict[str, Any]:
        """Intake gives details once it has followed the acceptance: just after the volunteer accepted, the
        matcher knows and intake may not yet, so an assignment the matcher shows as accepted is asked again."""
        ask = {"assignment_id": assignment_id, "volunteer_id": session.actor.sub}
        for attempt in range(DETAILS_TRIES):
            try:
                found: dict[str, Any] = await self.gateway.call(API.INTAKE_DETAILS, ask, session.token)
                return found
            except CallFailed as exc:
                if exc.error.get("code") != "not_found" or attempt == DETAILS_TRIES - 1 or not any(
                        a["assignment_id"] == assignment_id and a["status"] == "accepted"
                        for a in await self.assignments(session)):
                    raise
                await asyncio.sleep(DETAILS_PAUSE)
        raise AssertionError("unreachable")

    async def done(self, request: Request, assignment_id: str) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        form = await request.form()
        fields = {"hours": str(form.get("hours", "")), "note": str(form.get("note", ""))}
        checked = check_done(fields, words)
        if isinstance(checked, Refusal):
            return await self.details(request, assignment_id, fields, checked, 422)
        hours, note = checked
        try:
            call = Complete(assignment_id=assignment_id, volunteer_id=session.actor.sub, hours=hours, note=note)
        except ValidationError as exc:
            return await self.details(request, assignment_id, fields, explain_invalid(exc, words), 422)
        try:
            await self.gateway.call(API.MATCHER_COMPLETE, call.model_dump(mode="json"), session.token)
        except CallFailed as exc:
            return await self.details(request, assignment_id, fields, Refusal({}, refusal_words(exc, words)), 409)
        except Unavailable:
            return await self.details(request, assignment_id, fields, Refusal({}, words("common.busy")), 503)
        return self.pages.redirect("/v/history?notice=done")

    async def history(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            past = await self.labelled(await self.assignments(session, past=True), words)
        except (CallFailed, Unavailable):
            return self.render(request, "volunteer_history.html", status_code=503, error=words("common.busy"), past=[])
        return self.render(request, "volunteer_history.html", past=past)

    # --- the civilization bank -----------------------------------------------------------------------

    async def bank(self, request: Request, refusal: Refusal | None = None, status_code: int = 200,
                   notice: str = "") -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            catalog = await self.gateway.call(API.LEDGER_CATALOG_LIST, {})
            try:
                balance: dict[str, Any] | None = await self.gateway.call(
                    API.LEDGER_BALANCE, {"volunteer_id": session.actor.sub}, session.token)
            except CallFailed:
                balance = None  # a volunteer the ledger has not heard of yet has nothing on account
        except (CallFailed, Unavailable):
            return self.render(request, "volunteer_bank.html", status_code=503, error=words("common.busy"),
                               balance=None, items=[], keys={})
        if balance:
            balance = {**balance, **{k: plain_number(balance[k]) for k in ("hours", "points")},
                       "average_stars": plain_number(balance["average_stars"]) if balance.get("average_stars") else None}
        extra = {"notice": notice} if notice else {}
        return self.render(request, "volunteer_bank.html", status_code=status_code, balance=balance,
                           items=[{**item, "points": plain_number(item["points"])} for item in catalog["items"]],
                           keys={item["item_id"]: f"web-{uuid.uuid4()}" for item in catalog["items"]},
                           errors=refusal.fields if refusal else {}, error=refusal.message if refusal else "", **extra)

    async def redeem(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        form = await request.form()
        item_id, key = str(form.get("item_id", "")), str(form.get("key", "")) or f"web-{uuid.uuid4()}"
        field = f"quantity-{item_id}"
        quantity = check_quantity(str(form.get("quantity", "")), words)
        if isinstance(quantity, str):
            return await self.bank(request, Refusal({field: quantity}), 422)
        try:
            done = await self.gateway.call(API.LEDGER_REDEEM, {"volunteer_id": session.actor.sub, "item_id": item_id,
                                                               "quantity": quantity, "idempotency_key": key}, session.token)
        except CallFailed as exc:
            return await self.bank(request, Refusal({field: refusal_words(exc, words)}), 422)
        except Unavailable:
            return await self.bank(request, Refusal({}, words("common.busy")), 503)
        return await self.bank(request, notice=words("volunteer.redeemed", quantity=done["quantity"],
                                                     points=plain_number(done["points"]),
                                                     left=plain_number(done["balance_points"])))

    async def certificate(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            made = await self.gateway.call(API.LEDGER_CERTIFICATE, {"volunteer_id": session.actor.sub}, session.token)
        except CallFailed as exc:
            return await self.bank(request, Refusal({}, refusal_words(exc, words)), 409)
        except Unavailable:
            return await self.bank(request, Refusal({}, words("common.busy")), 503)
        return Response(base64.b64decode(made["pdf_base64"]), media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="{made["file_name"]}"', "Cache-Control": "no-store"})

    # --- when the volunteer can serve -----------------------------------------------------------------

    async def profile(self, session: Session) -> dict[str, Any]:
        """The profile as intake has it: an update that changes nothing answers it and publishes nothing new."""
        found: dict[str, Any] = await self.gateway.call(API.INTAKE_UPDATE_VOLUNTEER,
                                                        {"volunteer_id": session.actor.sub}, session.token)
        return found

    async def availability(self, request: Request, fields: dict[str, Any] | None = None,
                           refusal: Refusal | None = None, status_code: int = 200) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        try:
            profile = await self.profile(session)
        except (CallFailed, Unavailable):
            return self.render(request, "volunteer_availability.html", status_code=503, error=words("common.busy"),
                               profile={"availability": [], "away": []}, fields={}, days=DAYS)
        return self.render(request, "volunteer_availability.html", status_code=status_code, profile=profile,
                           fields=fields or {}, days=DAYS, errors=refusal.fields if refusal else {},
                           error=refusal.message if refusal else "")

    async def change_availability(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first()
        words = self.pages.words(request)
        form = await request.form()
        action = str(form.get("action", ""))
        fields: dict[str, Any] = {name: str(form.get(name, "")) for name in ("start", "end", "away_start", "away_end")}
        fields["days"] = [str(d) for d in form.getlist("days")]
        try:
            profile = await self.profile(session)
        except (CallFailed, Unavailable):
            return await self.availability(request, fields, Refusal({}, words("common.busy")), 503)
        windows, away = list(profile["availability"]), list(profile["away"])
        if action == "add_window":
            window = check_window(fields["days"], fields["start"], fields["end"], words)
            if isinstance(window, Refusal):
                return await self.availability(request, fields, window, 422)
            change: dict[str, Any] = {"availability": [*windows, window.model_dump()]}
        elif action == "add_away":
            period = check_away(fields["away_start"], fields["away_end"], date.today(), words)
            if isinstance(period, Refusal):
                return await self.availability(request, fields, period, 422)
            change = {"away": [*away, period.model_dump(mode="json")]}
        elif action.startswith("remove_window_") and action[14:].isdigit():
            change = {"availability": [w for n, w in enumerate(windows) if n != int(action[14:])]}
        elif action.startswith("remove_away_") and action[12:].isdigit():
            change = {"away": [p for n, p in enumerate(away) if n != int(action[12:])]}
        else:
            return self.pages.redirect("/v/availability")
        try:
            await self.gateway.call(API.INTAKE_UPDATE_VOLUNTEER, {"volunteer_id": session.actor.sub, **change},
                                    session.token)
        except CallFailed as exc:
            return await self.availability(request, fields, Refusal({}, refusal_words(exc, words)), 422)
        except Unavailable:
            return await self.availability(request, fields, Refusal({}, words("common.busy")), 503)
        return self.pages.redirect("/v/availability?notice=saved")


def routes(volunteer: Volunteer) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/v", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        return await volunteer.home(request)

    @router.get("/v/offers", response_class=HTMLResponse)
    async def offers(request: Request, seen: str = "") -> Response:
        return await volunteer.offers(request, seen)

    @router.get("/v/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> Response:
        return await volunteer.signin_page(request)

    @router.post("/v/signin", response_class=HTMLResponse)
    async def send_code(request: Request) -> Response:
        return await volunteer.send_code(request)

    @router.post("/v/signin/code", response_class=HTMLResponse)
    async def check_code(request: Request) -> Response:
        return await volunteer.check_code(request)

    @router.post("/v/signout")
    async def sign_out(request: Request) -> Response:
        response = volunteer.pages.redirect("/v/signin?notice=signed_out")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.post("/v/offers/{assignment_id}/accept", response_class=HTMLResponse)
    async def accept(request: Request, assignment_id: str) -> Response:
        return await volunteer.accept(request, assignment_id)

    @router.get("/v/offers/{assignment_id}/decline", response_class=HTMLResponse)
    async def decline_page(request: Request, assignment_id: str) -> Response:
        return await volunteer.decline_page(request, assignment_id)

    @router.post("/v/offers/{assignment_id}/decline", response_class=HTMLResponse)
    async def decline(request: Request, assignment_id: str) -> Response:
        return await volunteer.decline(request, assignment_id)

    @router.get("/v/a/{assignment_id}", response_class=HTMLResponse)
    async def details(request: Request, assignment_id: str) -> Response:
        return await volunteer.details(request, assignment_id)

    @router.post("/v/a/{assignment_id}/done", response_class=HTMLResponse)
    async def done(request: Request, assignment_id: str) -> Response:
        return await volunteer.done(request, assignment_id)

    @router.get("/v/history", response_class=HTMLResponse)
    async def history(request: Request) -> Response:
        return await volunteer.history(request)

    @router.get("/v/bank", response_class=HTMLResponse)
    async def bank(request: Request) -> Response:
        return await volunteer.bank(request)

    @router.post("/v/bank/redeem", response_class=HTMLResponse)
    async def redeem(request: Request) -> Response:
        return await volunteer.redeem(request)

    @router.get("/v/certificate.pdf")
    async def certificate(request: Request) -> Response:
        return await volunteer.certificate(request)

    @router.get("/v/availability", response_class=HTMLResponse)
    async def availability(request: Request) -> Response:
        return await volunteer.availability(request)

    @router.post("/v/availability", response_class=HTMLResponse)
    async def change_availability(request: Request) -> Response:
        return await volunteer.change_availability(request)

    # The language switch links to the page's own address: where that was a form's POST, it leads back to
    # the page the form is on (the switch is remembered by the redirect).
    for sent, page in (("/v/signin/code", "/v/signin"), ("/v/bank/redeem", "/v/bank"),
                       ("/v/offers/{assignment_id}/accept", "/v")):
        def back(target: str) -> None:
            @router.get(sent, include_in_schema=False)
            async def to_page() -> Response:
                return volunteer.pages.redirect(target)

        back(page)

    @router.get("/v/a/{assignment_id}/done")
    async def to_details(assignment_id: str) -> Response:
        return volunteer.pages.redirect(f"/v/a/{quote(assignment_id)}")

    return router
