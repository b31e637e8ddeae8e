import asyncio
import faulthandler
import json
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from linli.embedded import Server, start_mongo, start_nats
from linli.permissions import authorization, ensure_credentials, url_with
from linli.system import System
from services.common.bus import settled
from services.common.config import BusSettings, inbox_prefix_for

# The places tests name, for services in this process and the processes a System starts alike.
os.environ["LINLI_PLACES"] = str(Path(__file__).with_name("samples") / "places.yaml")
os.environ.setdefault("LINLI_AUTH", "off")  # the tests of authorization itself ask for `required`


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Shortly before pytest-timeout stops a stuck test, print what its coroutines are waiting on."""
    limit = float(item.config.getini("timeout") or 0)
    watchdog = threading.Timer(max(limit - 30, limit / 2), report_stuck, args=(item,)) if limit else None
    if watchdog:
        watchdog.daemon = True
        watchdog.start()
    try:
        return (yield)
    finally:
        if watchdog:
            watchdog.cancel()


def report_stuck(item: pytest.Item) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture:
        capture.suspend_global_capture(in_=True)
    try:
        out = sys.stderr
        print(f"\n{item.nodeid} is still running; its asyncio tasks and threads:", file=out)
        # Python 3.11 keeps every task in _all_tasks; 3.12 and later in _scheduled_tasks.
        tasks = getattr(asyncio.tasks, "_all_tasks", None) or getattr(asyncio.tasks, "_scheduled_tasks", ())
        for task in list(tasks):
            if not task.done():
                print(f"--- {task!r}", file=out)
                print_awaits(task.get_coro(), out)
        faulthandler.dump_traceback(out)
        out.flush()
    finally:
        if capture:
            capture.resume_global_capture()


def print_awaits(awaitable: Any, out: Any) -> None:
    """Each coroutine the task waits in, outermost first, down to what it waits for."""
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            print(f"    waiting for {awaitable!r}", file=out)
            return
        print(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}", file=out)
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mongo(tmp_path_factory.mktemp("mongo"))
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Server]:
    # A fresh server per test: durable consumers and stream contents never leak between tests.
    server = start_nats(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def settings(nats_server: Server, mongo_server: Server) -> BusSettings:
    return BusSettings(
        nats_url=nats_server.url,
        mongo_url=mongo_server.url,
        db_prefix=f"t{uuid.uuid4().hex[:10]}",
        retry_base_delay=0.1,
        outbox_relay_interval=0.2,
        max_deliver=5,
        ack_wait=5,
    )


class Bus:
    """What a kiosk or a district system sees: calls on linli.api.*, events on linli.evt.*."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def watch(self) -> None:
        async def collect(msg: Any) -> None:
            async with self._changed:
                self.events.append(json.loads(msg.data))
                self._changed.notify_all()

        await self.nc.subscribe("linli.evt.>", cb=collect)
        await settled(self.nc)

    async def call(self, subject: str, payload: dict[str, Any] | bytes, timeout: float = 10.0) -> dict[str, Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload, default=str).encode()
        reply = await self.nc.request(subject, data, timeout=timeout)
        result: dict[str, Any] = json.loads(reply.data)
        return result

    def of_type(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == f"linli.{event_type}" and all(e["data"].get(k) == v for k, v in data.items())
        ]

    async def wait_for(
        self, event_type: str, timeout: float = 15.0, count: int = 1, **data: Any
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]]:
            async with self._changed:
                while len(found := self.of_type(event_type, **data)) < count:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            seen = [(e["type"], e["data"]) for e in self.events[-20:]]
            raise AssertionError(f"no {count}x {event_type} {data} within {timeout}s; last events: {seen}") from None


@asynccontextmanager
async def watching(url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(url)
    watcher = Bus(nc)
    await watcher.watch()
    yield watcher
    await nc.close()


@pytest.fixture
async def bus(nats_server: Server) -> AsyncIterator[Bus]:
    async with watching(nats_server.url) as watcher:
        yield watcher


@pytest.fixture
async def client(system: System) -> AsyncIterator[Bus]:
    """A kiosk's view of the `system` fixture that a whole-system test module starts."""
    async with watching(system.nats_url) as watcher:
        yield watcher


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async or sync check until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def stored_messages(nc: NATS, stream: str = "LINLI") -> list[Any]:
    """The messages a stream keeps, oldest first; none while it is empty (its first_seq is 0 then, and
    asking for message 0 is a bad request)."""
    from nats.js.errors import NotFoundError

    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            found.append(await js.get_msg(stream, seq))
        except NotFoundError:  # deleted, or gone past the stream's limits
            continue
    return found


async def stored_events(nc: NATS, event_type: str) -> list[dict[str, Any]]:
    """The events JetStream actually kept (after de-duplication), oldest first."""
    return [json.loads(msg.data or b"{}") for msg in await stored_messages(nc)
            if msg.subject.startswith(f"linli.evt.{event_type}.")]


class Signed:
    """A connection signed in as one user of linli/permissions.py, keeping what the server refused it."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.nc = NATS()
        self.refused: list[str] = []

    async def connect(self, url: str) -> "Signed":
        async def record(exc: Exception) -> None:
            self.refused.append(str(exc))

        await self.nc.connect(url, error_cb=record, inbox_prefix=inbox_prefix_for(self.user),
                              max_reconnect_attempts=1, connect_timeout=3)
        return self

    async def was_refused(self, what: str, subject: str) -> str:
        """Waits for the server's permissions violation for `what` ("publish", "subscription") to `subject`."""
        wanted = f'permissions violation for {what} to "{subject}"'.lower()  # as nats-py reports it
        await settled(self.nc)
        try:
            found = await eventually(lambda: next((r for r in self.refused if wanted in r.lower()), None), timeout=5)
            return str(found)
        except AssertionError:
            raise AssertionError(f"{self.user}: no {wanted}; the server refused {self.refused}") from None


class SecureBus:
    """A nats-server that admits only the users of linli/permissions.py, as `linli up` starts it."""

    def __init__(self, server: Server, passwords: dict[str, str]) -> None:
        self.server = server
        self.passwords = passwords
        self.connections: list[Signed] = []

    def url(self, user: str) -> str:
        return url_with(self.server.url, user, self.passwords[user])

    async def sign_in(self, user: str) -> Signed:
        signed = await Signed(user).connect(self.url(user))
        self.connections.append(signed)
        return signed

    async def close(self) -> None:
        for signed in self.connections:
            await signed.nc.close()


@pytest.fixture
async def secure_bus(tmp_path: Path) -> AsyncIterator[SecureBus]:
    passwords = ensure_credentials(tmp_path)
    server = start_nats(tmp_path, authorization=authorization(passwords))
    bus = SecureBus(server, passwords)
    yield bus
    await bus.close()
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for the pages of one test module (tests/browser.py says how)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()
