"""Who people are and what the services are called: asked of intake, and remembered."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import API
from contracts.calls import Catalog
from services.common.memory import Recent
from services.notifier.config import NotifierSettings
from services.notifier.handlers import Contact, ContactKind
from services.notifier.store import NotifierStore

log = logging.getLogger("linli.notifier")

Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class Directory:
    def __init__(self, ask: Ask, store: NotifierStore, settings: NotifierSettings, clock: Callable[[], float]) -> None:
        self.ask = ask
        self.store = store
        self.settings = settings
        self.clock = clock
        self.labels: dict[str, dict[str, str]] = {}
        # Contacts just used, kept in memory a short while: one offer round asks for the same people again; after
        # that they tell whether what intake answers has changed since it was stored.
        self.recent: Recent[str, Contact] = Recent(settings.contact_memory, clock=clock)

    async def contact(self, kind: ContactKind, id: str) -> Contact | None:
        key = f"{kind}:{id}"
        if (fresh := self.recent.fresh(key)) is not None:
            return fresh
        last = self.recent.last(key)
        # Intake is asked before the stored copy is read: most contacts not in memory are new (a request's
        # resident), and the stored copy is needed only while intake does not answer.
        try:
            reply = await self.ask(API.INTAKE_CONTACT, {"kind": kind, "id": id})
        except Exception as exc:
            kept = last if last is not None else await self.store.contact(key)
            if kept is None:
                raise  # the event is redelivered later, when intake may answer
            log.warning("intake did not answer for %s, using the contact kept earlier: %r", key, exc)
            return kept
        if "error" in reply:
            if reply["error"].get("code") == "not_found":
                return None
            raise RuntimeError(f"intake refused the contact lookup for {key}: {reply['error']}")
        found = {"name": reply["name"], "phone": reply["phone"], "address": reply.get("address", "")}
        if last != found:  # written only when new here, or changed
            await self.store.save_contact(key, found, self.clock())
        return self.recent.put(key, found)

    async def sign_in_code(self, code_ref: str) -> str:
        """The code's text, which identity hands out once; "" when it was taken already (a redelivery after
        a crash): the volunteer is told to ask again."""
        reply = await self.ask(API.IDENTITY_CODE, {"code_ref": code_ref})
        if "error" in reply:
            if reply["error"].get("code") == "not_found":
                return ""
            raise RuntimeError(f"identity refused the code lookup: {reply['error']}")
        return str(reply["code"])

    async def service_names(self, lang: str) -> dict[str, str]:
        """Asked once; until intake answers, texts say "a volunteer service" and the next one asks again."""
        if not self.labels:
            try:
                catalog = Catalog.model_validate(await self.ask(API.INTAKE_CATALOG, {}))
            except Exception as exc:
                log.warning("service catalogue unavailable, texts name no service: %r", exc)
                return {}
            items = [item for category in catalog.categories for item in category.items]
            self.labels = {
                "zh": {item.id: item.name for item in items},
                "en": {item.id: item.name_en or item.name for item in items},
            }
        return self.labels.get(lang, self.labels["zh"])
