"""Open311 GeoReport v2 for other civic systems (a district's 12345 hotline, a city's complaint platform):
the service menu, a request made through intake.submit, and the requests' states, as JSON or XML.

Each client holds an api_key (LINLI_OPEN311_KEYS: `api_key<TAB>client name<TAB>district`). The web relays its
calls as an operator account of that district (LINLI_OPEN311_ACCOUNTS: `user<TAB>password`), signed in like
anyone at the console; the intake service checks that account's token on every call, as it checks everyone's."""

import asyncio
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from contracts import API
from linli.client import CallFailed
from services.web import georeport
from services.web.gateway import Gateway, Unavailable
from services.web.georeport import (ApiClient, GeoCreated, GeoError, GeoRequest, GeoService, GeoServiceDefinition,
                                    Refused)
from services.web.pages import Pages
from services.web.texts import Words

BASE = "/open311/v2"
# A token is used until this long before it expires, then the account signs in again.
RENEW_BEFORE = 120.0
# How a service's refusal of a submitted request reads to the client: HTTP status and the text's key.
REFUSALS = {"unknown_service": 400, "unknown_place": 400, "invalid_request": 400, "unknown_need": 400,
            "idempotency_key_reused": 400, "forbidden": 403, "not_found": 404}


class TextFile:
    """A settings file read again whenever it changes, so a new key or account needs no restart."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.stamp: float | None = None
        self.text = ""

    def read(self) -> str:
        if self.path is None:
            return ""
        try:
            stamp = self.path.stat().st_mtime
        except OSError:
            return ""
        if stamp != self.stamp:
            self.text, self.stamp = self.path.read_text(encoding="utf-8"), stamp
        return self.text


class NotConfigured(Exception):
    """No account of the district to relay as: the server's settings lack it (see LINLI_OPEN311_ACCOUNTS)."""


class Accounts:
    """The operator account of each district the web relays Open311 calls as, signed in when first needed."""

    def __init__(self, path: str, gateway: Gateway) -> None:
        self.file = TextFile(path)
        self.gateway = gateway
        self.tokens: dict[str, tuple[str, float]] = {}
        self.lock = asyncio.Lock()

    async def token(self, district: str) -> str:
        async with self.lock:  # a burst of calls signs in once
            held = self.tokens.get(district) or self.tokens.get("*")  # an administrator's acts in every district
            if held and held[1] - RENEW_BEFORE > time.time():
                return held[0]
            for user, password in georeport.parse_accounts(self.file.read()):
                try:
                    signed = await self.gateway.call(API.IDENTITY_LOGIN, {"user": user, "password": password})
                except CallFailed:
                    continue  # a retired account: the next line may hold its successor
                expires = datetime.fromisoformat(str(signed["expires_at"])).timestamp()
                self.tokens[str(signed["district"])] = (str(signed["token"]), expires)
                if signed["district"] in (district, "*"):
                    return str(signed["token"])
            raise NotConfigured(district)

    def forget(self, district: str) -> None:
        self.tokens.pop(district, None)
        self.tokens.pop("*", None)


class Open311:
    def __init__(self, pages: Pages, keys_path: str, accounts_path: str) -> None:
        self.pages = pages
        self.gateway = pages.gateway
        self.keys = TextFile(keys_path)
        self.accounts = Accounts(accounts_path, pages.gateway)
        self.directory = pages.directory

    def client(self, api_key: str, words: Words, jurisdiction: str = "") -> ApiClient:
        if not api_key:
            raise Refused(403, words("open311.api_key_missing"))
        found = georeport.parse_keys(self.keys.read()).get(api_key)
        if found is None:
            raise Refused(403, words("open311.api_key_unknown"))
        if jurisdiction and jurisdiction != found.district:
            raise Refused(400, words("open311.other_jurisdiction", district=found.district))
        return found

    async def grid_places(self, district: str, words: Words) -> dict[str, str]:
        """Each grid of the district, by id, named as "community grid" in the client's language."""
        place = await self.directory.district(district)  # {} for a district intake does not know (a key's typo)
        communities = {c["id"]: words.name(c) for c in place.get("communities", [])}
        joiner = " " if words.language == "en" else ""
        return {g["id"]: joiner.join(n for n in (communities.get(g.get("community", ""), ""), words.name(g)) if n)
                for g in place.get("grids", [])}

    async def service_names(self, words: Words) -> dict[str, str]:
        return {s.service_code: s.service_name for s in georeport.services(await self.directory.menu(), words)}

    async def relay(self, district: str, subject: str, payload: dict[str, Any],
                    timeout: float | None = None) -> dict[str, Any]:
        """The call made as the district's account; an expired or revoked token is renewed once."""
        for attempt in range(2):
            token = await self.accounts.token(district)
            try:
                return await self.gateway.call(subject, payload, token, timeout)
            except CallFailed as exc:
                if exc.error.get("code") != "unauthenticated" or attempt:
                    raise
                self.accounts.forget(district)
        raise AssertionError("unreachable")

    async def services(self, words: Words) -> list[GeoService]:
        return georeport.services(await self.directory.menu(), words)

    async def definition(self, code: str, words: Words) -> GeoServiceDefinition:
        return georeport.definition(await self.directory.menu(), code, words)

    async def submit(self, form: Mapping[str, str], token: str, words: Words) -> list[GeoCreated]:
        """Validate (the key, then every field), submit once however often it is sent, and say the code."""
        client = self.client(form.get("api_key", ""), words)
        grids = await self.grid_places(client.district, words)
        call = georeport.submit_call(form, client, grids, await self.service_names(words), token, words)
        try:
            wait = self.pages.settings.submit_timeout
            made = await self.relay(client.district, API.INTAKE_SUBMIT, call.model_dump(mode="json"), wait)
            status = await self.gateway.call(API.INTAKE_STATUS, {"request_id": made["request_id"]}, timeout=wait)
        except CallFailed as exc:
            code = str(exc.error.get("code", ""))
            text = words("open311.reused") if code == "idempotency_key_reused" else words(
                "open311.refused", message=exc.error.get("message", code))
            raise Refused(REFUSALS.get(code, 400), text) from None
        return [GeoCreated(service_request_id=made["request_id"],
                           service_notice=words("open311.notice", code=status.get("code", "")))]

    async def request(self, api_key: str, jurisdiction: str, request_id: str, words: Words) -> list[GeoRequest]:
        client = self.client(api_key, words, jurisdiction)
        found = await self.one(client, request_id, words)
        if found is None:
            raise Refused(404, words("open311.not_found"))
        return [found]

    async def one(self, client: ApiClient, request_id: str, words: Words) -> GeoRequest | None:
        """The request when it is in the client's district; another district's is as unknown as a made-up id."""
        try:
            status = await self.gateway.call(API.INTAKE_STATUS, {"request_id": request_id[:80]})
        except CallFailed:
            return None
        if status["district"] != client.district:
            return None
        grids = await self.grid_places(client.district, words)
        return georeport.from_status(status, await self.service_names(words), grids.get(status["grid"], ""), words)

    async def requests(self, api_key: str, query: Mapping[str, str], words: Words) -> list[GeoRequest]:
        client = self.client(api_key, words, query.get("jurisdiction_id", ""))
        question = georeport.list_question(query, datetime.now(timezone.utc), words)
        if question.ids:
            found = await asyncio.gather(*(self.one(client, i, words) for i in question.ids))
            return [r for r in found if r is not None]
        names = await self.service_names(words)
        listed: list[GeoRequest] = []
        cursor = ""
        while len(listed) < georeport.MOST_REQUESTS:
            page = await self.relay(client.district, API.INTAKE_REQUESTS, {
                "district": client.district, "state": "any", "limit": 500, "cursor": cursor,
                "since": question.since.isoformat() if question.since else None,
                "until": question.until.isoformat() if question.until else None})
            listed += [r for r in (georeport.from_summary(s, names, words) for s in page["items"]) if question.wants(r)]
            if not (cursor := page.get("next_cursor", "")):
                break
        return listed[:georeport.MOST_REQUESTS]


class XMLResponse(Response):
    media_type = "text/xml"


@dataclass(frozen=True)
class Format:
    """GeoReport's two formats, chosen by the resource's extension: the same documents as JSON or as XML."""

    name: str

    def render(self, documents: Any, root: str, item: str | None, status_code: int = 200) -> Response:
        if self.name == "json":
            return JSONResponse(documents, status_code=status_code)
        return XMLResponse(georeport.to_xml(root, item, documents), status_code=status_code)

    def answer(self, found: list[Any] | BaseModel, root: str, item: str | None) -> Response:
        documents = found.model_dump(mode="json") if isinstance(found, BaseModel) else [
            one.model_dump(mode="json") for one in found]
        return self.render(documents, root, item)

    def refused(self, status_code: int, errors: list[GeoError]) -> Response:
        return self.render([e.model_dump(mode="json") for e in errors], "errors", "error", status_code)

    def documented(self, model: Any, *codes: int) -> dict[str, Any]:
        """The route's answers as the OpenAPI document gives them: the model (JSON) or a string (XML), and
        the errors array for each status it may refuse with."""
        if self.name == "json":
            return {"response_model": model, "responses": {
                code: {"model": list[GeoError], "description": "GeoReport errors"} for code in (*codes, 503)}}
        xml = {"content": {"text/xml": {"schema": {"type": "string"}}}}
        return {"response_model": None, "response_class": XMLResponse, "responses": {
            code: {"description": "GeoReport errors: <errors><error><code/><description/></error></errors>", **xml}
            for code in (*codes, 503)}}


FORMATS = (Format("json"), Format("xml"))


async def guarded(words: Words, fmt: Format, work: Awaitable[list[Any] | BaseModel], root: str,
                  item: str | None) -> Response:
    """The answer, or GeoReport's errors: 400 bad input, 403 no key, 404 unknown, 503 nobody answered."""
    try:
        return fmt.answer(await work, root, item)
    except Refused as exc:
        return fmt.refused(exc.status, exc.errors)
    except CallFailed as exc:  # a relayed call refused: the account's district or rights do not fit the key's
        code = str(exc.error.get("code", ""))
        status = REFUSALS.get(code, 400)
        return fmt.refused(status, [GeoError(code=status, description=words(
            "open311.refused", message=exc.error.get("message", code)))])
    except NotConfigured:
        return fmt.refused(503, [GeoError(code=503, description=words("open311.not_configured"))])
    except Unavailable:
        return fmt.refused(503, [GeoError(code=503, description=words("open311.busy"))])


def routes(open311: Open311) -> APIRouter:
    router = APIRouter(prefix=BASE, tags=["Open311 GeoReport v2"])
    words = open311.pages.words

    def bind(fmt: Format) -> None:
        @router.get(f"/services.{fmt.name}", **fmt.documented(list[GeoService]))
        async def services(request: Request, jurisdiction_id: str = Query("", description="The district id.")
                           ) -> Response:
            """Every service a request can be made for: the service menu's items."""
            return await guarded(words(request), fmt, open311.services(words(request)), "services", "service")

        @router.get("/services/{service_code}." + fmt.name, **fmt.documented(GeoServiceDefinition, 404))
        async def service_definition(request: Request, service_code: str,
                                     jurisdiction_id: str = Query("", description="The district id.")) -> Response:
            """A service's definition; no service asks for attributes, so the list is empty."""
            asked = open311.definition(service_code, words(request))
            return await guarded(words(request), fmt, asked, "service_definition", None)

        @router.post(f"/requests.{fmt.name}", **fmt.documented(list[GeoCreated], 400, 403))
        async def create(
            request: Request,
            api_key: str = Form("", description="The client's key (also accepted in the query)."),
            service_code: str = Form("", description="A service menu item's id (GET services.json)."),
            address_id: str = Form("", description="The grid id: required, since GeoReport has no grid."),
            phone: str = Form("", description="The resident's phone: required, the volunteer calls it."),
            jurisdiction_id: str = Form("", description="The district id; the key's district when left out."),
            lat: str = Form(""), long: str = Form(""),
            address_string: str = Form("", description="Where the service is done (given only to the volunteer)."),
            first_name: str = Form(""), last_name: str = Form(""), email: str = Form(""), device_id: str = Form(""),
            account_id: str = Form(""), description: str = Form(""), media_url: str = Form(""),
            idempotency_key: str = Header("", alias="Idempotency-Key",
                                          description="The client's token for this submission: a repeat makes no "
                                          "second request. Without it, the same fields from the same client are "
                                          "the repeat."),
        ) -> Response:
            """A new request, made through intake.submit with the channel `app`."""
            form = {"api_key": api_key or request.query_params.get("api_key", ""), "service_code": service_code,
                    "address_id": address_id, "phone": phone, "jurisdiction_id": jurisdiction_id, "lat": lat,
                    "long": long, "address_string": address_string, "first_name": first_name,
                    "last_name": last_name, "email": email, "device_id": device_id, "account_id": account_id,
                    "description": description, "media_url": media_url}
            asked = open311.submit(form, idempotency_key, words(request))
            return await guarded(words(request), fmt, asked, "service_requests", "request")

        @router.get(f"/requests.{fmt.name}", **fmt.documented(list[GeoRequest], 400, 403))
        async def requests(
            request: Request, api_key: str = Query(""), jurisdiction_id: str = Query(""),
            service_request_id: str = Query("", description="Comma-separated ids; overrides every other filter."),
            service_code: str = Query("", description="Comma-separated service codes."),
            start_date: str = Query("", description="ISO 8601 with a time zone; at most 90 days before end_date."),
            end_date: str = Query(""), status: str = Query("", description="open, closed, or both comma-separated."),
        ) -> Response:
            """The district's requests made in the window (the last 90 days by default), at most 1,000."""
            query = {"service_request_id": service_request_id, "service_code": service_code,
                     "start_date": start_date, "end_date": end_date, "status": status,
                     "jurisdiction_id": jurisdiction_id}
            asked = open311.requests(api_key, query, words(request))
            return await guarded(words(request), fmt, asked, "service_requests", "request")

        @router.get("/requests/{service_request_id}." + fmt.name,
                    **fmt.documented(list[GeoRequest], 400, 403, 404))
        async def one_request(request: Request, service_request_id: str, api_key: str = Query(""),
                              jurisdiction_id: str = Query("")) -> Response:
            """One request of the key's district, as a list of one (as GeoReport gives it)."""
            asked = open311.request(api_key, jurisdiction_id, service_request_id, words(request))
            return await guarded(words(request), fmt, asked, "service_requests", "request")

    for fmt in FORMATS:
        bind(fmt)
    return router
