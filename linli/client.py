"""A thin client of the public contract, as a kiosk, an operator's tool or a district system would use it."""

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contracts.subjects import STREAM
from linli.permissions import ADMIN, load_credentials, url_with
from services.common.bus import consumer_name, settled
from services.common.config import inbox_prefix_for, nats_user

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


def print_refusal(exc: "CallFailed") -> None:
    """What the system refused, on standard error: the code and the message, then the details."""
    print(f"refused: {exc}", file=sys.stderr)
    if exc.error.get("details"):
        print(json.dumps(exc.error["details"], ensure_ascii=False, indent=2), file=sys.stderr)


def redacted(url: str) -> str:
    """The URL as it may be shown: the user it signs in as, never the password."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def where(data_dir: Path = DEFAULT_DATA) -> str:
    """Where nats_url() looked, for a message that says how to point elsewhere."""
    if os.environ.get("NATS_URL"):
        return f"NATS_URL={redacted(os.environ['NATS_URL'])}"
    if (data_dir / "urls.env").exists():
        return f"{redacted(nats_url(data_dir))}, as written in {data_dir / 'urls.env'}"
    return f"{nats_url(data_dir)} (no `linli up` has written its address in {data_dir}/)"


def nats_url(data_dir: Path = DEFAULT_DATA) -> str:
    """NATS_URL as given; else the address `linli up` wrote down, signed in as the administrator whose
    password it generated in the same folder."""
    if url := os.environ.get("NATS_URL"):
        return url
    url = server_url("NATS_URL", data_dir, "nats://127.0.0.1:4222")
    if nats_user(url) is None and (password := load_credentials(data_dir).get(ADMIN)):
        return url_with(url, ADMIN, password)
    return url


def mongo_url(data_dir: Path = DEFAULT_DATA) -> str:
    return server_url("MONGO_URL", data_dir, "mongodb://127.0.0.1:27017")


async def caught_up(nc: NATS, service: str, event_type: str, timeout: float = 60.0) -> None:
    """Waits until `service` has handled every `event_type` event the stream holds so far: its durable
    consumer has nothing left to deliver and nothing delivered but unacknowledged."""
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            info = await js.consumer_info(STREAM, consumer_name(service, event_type))
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        except NotFoundError:
            pass  # the service has not started reading yet
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{service} has not handled every {event_type} event after {timeout:.0f} s")
        await asyncio.sleep(0.1)


class SignInRefused(nats.errors.Error):
    """A server answered, and would not let this user in."""


def token_file(data_dir: Path | None = None) -> Path:
    return (data_dir or Path(os.environ.get("LINLI_HOME", ".linli-data"))) / "credentials" / "token"


def saved_token() -> str:
    """LINLI_TOKEN if set, else the token `linli login` saved, else none."""
    if token := os.environ.get("LINLI_TOKEN", "").strip():
        return token
    try:
        return token_file().read_text().strip()
    except OSError:
        return ""


class Client:
    def __init__(self, nc: NATS, token: str = "") -> None:
        self.nc = nc
        self.token = token  # sent with every call as `Authorization: Bearer <token>`

    @classmethod
    async def connect(cls, url: str, reconnect: bool = False, token: str | None = None) -> "Client":
        """A one-off command fails at once when nothing answers (nats.errors.NoServersError); a long
        running one (reconnect=True) waits for a server that restarts."""

        refused: list[Exception] = []

        async def quiet(exc: Exception) -> None:
            # the caller reports a server it cannot reach, in one line; nats-py would print each try
            if "authorization violation" in str(exc).lower():
                refused.append(exc)

        # nats-py counts attempts only above zero: with 0, -1 or allow_reconnect=False, a first connection
        # that fails is tried again for ever. So the first one gets a single retry, and a long running
        # client is told to reconnect without end only once it has found a server.
        try:
            nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1, reconnect_time_wait=0.2,
                                    error_cb=quiet, inbox_prefix=inbox_prefix_for(nats_user(url)))
        except nats.errors.NoServersError:
            if refused:
                raise SignInRefused(f"the NATS server refused {redacted(url)}: no such user, or the wrong "
                                    "password") from None
            raise
        if reconnect:
            nc.options["max_reconnect_attempts"] = -1
            nc.options["reconnect_time_wait"] = 0.5
        return cls(nc, saved_token() if token is None else token)

    async def call(self, subject: str, payload: dict[str, Any], timeout: float = 10.0,
                   token: str | None = None) -> dict[str, Any]:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await self.nc.request(subject, json.dumps(payload, default=str).encode(), timeout=timeout,
                                      headers=headers)
        result: dict[str, Any] = json.loads(reply.data)
        if "error" in result:
            raise CallFailed(subject, result["error"])
        return result

    async def on_events(self, handle: Callable[[dict[str, Any]], Awaitable[None]], subject: str = "linli.evt.>") -> None:
        async def deliver(msg: Any) -> None:
            await handle(json.loads(msg.data))

        await self.nc.subscribe(subject, cb=deliver)
        await settled(self.nc)

    async def close(self) -> None:
        await self.nc.drain()
