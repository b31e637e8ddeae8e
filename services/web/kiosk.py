"""The kiosk in the community centre, and the same three steps for a hotline operator typing for a caller:
choose from the menu → phone (and, if they like, name, address and a few words) → confirm. The receipt
shows the request's short code in large print."""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from contracts import API
from contracts.calls import SubmitRequest
from linli.client import CallFailed
from services.web.gateway import Unavailable
from services.web.pages import DEVICE_COOKIE, KIOSK_COOKIE, SESSION_COOKIE, Pages, Refusal, explain_invalid, explain_refusal
from services.web.sessions import Session, Sessions, seconds_left
from services.web.texts import Words

# A picture for each menu category, shown beside its name; a category not listed here gets the last one.
PICTURES = {
    "repair": "🔧", "haircut": "💇", "elderly": "🧓", "meals": "🍱", "tutoring": "📚", "health": "🩺",
    "legal": "⚖️", "counselling": "💬", "employment": "💼", "": "🤝",
}
FORM_FIELDS = ("service", "phone", "name", "address", "description", "urgency", "grid", "key")
# Where a field of the submit call is typed on the form.
FIELD_NAMES = {"resident.phone": "phone", "resident.name": "name", "resident.address": "address"}


@dataclass(frozen=True)
class Mode:
    """The kiosk, or the hotline: the same steps under another address, for another kind of caller."""

    name: str
    base: str
    channel: str


KIOSK = Mode("kiosk", "/kiosk", "kiosk")
HOTLINE = Mode("hotline", "/hotline", "hotline")


def typed(form: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(form.get(name, "")).strip() for name in FORM_FIELDS}


def submit_call(fields: Mapping[str, str], district: str, grid: str, channel: str, words: Words) -> SubmitRequest:
    """The submit call a filled form makes; a name left blank is said as "resident"."""
    return SubmitRequest.model_validate({
        "idempotency_key": fields.get("key") or f"web-{uuid.uuid4()}",
        "district": district, "grid": grid, "service": fields.get("service", ""),
        "description": fields.get("description", ""), "urgency": fields.get("urgency") or "routine",
        "channel": channel,
        "resident": {"name": fields.get("name") or words("kiosk.anonymous_name"), "phone": fields.get("phone", ""),
                     "address": fields.get("address", "")},
    })


def check_form(fields: Mapping[str, str], district: str, grid: str, channel: str, words: Words,
               services: Mapping[str, Any]) -> SubmitRequest | Refusal:
    """The call, or each field's fault in the page's language; nothing is sent until all is right. A
    hotline operator chooses the caller's grid (`grid` empty until they do); a kiosk's is its own."""
    problems: dict[str, str] = {}
    if fields.get("service") not in services:
        problems["service"] = words("kiosk.choose_service")
    if not grid:
        problems["grid"] = words("kiosk.choose_grid")
    if not fields.get("phone"):
        problems["phone"] = words("common.required")
    try:
        call = submit_call(fields, district, grid, channel, words)
    except ValidationError as exc:
        return Refusal({**explain_invalid(exc, words, FIELD_NAMES).fields, **problems})
    return Refusal(problems) if problems else call


class Kiosk:
    def __init__(self, pages: Pages, sessions: Sessions) -> None:
        self.pages = pages
        self.sessions = sessions
        self.directory = pages.directory

    async def who(self, request: Request, mode: Mode) -> tuple[Session | None, str | None]:
        """The kiosk's or the operator's session, and a fresh kiosk token when the old one had expired."""
        if mode is HOTLINE:
            return await self.sessions.check(self.pages.token(request, SESSION_COOKIE), ("dispatcher",)), None
        session = await self.sessions.check(self.pages.token(request, KIOSK_COOKIE), ("kiosk",))
        if session is None and (device := request.cookies.get(DEVICE_COOKIE, "")):
            device_id, _, secret = device.partition(":")
            try:
                signed = await self.sessions.device(device_id, secret)
            except (CallFailed, Unavailable):
                return None, None
            return await self.sessions.check(str(signed["token"]), ("kiosk",)), str(signed["token"])
        return session, None

    def keep(self, response: Response, token: str | None) -> Response:
        if token:
            self.pages.set_cookie(response, KIOSK_COOKIE, token)
        return response

    def sign_in_first(self, mode: Mode) -> RedirectResponse:
        return self.pages.redirect("/kiosk/setup" if mode is KIOSK else f"/signin?next={mode.base}")

    async def context(self, session: Session, mode: Mode, words: Words) -> dict[str, Any]:
        place = await self.directory.district(session.actor.district)
        grids = {g["id"]: g for g in place.get("grids", [])}
        here = grids.get(session.actor.grid)
        return {"mode": mode.name, "base": mode.base, "idle": self.pages.settings.kiosk_idle if mode is KIOSK else 0,
                "place": words.name(here) if here else "", "district_name": words.name(place) if place else "",
                "grids": list(grids.values()), "pictures": PICTURES}

    async def home(self, request: Request, mode: Mode) -> Response:
        session, fresh = await self.who(request, mode)
        if session is None:
            return self.sign_in_first(mode)
        words = self.pages.words(request)
        try:
            menu, context = await self.directory.menu(), await self.context(session, mode, words)
        except Unavailable:
            return self.pages.busy(request, "kiosk_home.html", menu={"categories": []}, mode=mode.name,
                                   base=mode.base, idle=0, pictures=PICTURES)
        return self.keep(self.pages.render(request, "kiosk_home.html", menu=menu, **context), fresh)

    async def ask(self, request: Request, mode: Mode, fields: dict[str, str], refusal: Refusal | None = None,
                  status_code: int = 200) -> Response:
        session, fresh = await self.who(request, mode)
        if session is None:
            return self.sign_in_first(mode)
        words = self.pages.words(request)
        services = await self.directory.services()
        if fields.get("service") not in services:
            return self.pages.redirect(mode.base)
        fields = {**fields, "key": fields.get("key") or f"web-{uuid.uuid4()}"}
        return self.keep(self.pages.render(
            request, "kiosk_ask.html", status_code=status_code, fields=fields, item=services[fields["service"]],
            errors=(refusal.fields if refusal else {}), error=(refusal.message if refusal else ""),
            **await self.context(session, mode, words)), fresh)

    async def confirm(self, request: Request, mode: Mode, send: bool) -> Response:
        """Step 2 → 3: the form checked, and shown back to confirm; then, sent, the request made (once,
        however often "confirm" is pressed: the form carries its idempotency key) and the receipt shown."""
        session, fresh = await self.who(request, mode)
        if session is None:
            return self.sign_in_first(mode)
        fields = typed(await request.form())
        words = self.pages.words(request)
        grid = fields["grid"] if mode is HOTLINE else session.actor.grid
        services = await self.directory.services()
        checked = check_form(fields, session.actor.district, grid, mode.channel, words, services)
        if isinstance(checked, Refusal):
            return await self.ask(request, mode, fields, checked, status_code=422)
        if not send:
            return self.keep(self.pages.render(request, "kiosk_confirm.html", fields=fields,
                                               item=services[fields["service"]],
                                               **await self.context(session, mode, words)), fresh)
        try:
            gateway, wait = self.pages.gateway, self.pages.settings.submit_timeout
            made = await gateway.call(API.INTAKE_SUBMIT, checked.model_dump(mode="json"), session.token, wait)
            status = await gateway.call(API.INTAKE_STATUS, {"request_id": made["request_id"]}, timeout=wait)
        except CallFailed as exc:
            return await self.ask(request, mode, fields, explain_refusal(exc, words, FIELD_NAMES), status_code=422)
        except Unavailable:
            return await self.ask(request, mode, fields, Refusal({}, words("common.busy")), status_code=503)
        return self.keep(self.pages.redirect(f"{mode.base}/receipt/{status['code']}"), fresh)

    async def receipt(self, request: Request, mode: Mode, code: str) -> Response:
        session, fresh = await self.who(request, mode)
        if session is None:
            return self.sign_in_first(mode)
        words = self.pages.words(request)
        try:
            status = await self.pages.gateway.call(API.INTAKE_STATUS, {"request_id": code})
        except (CallFailed, Unavailable):
            return self.pages.redirect(mode.base)
        services = await self.directory.services()
        return self.keep(self.pages.render(request, "kiosk_receipt.html", status=status,
                                           item=services.get(status["service"], {}),
                                           **await self.context(session, mode, words)), fresh)

    async def setup(self, request: Request) -> Response:
        """A committee member signs the kiosk in once with its device id and secret; it stays signed in."""
        words = self.pages.words(request)
        if request.method == "GET":
            return self.pages.render(request, "kiosk_setup.html", fields={}, errors={}, error="")
        form = await request.form()
        fields = {"device_id": str(form.get("device_id", "")).strip(), "secret": str(form.get("secret", "")).strip()}
        errors = {name: words("common.required") for name, value in fields.items() if not value}
        if errors:
            return self.pages.render(request, "kiosk_setup.html", status_code=422, fields=fields, errors=errors, error="")
        try:
            signed = await self.sessions.device(fields["device_id"], fields["secret"])
        except CallFailed:
            return self.pages.render(request, "kiosk_setup.html", status_code=422, fields=fields, errors={},
                                     error=words("kiosk.setup_refused"))
        except Unavailable:
            return self.pages.busy(request, "kiosk_setup.html", fields=fields, errors={})
        response = self.pages.redirect("/kiosk")
        self.pages.set_cookie(response, KIOSK_COOKIE, str(signed["token"]), max_age=seconds_left(signed))
        self.pages.set_cookie(response, DEVICE_COOKIE, f"{fields['device_id']}:{fields['secret']}", max_age=3650 * 86400)
        return response


def routes(kiosk: Kiosk) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    for mode in (KIOSK, HOTLINE):
        def bind(mode: Mode) -> None:
            @router.get(mode.base, response_class=HTMLResponse, name=f"{mode.name}_home")
            async def home(request: Request) -> Response:
                return await kiosk.home(request, mode)

            @router.get(f"{mode.base}/ask", response_class=HTMLResponse, name=f"{mode.name}_ask")
            async def ask(request: Request, service: str = "") -> Response:
                return await kiosk.ask(request, mode, {"service": service})

            @router.post(f"{mode.base}/ask", response_class=HTMLResponse)
            async def review(request: Request) -> Response:
                return await kiosk.confirm(request, mode, send=False)

            @router.post(f"{mode.base}/edit", response_class=HTMLResponse)
            async def edit(request: Request) -> Response:
                return await kiosk.ask(request, mode, typed(await request.form()))

            @router.post(f"{mode.base}/send", response_class=HTMLResponse)
            async def send(request: Request) -> Response:
                return await kiosk.confirm(request, mode, send=True)

            @router.get(mode.base + "/receipt/{code}", response_class=HTMLResponse)
            async def receipt(request: Request, code: str) -> Response:
                return await kiosk.receipt(request, mode, code)

        bind(mode)

    @router.api_route("/kiosk/setup", methods=["GET", "POST"], response_class=HTMLResponse)
    async def setup(request: Request) -> Response:
        return await kiosk.setup(request)

    return router
