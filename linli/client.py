"""A thin client of the public contract, as a kiosk, an operator's tool or a district system would use it."""

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

DEFAULT_DATA = Path(os.environ.get("LINLI_HOME", ".linli-data"))


class CallFailed(Exception):
    def __init__(self, subject: str, error: dict[str, Any]) -> None:
        super().__init__(f"{subject}: {error.get('code')}: {error.get('message')}")
        self.error = error


def server_url(name: str, data_dir: Path, default: str) -> str:
    """The variable if set, else what the running `linli up` wrote down, else the standard port."""
    if url := os.environ.get(name):
        return url
    urls = data_dir / "urls.env"
    if urls.exists():
        for line in urls.read_text().splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1]
    return default


def nats_url(data_dir: Path = DEFAULT_DATA) -> str:
    return server_url("NATS_URL", data_dir, "nats://127.0.0.1:4222")


def mongo_url(data_dir: Path = DEFAULT_DATA) -> str:
    return server_url("MONGO_URL", data_dir, "mongodb://127.0.0.1:27017")


class Client:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    @classmethod
    async def connect(cls, url: str) -> "Client":
        return cls(await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3))

    async def call(self, subject: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        reply = await self.nc.request(subject, json.dumps(payload, default=str).encode(), timeout=timeout)
        result: dict[str, Any] = json.loads(reply.data)
        if "error" in result:
            raise CallFailed(subject, result["error"])
        return result

    async def on_events(self, handle: Callable[[dict[str, Any]], Awaitable[None]], subject: str = "linli.evt.>") -> None:
        async def deliver(msg: Any) -> None:
            await handle(json.loads(msg.data))

        await self.nc.subscribe(subject, cb=deliver)
        await self.nc.flush()

    async def close(self) -> None:
        await self.nc.drain()
