"""What every page shares: its language, its template, the signed-in person's token, and how a refusal
or a bad field is shown in the page's own language."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from linli.client import CallFailed
from services.web.config import WebSettings
from services.web.directory import Directory
from services.web.gateway import Gateway
from services.web.texts import LANGUAGES, Words, load

LANGUAGE_COOKIE = "linli_lang"
# An operator's or a volunteer's token; a kiosk's token and, to sign in again when it expires, its credential.
SESSION_COOKIE = "linli_session"
KIOSK_COOKIE = "linli_kiosk"
DEVICE_COOKIE = "linli_device"


@dataclass
class Refusal:
    """What the page shows for a call that was refused or a form that was not right: a message per field
    where the fault is in a field, and one for the page otherwise."""

    fields: dict[str, str]
    message: str = ""


def field_of(location: tuple[Any, ...], names: Mapping[str, str]) -> str:
    dotted = ".".join(str(part) for part in location)
    return names.get(dotted, dotted.split(".")[-1] if dotted else "")


def explain_invalid(error: ValidationError, words: Words, names: Mapping[str, str] | None = None) -> Refusal:
    """Each bad field's message, in the page's language; `names` maps a model's field path (resident.phone)
    to the form field it came from (phone)."""
    fields: dict[str, str] = {}
    for problem in error.errors():
        field = field_of(tuple(problem.get("loc", ())), names or {})
        kind = problem.get("type", "")
        context = problem.get("ctx") or {}
        if kind in ("missing", "string_too_short") and context.get("min_length", 1) <= 1:
            text = words("common.required")
        elif kind == "string_too_long":
            text = words("common.too_long", n=context.get("max_length", ""))
        elif field == "phone":
            text = words("common.phone_invalid")
        else:
            text = words("common.invalid")
        fields.setdefault(field, text)
    return Refusal(fields)


def explain_refusal(exc: CallFailed, words: Words, names: Mapping[str, str] | None = None) -> Refusal:
    """A service's refusal: on the field it names when it names one, else for the whole page."""
    code = str(exc.error.get("code", ""))
    details = exc.error.get("details") or {}
    message = words(f"common.{code}") if f"common.{code}" in words.texts else str(exc.error.get("message", code))
    if code == "invalid_request" and isinstance(details, dict) and isinstance(details.get("errors"), list):
        fields = {field_of(tuple(e.get("loc", ())), names or {}): words("common.invalid") for e in details["errors"]}
        return Refusal(fields, "")
    return Refusal({}, message)


class Pages:
    def __init__(self, settings: WebSettings, gateway: Gateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.directory = Directory(gateway)
        self.templates = Jinja2Templates(directory=str(settings.templates))
        self.texts = load(settings.texts)

    def language(self, request: Request) -> str:
        asked = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE) or self.settings.language
        return asked if asked in LANGUAGES else LANGUAGES[0]

    def words(self, request: Request) -> Words:
        language = self.language(request)
        return Words(language, self.texts[language])

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        words = self.words(request)
        other = "en" if words.language == "zh" else "zh"
        response = self.templates.TemplateResponse(request, template, {
            "t": words, "lang": words.language, "other_lang": other,
            "switch_url": request.url.include_query_params(lang=other), "site": str(request.base_url).rstrip("/"),
            **context,
        }, status_code=status_code)
        return response

    def remember_language(self, request: Request, response: Response) -> None:
        """A ?lang= switch holds for the pages after it, a redirect included."""
        if (asked := request.query_params.get("lang")) in LANGUAGES:
            self.set_cookie(response, LANGUAGE_COOKIE, asked, max_age=365 * 86400)

    def busy(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        """The system did not answer: the same page again, with what was typed and a message."""
        return self.render(request, template, status_code=503, error=self.words(request)("common.busy"), **context)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.settings.secure_cookies, path="/")

    @staticmethod
    def token(request: Request, cookie: str = SESSION_COOKIE) -> str:
        return request.cookies.get(cookie, "")

    @staticmethod
    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)
