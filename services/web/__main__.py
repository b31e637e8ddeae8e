"""`python -m services.web`: the pages on LINLI_WEB_HOST:LINLI_WEB_PORT, until SIGTERM or Ctrl-C."""

import asyncio
import os
from pathlib import Path

import uvicorn

from services.common.runtime import configure_logging, stop_when_orphaned
from services.web.app import build
from services.web.config import WebSettings


async def main() -> None:
    settings = WebSettings()
    server = uvicorn.Server(uvicorn.Config(build(settings), host=settings.host, port=settings.port,
                                           log_level="warning", access_log=False, lifespan="on"))
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
    if parent := os.environ.get("LINLI_PARENT_PID"):
        stopping = asyncio.Event()
        watcher = asyncio.create_task(stop_when_orphaned(int(parent), stopping))
        done, _ = await asyncio.wait([serving, asyncio.create_task(stopping.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        if serving not in done:
            server.should_exit = True
        watcher.cancel()
    await serving


configure_logging("web")
asyncio.run(main())
