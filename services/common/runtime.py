import asyncio
import json
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from services.common import deadletters
from services.common.bus import Inbox, Outbox, make_broker
from services.common.config import BusSettings

log = logging.getLogger("linli")


class CommandCounter(monitoring.CommandListener):
    """Counts the database commands this process sends, by command and collection ("find requests").

    Installed when LINLI_COMMAND_COUNTS names a directory: the counts are written there as
    <service>-<pid>.json twice a second and when the service stops, for the benchmark to read."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.counts[f"{event.command_name} {target}" if isinstance(target, str) else event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def write(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(dict(self.counts), sort_keys=True))
        temporary.replace(path)

    async def write_forever(self, path: Path) -> None:
        while True:
            self.write(path)
            await asyncio.sleep(0.5)


@dataclass
class Service:
    """One running service: its broker, its own database, its start-up steps and background loops."""

    name: str
    settings: BusSettings
    broker: NatsBroker
    mongo: AsyncMongoClient[dict[str, Any]]
    db: AsyncDatabase[dict[str, Any]]
    outbox: Outbox
    inbox: Inbox
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    loops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    counter: CommandCounter | None = None
    counts_file: Path | None = None

    @classmethod
    def create(cls, name: str, settings: BusSettings) -> "Service":
        broker = make_broker(settings, name)
        counts_dir = os.environ.get("LINLI_COMMAND_COUNTS")
        counter = CommandCounter() if counts_dir else None
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=10_000, tz_aware=True,
            event_listeners=[counter] if counter else [],
        )
        db = mongo[settings.database(name)]
        service = cls(name, settings, broker, mongo, db, Outbox(db, broker), Inbox(db))
        deadletters.wire(broker, db, name)
        service.on_start.append(service.outbox.ensure_indexes)
        service.loops.append(lambda: service.outbox.relay_forever(settings.outbox_relay_interval))
        if counter and counts_dir:
            counts_file = Path(counts_dir) / f"{name}-{os.getpid()}.json"
            service.counter, service.counts_file = counter, counts_file
            service.loops.append(lambda: counter.write_forever(counts_file))
        return service

    async def start(self) -> None:
        for step in self.on_start:
            await step()
        await self.broker.start()
        # The subscriptions are sent but perhaps not yet read by the server; once it has answered a ping
        # sent after them, it has them all, and a call made from anywhere finds its responder.
        await self.broker.connection.flush()
        self._tasks = [asyncio.create_task(self._guard(loop)) for loop in self.loops]
        log.info("%s started (pid %d)", self.name, os.getpid())
        if ready := os.environ.get("LINLI_READY_FILE"):
            Path(ready).write_text(str(os.getpid()))  # whoever started us can tell, whatever the log level

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s background loop failed; restarting it in 1 s", self.name)
                await asyncio.sleep(1)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self._stop_broker()
        try:
            await asyncio.wait_for(self.outbox.forget_published(), self.settings.stop_timeout)
        except Exception as exc:  # the relay of the next start publishes them again, under the same ids
            log.warning("%s: could not delete the published outbox entries: %r", self.name, exc)
        if self.counter and self.counts_file:
            self.counter.write(self.counts_file)
        await self._close_database()
        log.info("%s stopped", self.name)

    async def _close_database(self) -> None:
        """Closing tells the database to end this client's sessions; one that does not answer is left."""
        try:
            await asyncio.wait_for(self.mongo.close(), self.settings.stop_timeout)
        except TimeoutError:
            log.warning("%s: the database did not answer while its connections closed", self.name)

    async def _stop_broker(self) -> None:
        """Drains the NATS connection, within a time limit; a server that has gone away cannot be
        drained, so then the connection is closed instead and stops trying to reconnect."""
        connection = self.broker.connection
        try:
            await asyncio.wait_for(self.broker.stop(), self.settings.stop_timeout)
        except (TimeoutError, NatsError) as exc:
            log.warning("%s: could not drain the NATS connection (%s); closing it", self.name, type(exc).__name__)
            try:
                await asyncio.wait_for(connection.close(), self.settings.stop_timeout)
            except (TimeoutError, NatsError, OSError):  # a socket already broken may refuse the last flush
                log.warning("%s: the NATS connection did not close cleanly", self.name)

    async def run_until_signalled(self) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        await stopping.wait()
        await self.stop()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], every: float = 0.5) -> None:
    """Cancels the tasks and waits until each has ended.

    One cancellation is not always enough. A call inside the task can swallow it: in Python 3.11,
    asyncio.wait_for returns the result instead of raising when what it waited for finished at the same
    moment, and database and NATS clients call it. The task then carries on, and whoever waits for it
    waits for ever. So a task still running after `every` seconds is cancelled again."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved


def configure_logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("LINLI_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faststream").setLevel(os.environ.get("LINLI_FASTSTREAM_LOG_LEVEL", "WARNING"))
