"""Operators sign in with their user name and password; the token the identity service signs is kept in
an HttpOnly cookie and sent with each call the pages make for them."""

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from linli.client import CallFailed
from services.web.gateway import Unavailable
from services.web.pages import SESSION_COOKIE, Pages
from services.web.sessions import Sessions, seconds_left


def safe_next(url: str, default: str = "/ops") -> str:
    """Only a path on this site: a sign-in link must not send anyone elsewhere."""
    parts = urlsplit(url)
    return url if url.startswith("/") and not url.startswith("//") and not parts.netloc else default


def routes(pages: Pages, sessions: Sessions) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/signin", response_class=HTMLResponse)
    async def form(request: Request, next: str = "/ops") -> Response:
        return pages.render(request, "signin.html", fields={"user": ""}, errors={}, error="", next=safe_next(next))

    @router.post("/signin", response_class=HTMLResponse)
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        words = pages.words(request)
        user, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
        next_url = safe_next(str(form.get("next", "/ops")))
        errors = {name: words("common.required") for name, value in (("user", user), ("password", password)) if not value}
        if errors:
            return pages.render(request, "signin.html", status_code=422, fields={"user": user}, errors=errors,
                                error="", next=next_url)
        try:
            signed = await sessions.operator(user, password)
        except CallFailed:
            return pages.render(request, "signin.html", status_code=401, fields={"user": user}, errors={},
                                error=words("signin.refused"), next=next_url)
        except Unavailable:
            return pages.busy(request, "signin.html", fields={"user": user}, errors={}, next=next_url)
        response = pages.redirect(next_url)
        pages.set_cookie(response, SESSION_COOKIE, str(signed["token"]), max_age=seconds_left(signed))
        return response

    @router.post("/signout")
    async def sign_out(request: Request) -> Response:
        response = pages.redirect("/")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return router
