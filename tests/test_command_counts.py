"""A service asked to (LINLI_COMMAND_COUNTS) counts the database commands it sends and writes them down for the
benchmark; its published outbox entries are deleted together when it stops."""

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import Envelope, new_event
from contracts.events import RequestCancelled
from services.common.bus import on_event
from services.common.config import BusSettings
from services.common.runtime import Service

pytestmark = pytest.mark.service


def cancelled(request_id: str) -> Envelope[Any]:
    return new_event(RequestCancelled(request_id=request_id, reason="ok"), source="linli/test", district="beibei",
                     subject=request_id, correlationid=request_id)


async def test_a_counting_service_writes_its_commands_by_collection_when_it_stops(
    settings: BusSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINLI_COMMAND_COUNTS", str(tmp_path))
    service = Service.create("counted", settings)
    await service.start()
    await service.db["things"].insert_one({"_id": "a"})
    await service.db["things"].find_one({"_id": "a"})
    await service.db["things"].find_one({"_id": "b"})
    await service.stop()

    written = json.loads((tmp_path / f"counted-{os.getpid()}.json").read_text())
    assert written["insert things"] == 1 and written["find things"] == 2


async def test_published_outbox_entries_are_gone_once_the_service_stops(settings: BusSettings) -> None:
    # The relay passes once at the start (perhaps while the events below are sent), then not again.
    quiet = replace(settings, outbox_relay_interval=3600)
    service = Service.create("outboxed", quiet)

    @on_event(service.broker, quiet, "outboxed", "request.cancelled")  # declares the stream
    async def ignored(event: Envelope[RequestCancelled]) -> None:
        pass

    await service.start()
    await service.outbox.send([cancelled("r-1"), cancelled("r-2")])  # published; their entries go later, together
    name = service.db.name
    await service.stop()

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    assert await client[name]["outbox"].count_documents({}) == 0
    await client.close()
