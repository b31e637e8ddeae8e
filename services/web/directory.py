"""The places and the service menu every page names things by, asked of intake and kept for every page of
the process: places change with a release, so they are asked once; the menu is asked again after a minute."""

import time
from typing import Any

from contracts import API
from services.web.gateway import Gateway

MENU_FOR = 60.0


class Directory:
    def __init__(self, gateway: Gateway, menu_for: float = MENU_FOR) -> None:
        self.gateway = gateway
        self.menu_for = menu_for
        self._districts: list[dict[str, Any]] = []
        self._menu: dict[str, Any] = {}
        self._menu_at = float("-inf")

    async def districts(self) -> list[dict[str, Any]]:
        """Every district intake knows, with its streets, communities, grids and clock (CallFailed or
        Unavailable when it cannot say)."""
        if not self._districts:
            self._districts = (await self.gateway.call(API.INTAKE_PLACES, {}))["districts"]
        return self._districts

    async def district(self, district: str) -> dict[str, Any]:
        """The district's places, or {} for a district intake does not know."""
        return next((d for d in await self.districts() if d["id"] == district), {})

    async def menu(self) -> dict[str, Any]:
        if time.monotonic() - self._menu_at > self.menu_for:
            self._menu = await self.gateway.call(API.INTAKE_CATALOG, {})
            self._menu_at = time.monotonic()
        return self._menu

    async def services(self) -> dict[str, dict[str, Any]]:
        """The menu's items by id, each with the id of its category."""
        return {item["id"]: {**item, "category": category["id"]}
                for category in (await self.menu())["categories"] for item in category["items"]}
