"""The operator console, /ops: the live queue (unmatched, reopened and overdue first, then the requests by
state, community and grid), kept current by server-sent events; a request's page with its history, the
matcher's explanation, and assign, reassign and cancel; volunteers with their load; pairings. The ledger's
review queue, dead letters and the month's report are in ops_reports.py.

Every call carries the signed-in operator's token: the services decide what each role may do, and the
console only chooses what to show."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from contracts import API
from contracts.calls import CancelRequest, CloseRequest, EndPairing, OperatorAssign, OperatorReassign, PairResident
from linli.client import CallFailed
from services.common.auth import EVERY_DISTRICT, OPERATOR_ROLES, Actor
from services.web.gateway import Gateway, Unavailable
from services.web.pages import SESSION_COOKIE, Pages, Refusal, explain_invalid, explain_refusal
from services.web.sessions import Session, Sessions
from services.web.texts import Words

QUEUE_STATES = ("open", "offered", "assigned", "unmatched", "reopened", "overdue", "submitted", "accepted",
                "completed", "rated", "cancelled", "closed", "any")
# Shown above the queue, whatever it is filtered by: what needs a person now.
FIRST = ("unmatched", "reopened", "overdue")
# The queue shows at most this many requests, read in pages of PAGE (the most intake.requests gives at once).
QUEUE_MAX, PAGE = 1000, 500
FIRST_MAX = 50
# A silent stream is closed by proxies after a minute or so: a comment line keeps it open.
KEEP_ALIVE = 15.0
# Where a refusal of each code is shown: next to the volunteer's choice, or else next to the reason.
VOLUNTEER_CODES = frozenset({"at_capacity", "unknown_volunteer", "volunteer_left", "not_found_volunteer"})


class Counted:
    """The gateway, counting the calls one page makes: the console says in a header how many it took."""

    def __init__(self, gateway: Gateway, token: str) -> None:
        self.gateway, self.token, self.calls = gateway, token, 0

    async def call(self, subject: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return await self.gateway.call(subject, dict(payload), self.token)


@dataclass(frozen=True)
class Filters:
    """What the queue is filtered by; anything not offered by the page's own selects is dropped."""

    district: str
    state: str = "open"
    community: str = ""
    grid: str = ""

    def query(self, **changes: Any) -> dict[str, Any]:
        asked = {"state": self.state, "district": self.district, "community": self.community or None,
                 "grid": self.grid or None, "limit": PAGE, **changes}
        return {name: value for name, value in asked.items() if value is not None}

    def params(self) -> str:
        return urlencode({name: value for name, value in (("district", self.district), ("state", self.state),
                                                          ("community", self.community), ("grid", self.grid)) if value})


def filters_from(params: Mapping[str, str], district: str, place: Mapping[str, Any]) -> Filters:
    state = params.get("state", "open")
    communities = {c["id"] for c in place.get("communities", [])}
    grids = {g["id"]: g.get("community", "") for g in place.get("grids", [])}
    community = params.get("community", "")
    community = community if community in communities else ""
    grid = params.get("grid", "")
    grid = grid if grid in grids and (not community or grids[grid] == community) else ""
    return Filters(district, state if state in QUEUE_STATES else "open", community, grid)


def district_for(actor: Actor, asked: str, known: list[str]) -> str:
    """An operator's own district; an administrator of every district picks one (the first by default)."""
    if actor.district != EVERY_DISTRICT:
        return actor.district
    return asked if asked in known else (known[0] if known else "")


def sees(actor: Actor, event: Mapping[str, Any]) -> bool:
    """Whether an operator's live stream carries this event: their own district's, or every district's."""
    return actor.district == EVERY_DISTRICT or event.get("district") == actor.district


def sse_message(event: Mapping[str, Any]) -> str:
    """The event as the page reads it: which request changed and how; never the event's data (no one's
    details travel this way, and the page asks again for what it shows)."""
    about = {"type": str(event.get("type", "")).removeprefix("linli."),
             "request_id": str(event.get("correlationid") or event.get("subject") or "")}
    return f"event: changed\ndata: {json.dumps(about)}\n\n"


def local(moment: str | datetime | None, zone: str) -> str:
    if not moment:
        return ""
    when = moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)
    return f"{when.astimezone(ZoneInfo(zone)):%m-%d %H:%M}"


def names(desk: "Desk", status: Mapping[str, Any], services: Mapping[str, Any]) -> dict[str, Any]:
    """The request's service and grid as the menu and the places name them (in either language)."""
    district = next((d for d in desk.districts if d["id"] == status["district"]), {})
    grid = next((g for g in district.get("grids", []) if g["id"] == status["grid"]), None)
    return {"service_item": services.get(status["service"]), "grid_place": grid}


def refusal_field(code: str, fields: tuple[str, ...]) -> str:
    """The form field a service's refusal is shown next to."""
    if code in VOLUNTEER_CODES and fields[0].endswith("volunteer"):
        return fields[0]
    return fields[-1]


def explained(exc: CallFailed, words: Words, names: Mapping[str, str] | None = None) -> Refusal:
    """A service's refusal in the page's language: the console's own words for the refusals it meets, the
    shared ones for the rest; a Chinese page never shows a service's English message, only its code."""
    refusal = explain_refusal(exc, words, names)
    code = str(exc.error.get("code", ""))
    if not refusal.message:
        return refusal
    if f"ops.refused_{code}" in words.texts:
        return Refusal(refusal.fields, words(f"ops.refused_{code}"))
    if f"common.{code}" not in words.texts and words.language != "en":
        return Refusal(refusal.fields, words("ops.refused_other", code=code))
    return refusal


def place_refusal(refusal: Refusal, fields: tuple[str, ...], code: str) -> dict[str, str]:
    errors = dict(refusal.fields)
    if refusal.message:
        errors.setdefault(refusal_field(code, fields), refusal.message)
    return errors


@dataclass
class Desk:
    """One signed-in operator's view for one page: their calls (counted), the district they work in, its
    places and its clock."""

    session: Session
    bus: Counted
    district: str
    districts: list[dict[str, Any]]
    started: float = field(default_factory=time.perf_counter)
    # Time spent waiting for the lists' calls, apart from making the page.
    waited: float = 0.0

    @property
    def actor(self) -> Actor:
        return self.session.actor

    @property
    def place(self) -> dict[str, Any]:
        return next((d for d in self.districts if d["id"] == self.district), {})

    @property
    def zone(self) -> str:
        return str(self.place.get("timezone", "Asia/Shanghai"))

    def stamp(self, response: Response) -> Response:
        response.headers["X-Bus-Calls"] = str(self.bus.calls)
        total = (time.perf_counter() - self.started) * 1000
        response.headers["Server-Timing"] = f"bus;dur={self.waited * 1000:.1f}, total;dur={total:.1f}"
        response.headers["Cache-Control"] = "no-store"
        return response


class Console:
    def __init__(self, pages: Pages, sessions: Sessions) -> None:
        self.pages = pages
        self.sessions = sessions
        self.directory = pages.directory

    @property
    def gateway(self) -> Gateway:
        return self.pages.gateway

    async def session(self, request: Request) -> Session | None:
        return await self.sessions.check(self.pages.token(request, SESSION_COOKIE), OPERATOR_ROLES)

    def sign_in_first(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.pages.redirect("/signin?" + urlencode({"next": target}))

    async def desk(self, request: Request, session: Session) -> Desk:
        try:
            districts = await self.directory.districts()
        except CallFailed as exc:  # every page needs the places: without them, the system is not ready
            raise Unavailable(API.INTAKE_PLACES) from exc
        known = [d["id"] for d in districts]
        return Desk(session, Counted(self.gateway, session.token),
                    district_for(session.actor, request.query_params.get("district", ""), known), districts)

    def render(self, request: Request, desk: Desk, template: str, status_code: int = 200, **context: Any) -> Response:
        response = self.pages.render(request, template, status_code=status_code, desk=desk, actor=desk.actor,
                                     district_name=self.pages.words(request).name(desk.place) if desk.place else "",
                                     every_district=desk.actor.district == EVERY_DISTRICT, districts=desk.districts,
                                     **context)
        return desk.stamp(response)

    def busy(self, request: Request) -> Response:
        return self.pages.render(request, "ops_message.html", status_code=503, title=self.pages.words(request)("ops.title"),
                                 error=self.pages.words(request)("common.busy"), desk=None, actor=None)

    def refused(self, request: Request, desk: Desk, exc: CallFailed) -> Response:
        """A page the operator's role or district may not see: said in words, with nothing else shown."""
        words = self.pages.words(request)
        status = 403 if exc.error.get("code") == "forbidden" else 404 if exc.error.get("code") == "not_found" else 422
        return self.render(request, desk, "ops_message.html", status_code=status, title=words("ops.title"),
                           error=explained(exc, words).message or words("ops.refused"))

    # --- the queue ---------------------------------------------------------------------------------

    async def listing(self, desk: Desk, query: dict[str, Any], most: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while len(items) < most:
            reply = await desk.bus.call(API.INTAKE_REQUESTS, {**query, "limit": min(PAGE, most - len(items)),
                                                               **({"cursor": cursor} if cursor else {})})
            items += reply["items"]
            cursor = reply.get("next_cursor", "")
            if not cursor:
                break
        return items

    async def lists(self, desk: Desk, filters: Filters) -> dict[str, Any]:
        first, queue = await asyncio.gather(
            asyncio.gather(*(self.listing(desk, filters.query(state=state, community=None, grid=None), FIRST_MAX)
                             for state in FIRST)),
            self.listing(desk, filters.query(), QUEUE_MAX),
        )
        return {"first": dict(zip(FIRST, first)), "queue": queue, "queue_max": QUEUE_MAX}

    async def queue(self, request: Request, fragment: bool = False) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request) if not fragment else Response(status_code=401)
        try:
            desk = await self.desk(request, session)
            filters = filters_from(request.query_params, desk.district, desk.place)
            asked = time.perf_counter()
            lists = await self.lists(desk, filters)
            desk.waited = time.perf_counter() - asked
        except Unavailable:
            return self.busy(request)
        except CallFailed as exc:
            return self.refused(request, desk, exc)
        return self.render(request, desk, "ops_rows.html" if fragment else "ops_queue.html", filters=filters,
                           states=QUEUE_STATES, zone=desk.zone, local=local, **lists)

    async def events(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return Response("sign in first\n", status_code=401, media_type="text/plain")
        actor = session.actor

        async def stream() -> AsyncIterator[str]:
            async with self.gateway.listen() as queue:
                yield "retry: 3000\n: listening\n\n"
                while not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(queue.get(), KEEP_ALIVE)
                    except TimeoutError:
                        yield ": still here\n\n"
                        continue
                    if sees(actor, event):
                        yield sse_message(event)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- a request ---------------------------------------------------------------------------------

    async def request_page(self, request: Request, request_id: str, status_code: int = 200,
                           errors: Mapping[str, str] | None = None, typed: Mapping[str, str] | None = None,
                           notice: str = "") -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        try:
            desk = await self.desk(request, session)
            status = await desk.bus.call(API.INTAKE_STATUS, {"request_id": request_id})
            explanation = await desk.bus.call(API.MATCHER_EXPLAIN, {"request_id": status["request_id"]})
            volunteers = (await desk.bus.call(API.MATCHER_VOLUNTEERS, {"district": status["district"], "limit": 500}))["items"]
            services = await self.directory.services()
        except Unavailable:
            return self.busy(request)
        except CallFailed as exc:
            return self.refused(request, desk, exc)
        zone = next((str(d.get("timezone", "Asia/Shanghai")) for d in desk.districts if d["id"] == status["district"]),
                    desk.zone)
        return self.render(request, desk, "ops_request.html", status_code=status_code, status=status,
                           explanation=explanation, volunteers=volunteers, errors=dict(errors or {}),
                           fields=dict(typed or {}), notice=notice, zone=zone, local=local,
                           **names(desk, status, services))

    async def facts(self, request: Request, request_id: str) -> Response:
        """The request's state and history alone: what its page asks again when the stream says it changed."""
        session = await self.session(request)
        if session is None:
            return Response(status_code=401)
        try:
            desk = await self.desk(request, session)
            status = await desk.bus.call(API.INTAKE_STATUS, {"request_id": request_id})
            services = await self.directory.services()
        except Unavailable:
            return Response(status_code=503)
        except CallFailed:
            return Response(status_code=404)
        zone = next((str(d.get("timezone", "Asia/Shanghai")) for d in desk.districts if d["id"] == status["district"]),
                    desk.zone)
        return self.render(request, desk, "ops_request_facts.html", status=status, zone=zone, local=local,
                           **names(desk, status, services))

    async def act(self, request: Request, request_id: str, action: str) -> Response:
        """Assign, reassign or cancel: the form checked against the call's own model, then the call; a fault
        or a refusal comes back next to its field, and nothing has changed."""
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        form = {name: str(value).strip() for name, value in (await request.form()).items()}
        words = self.pages.words(request)
        try:
            status = await self.gateway.call(API.INTAKE_STATUS, {"request_id": request_id})
        except CallFailed:
            return await self.request_page(request, request_id)
        except Unavailable:
            return self.busy(request)
        subject, model, fields, names = ACTIONS[action]
        if action == "cancel" and status["status"] == "reopened":
            subject, model = API.INTAKE_CLOSE, CloseRequest  # a reopened request is closed, with its reason
        payload = {"request_id": status["request_id"], "operator": session.actor.sub,
                   **{key: form.get(name, "") for key, name in names.items()}}
        if action == "assign":
            payload["confirmed"] = form.get("assign_confirmed") == "1"
        if action == "reassign" and not payload.get("volunteer_id"):
            payload.pop("volunteer_id")
        try:
            call = model.model_validate(payload)
        except ValidationError as exc:
            found = explain_invalid(exc, words, {key: name for key, name in names.items()})
            return await self.request_page(request, request_id, 422, found.fields, form)
        try:
            await self.gateway.call(subject, call.model_dump(mode="json", exclude_none=True), session.token)
        except CallFailed as exc:
            errors = place_refusal(explained(exc, words, names), fields, str(exc.error.get("code", "")))
            return await self.request_page(request, request_id, 422, errors, form)
        except Unavailable:
            return await self.request_page(request, request_id, 503, {fields[-1]: words("common.busy")}, form)
        return self.pages.redirect(f"/ops/r/{status['request_id']}?done={action}")

    # --- volunteers and pairings -------------------------------------------------------------------

    async def volunteers(self, request: Request) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        try:
            desk = await self.desk(request, session)
            grid = request.query_params.get("grid", "")
            grid = grid if grid in {g["id"] for g in desk.place.get("grids", [])} else ""
            reply = await desk.bus.call(API.MATCHER_VOLUNTEERS, {"district": desk.district, "limit": 500,
                                                                  **({"grid": grid} if grid else {})})
        except Unavailable:
            return self.busy(request)
        except CallFailed as exc:
            return self.refused(request, desk, exc)
        return self.render(request, desk, "ops_volunteers.html", volunteers=reply["items"], grid=grid)

    async def certificate(self, request: Request, volunteer_id: str) -> Response:
        """A volunteer's service certificate, as a clerk or the committee prints it at the desk."""
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        try:
            desk = await self.desk(request, session)
            made = await desk.bus.call(API.LEDGER_CERTIFICATE, {"volunteer_id": volunteer_id})
        except Unavailable:
            return self.busy(request)
        except CallFailed as exc:
            return self.refused(request, desk, exc)
        return Response(base64.b64decode(made["pdf_base64"]), media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="{made["file_name"]}"', "Cache-Control": "no-store"})

    async def pairings(self, request: Request, status_code: int = 200, errors: Mapping[str, str] | None = None,
                       typed: Mapping[str, str] | None = None, notice: str = "") -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        try:
            desk = await self.desk(request, session)
            volunteers = (await desk.bus.call(API.MATCHER_VOLUNTEERS, {"district": desk.district, "limit": 500}))["items"]
        except Unavailable:
            return self.busy(request)
        except CallFailed as exc:
            return self.refused(request, desk, exc)
        return self.render(request, desk, "ops_pairings.html", status_code=status_code, volunteers=volunteers,
                           errors=dict(errors or {}), fields=dict(typed or {}), notice=notice)

    async def pair(self, request: Request, ending: bool) -> Response:
        session = await self.session(request)
        if session is None:
            return self.sign_in_first(request)
        form = {name: str(value).strip() for name, value in (await request.form()).items()}
        words = self.pages.words(request)
        model: type[BaseModel]
        if ending:
            names = {"pairing_id": "pairing_id", "reason": "unpair_reason"}
            subject, model, fields = API.INTAKE_UNPAIR, EndPairing, ("pairing_id", "unpair_reason")
            payload: dict[str, Any] = {key: form.get(name, "") for key, name in names.items()}
        else:
            names = {"resident_phone": "resident_phone", "volunteer_id": "pair_volunteer", "kind": "kind"}
            subject, model, fields = API.INTAKE_PAIR, PairResident, ("pair_volunteer", "resident_phone")
            try:
                known = [d["id"] for d in await self.directory.districts()]
            except (CallFailed, Unavailable):
                return self.busy(request)
            district = district_for(session.actor, form.get("district", ""), known)
            payload = {"district": district, **{key: form.get(name, "") for key, name in names.items()}}
        try:
            call = model.model_validate(payload)
        except ValidationError as exc:
            found = explain_invalid(exc, words, names)
            if "resident_phone" in found.fields:
                found.fields["resident_phone"] = words("common.phone_invalid")
            return await self.pairings(request, 422, found.fields, form)
        try:
            made = await self.gateway.call(subject, call.model_dump(mode="json"), session.token)
        except CallFailed as exc:
            errors = place_refusal(explained(exc, words, names), fields, str(exc.error.get("code", "")))
            return await self.pairings(request, 422, errors, form)
        except Unavailable:
            return await self.pairings(request, 503, {fields[-1]: words("common.busy")}, form)
        notice = words("ops.unpaired" if ending else "ops.paired", id=made["pairing_id"])
        return await self.pairings(request, notice=notice)


# action: (call, its model, the form's fields (the one a volunteer refusal goes to first), call field → form field)
ACTIONS: dict[str, tuple[str, type[BaseModel], tuple[str, ...], dict[str, str]]] = {
    "assign": (API.MATCHER_ASSIGN, OperatorAssign, ("assign_volunteer", "assign_reason"),
               {"volunteer_id": "assign_volunteer", "reason": "assign_reason"}),
    "reassign": (API.MATCHER_REASSIGN, OperatorReassign, ("reassign_volunteer", "reassign_reason"),
                 {"volunteer_id": "reassign_volunteer", "reason": "reassign_reason"}),
    "cancel": (API.INTAKE_CANCEL, CancelRequest, ("cancel_reason",), {"reason": "cancel_reason"}),
}
DONE = {"assign": "ops.assigned", "reassign": "ops.reassigned", "cancel": "ops.cancelled"}


def done_notice(words: Words, done: str) -> str:
    return words(DONE[done]) if done in DONE else ""


def routes(console: Console) -> APIRouter:
    from services.web import ops_reports

    router = APIRouter(include_in_schema=False)

    @router.get("/ops", response_class=HTMLResponse)
    async def queue(request: Request) -> Response:
        return await console.queue(request)

    @router.get("/ops/rows", response_class=HTMLResponse)
    async def rows(request: Request) -> Response:
        return await console.queue(request, fragment=True)

    @router.get("/ops/events")
    async def events(request: Request) -> Response:
        return await console.events(request)

    @router.get("/ops/r/{request_id}", response_class=HTMLResponse)
    async def one(request: Request, request_id: str, done: str = "") -> Response:
        return await console.request_page(request, request_id, notice=done_notice(console.pages.words(request), done))

    @router.get("/ops/r/{request_id}/facts", response_class=HTMLResponse)
    async def facts(request: Request, request_id: str) -> Response:
        return await console.facts(request, request_id)

    @router.post("/ops/r/{request_id}/{action}", response_class=HTMLResponse)
    async def act(request: Request, request_id: str, action: str) -> Response:
        if action not in ACTIONS:
            return Response(status_code=404)
        return await console.act(request, request_id, action)

    @router.get("/ops/volunteers", response_class=HTMLResponse)
    async def volunteers(request: Request) -> Response:
        return await console.volunteers(request)

    @router.get("/ops/volunteers/{volunteer_id}/certificate.pdf")
    async def certificate(request: Request, volunteer_id: str) -> Response:
        return await console.certificate(request, volunteer_id)

    @router.get("/ops/pairings", response_class=HTMLResponse)
    async def pairings(request: Request) -> Response:
        return await console.pairings(request)

    @router.post("/ops/pairings", response_class=HTMLResponse)
    async def pair(request: Request) -> Response:
        return await console.pair(request, ending=False)

    @router.post("/ops/pairings/end", response_class=HTMLResponse)
    async def unpair(request: Request) -> Response:
        return await console.pair(request, ending=True)

    router.include_router(ops_reports.routes(ops_reports.Reports(console)))
    return router
