import asyncio
import json
import logging
import os
import signal
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from services.common import deadletters
from services.common.auth import Actor
from services.common.bus import Inbox, Outbox, api_call, make_broker, on_call, settled
from services.common.config import BusSettings
from services.common.gate import AuditQuery, Gate

log = logging.getLogger("linli")


def health_subject(service: str, instance: str | None = None) -> str:
    """Answered by one process of the service, or, with an instance, by that process alone."""
    return f"linli.api.{service}.health" + (f".{instance}" if instance else "")


def instance_name() -> str:
    """What tells this process from the service's other replicas: the container's host name under
    compose, the process key under `linli up`, else the pid."""
    return os.environ.get("LINLI_INSTANCE") or os.environ.get("HOSTNAME") or str(os.getpid())


class CommandCounter(monitoring.CommandListener):
    """Counts the database commands a client sends, by command and collection ("find requests"), and the
    documents its cursors hand back, by collection.

    Installed in a service when LINLI_COMMAND_COUNTS names a directory: the command counts are written
    there as <service>-<pid>.json twice a second and when the service stops, for the benchmark to read."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.documents: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.counts[f"{event.command_name} {target}" if isinstance(target, str) else event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if cursor := (event.reply.get("cursor") if isinstance(event.reply, dict) else None):
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.documents[str(cursor.get("ns", "")).rpartition(".")[2]] += len(batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def clear(self) -> None:
        self.counts.clear()
        self.documents.clear()

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
    gate: Gate
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

        async def identity_key() -> tuple[str, str]:
            reply = await broker.request(b"{}", "linli.api.identity.public_key", timeout=5.0)
            key = json.loads(reply.body)
            return key["key_id"], key["public_key"]

        gate = Gate(name, settings, db, identity_key)
        service = cls(name, settings, broker, mongo, db, Outbox(db, broker), Inbox(db), gate)
        deadletters.wire(broker, db, name, gate)

        @on_call(broker, f"linli.api.{name}.audit", name)
        @api_call(AuditQuery, gate)
        async def audit(call: AuditQuery, actor: Actor) -> dict[str, Any]:
            return await gate.audit(call, actor)

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
        await self._answer_health_calls()
        # The subscriptions are sent but perhaps not yet read by the server; once it has read them, a
        # call made from anywhere finds its responder.
        await settled(self.broker.connection)
        self._tasks = [asyncio.create_task(self._guard(loop)) for loop in self.loops]
        log.info("%s started (pid %d)", self.name, os.getpid())
        if ready := os.environ.get("LINLI_READY_FILE"):
            Path(ready).write_text(str(os.getpid()))  # whoever started us can tell, whatever the log level

    async def _answer_health_calls(self) -> None:
        """A process is healthy when it answers a call over the same connection its work arrives on."""
        instance = instance_name()
        answer = json.dumps({
            "service": self.name, "instance": instance, "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
        }).encode()

        async def respond(msg: Any) -> None:
            await msg.respond(answer)

        connection = self.broker.connection
        await connection.subscribe(health_subject(self.name), queue=self.name, cb=respond)
        await connection.subscribe(health_subject(self.name, instance), cb=respond)

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
        if parent := os.environ.get("LINLI_PARENT_PID"):
            self.loops.append(lambda: stop_when_orphaned(int(parent), stopping))
        await self.start()
        await stopping.wait()
        await self.stop()


async def stop_when_orphaned(parent: int, stopping: asyncio.Event, every: float = 1.0) -> None:
    """A process started by `linli up` stops when `linli up` has died without stopping it (SIGKILL, a
    closed pipe): left running, it would hold its data and connections while the next `linli up` starts
    another system on the same folder."""
    while os.getppid() == parent:
        await asyncio.sleep(every)
    log.warning("the process that started this one (pid %d) has gone; stopping", parent)
    stopping.set()


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
    logging.getLogger("faststream.access.nats").addFilter(quiet_empty_fetches)


def quiet_empty_fetches(record: logging.LogRecord) -> bool:
    """Drops FastStream's "Task-N raised an exception, retrying" report of a pull that found nothing.

    nats-py (2.16) ends a fetch that got no message before its deadline with a bare asyncio.TimeoutError
    (nats/js/client.py, _fetch_n), where it used to raise nats.errors.TimeoutError; FastStream 0.7's pull
    loop suppresses only the latter, so its task supervisor logs the timeout as an ERROR with a traceback
    and starts the same loop again at once. Nothing was fetched, so nothing is lost or delivered late:
    an idle consumer is not an error. Only that exact case is dropped; any other failure of the loop
    is still reported."""
    if record.levelno < logging.ERROR or not record.exc_info or "raised an exception, retrying" not in str(record.msg):
        return True
    exc = record.exc_info[1]
    if type(exc) is not TimeoutError or exc.__traceback__ is None:
        return True
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return not (last.filename.endswith(os.path.join("nats", "js", "client.py")) and last.name.startswith("_fetch"))
