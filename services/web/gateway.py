"""The web's one door to the rest of the system: calls on linli.api.* carrying the signed-in person's token,
and the events the live pages show. It never reads another service's database."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats.errors

from linli.client import CallFailed, Client
from linli.permissions import WEB_FOLLOWS as LIVE_SUBJECTS
from services.common.bus import settled

log = logging.getLogger("linli.web")

# A page that stops reading loses its oldest news, never the server's memory.
LISTENER_BACKLOG = 500


class Unavailable(Exception):
    """Nothing answered the call in time: the page says so and nothing was changed by this call."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"{subject}: no answer")
        self.subject = subject


class Gateway:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._client: Client | None = None

    async def start(self) -> None:
        """Connects (waiting for a server that restarts, for as long as the web runs) and follows the events."""
        self._client = await Client.connect(self.url, reconnect=True, token="")
        for subject in LIVE_SUBJECTS:
            await self._client.nc.subscribe(subject, cb=self._deliver)
        await settled(self._client.nc)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise Unavailable("the bus")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.nc.is_connected

    async def call(self, subject: str, payload: dict[str, Any], token: str = "",
                   timeout: float | None = None) -> dict[str, Any]:
        """The reply, or CallFailed with the service's error, or Unavailable when nobody answered."""
        try:
            return await self.client.call(subject, payload, timeout=timeout or self.timeout, token=token)
        except CallFailed:
            raise
        except (Unavailable, nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
                asyncio.TimeoutError) as exc:
            log.warning("no answer on %s: %r", subject, exc)
            raise Unavailable(subject) from exc

    async def _deliver(self, msg: Any) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError:
            return
        for queue in list(self.listeners):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    @asynccontextmanager
    async def listen(self) -> AsyncIterator["asyncio.Queue[dict[str, Any]]"]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(LISTENER_BACKLOG)
        self.listeners.add(queue)
        try:
            yield queue
        finally:
            self.listeners.discard(queue)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
