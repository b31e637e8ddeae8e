"""`python -m services.web`: the pages on LINLI_WEB_HOST:LINLI_WEB_PORT, until SIGTERM or Ctrl-C."""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from services.common.runtime import configure_logging, stop_when_orphaned
from services.web.app import build
from services.web.config import WebSettings


class Server(uvicorn.Server):
    """Stops on SIGTERM like every other process here: a graceful shutdown, then exit code 0 (uvicorn's own
    handler would raise the signal again once it has finished)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main() -> None:
    settings = WebSettings()
    server = Server(uvicorn.Config(build(settings), host=settings.host, port=settings.port, log_level="warning",
                                   access_log=False, lifespan="on"))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if parent := os.environ.get("LINLI_PARENT_PID"):
        orphan_watch = asyncio.create_task(stop_when_orphaned(int(parent), stopping))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        # Port 0 asks the system for a free one: say which it gave, then that we are ready.
        port = server.servers[0].sockets[0].getsockname()[1]
        if where := os.environ.get("LINLI_WEB_URL_FILE"):
            Path(where).write_text(f"http://{settings.host}:{port}\n")
        if ready := os.environ.get("LINLI_READY_FILE"):
            Path(ready).write_text(str(os.getpid()))
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait([serving, stop], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stop.cancel()
    if parent:
        orphan_watch.cancel()
    logging.getLogger("linli").info("web stopped")


configure_logging("web")
asyncio.run(main())
