"""Wiring only: the HTTP server of every page, over the gateway to the bus. Each role's pages live in a
module of their own (kiosk, resident, signin...), with their dependencies passed in."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from services.web import kiosk, open311, ops, resident, signin, volunteer
from services.web.config import WebSettings
from services.web.gateway import Gateway
from services.web.pages import Pages
from services.web.sessions import Sessions


def build(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    gateway = Gateway(settings.bus.nats_url, settings.call_timeout)
    pages = Pages(settings, gateway)
    sessions = Sessions(gateway)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.stop()

    app = FastAPI(title="Linli web", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.mount("/static", StaticFiles(directory=settings.static), name="static")
    app.include_router(kiosk.routes(kiosk.Kiosk(pages, sessions)))
    app.include_router(resident.routes(resident.Resident(pages)))
    app.include_router(signin.routes(pages, sessions))
    app.include_router(volunteer.routes(volunteer.Volunteer(pages, sessions)))
    app.include_router(ops.routes(ops.Console(pages, sessions)))
    app.include_router(open311.routes(open311.Open311(pages, settings.open311_keys, settings.open311_accounts)))

    @app.middleware("http")
    async def language(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        pages.remember_language(request, response)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request) -> Response:
        return pages.render(request, "home.html")

    @app.get("/healthz", include_in_schema=False)
    async def health() -> Response:
        return JSONResponse({"ok": gateway.connected}, status_code=200 if gateway.connected else 503)

    return app
