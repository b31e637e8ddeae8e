"""Who people are and what the services are called: asked of intake, and remembered."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import API
from contracts.calls import Catalog
from services.notifier.config import NotifierSettings
from services.notifier.handlers import ContactKind
from services.notifier.store import NotifierStore

log = logging.getLogger("linli.notifier")

Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Directory:
    def __init__(self, ask: Ask, store: NotifierStore, settings: NotifierSettings, clock: Callable[[], float]) -> None:
        self.ask = ask
        self.store = store
        self.settings = settings
        self.clock = clock
        self.labels: dict[str, str] = {}

    async def contact(self, kind: ContactKind, id: str) -> dict[str, str] | None:
        key = f"{kind}:{id}"
        cached = await self.store.contact(key)
        if cached and self.clock() - cached["fetched"] < self.settings.contact_max_age:
            return cached
        try:
            reply = await self.ask(API.INTAKE_CONTACT, {"kind": kind, "id": id})
        except Exception as exc:
            if cached is None:
                raise  # the event is redelivered later, when intake may answer
            log.warning("intake did not answer for %s, using the contact cached earlier: %r", key, exc)
            return cached
        if "error" in reply:
            if reply["error"].get("code") == "not_found":
                return None
            raise RuntimeError(f"intake refused the contact lookup for {key}: {reply['error']}")
        await self.store.save_contact(key, reply["name"], reply["phone"], self.clock())
        return {"name": reply["name"], "phone": reply["phone"]}

    async def service_labels(self) -> dict[str, str]:
        if not self.labels:
            try:
                catalog = Catalog.model_validate(await self.ask(API.INTAKE_CATALOG, {}))
                self.labels.update({item.id: item.name for cat in catalog.categories for item in cat.items})
            except Exception as exc:  # a readable name is a nicety; the offer goes out with the id
                log.warning("service catalogue unavailable, offers show service ids: %r", exc)
        return self.labels
