"""Who is using a page: the token in its cookie, checked with the identity service's public key, exactly as
every service checks it. The services check it again on every call; this only decides what to show."""

import time
from dataclasses import dataclass
from datetime import datetime

from contracts import API
from services.common import auth
from services.common.auth import Actor
from services.web.gateway import Gateway


@dataclass(frozen=True)
class Session:
    token: str
    actor: Actor


class Sessions:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.keys: dict[str, str] = {}

    async def public_key(self, key_id: str) -> str:
        if key_id not in self.keys:
            reply = await self.gateway.call(API.IDENTITY_PUBLIC_KEY, {})
            self.keys[auth.key_id(reply["public_key"])] = reply["public_key"]
        return self.keys.get(key_id, "")

    async def check(self, token: str, roles: tuple[str, ...] = ()) -> Session | None:
        """The session a token opens, or None when it is missing, expired, forged or of another role."""
        if not token:
            return None
        try:
            key = await self.public_key(auth.key_id_of(token))
            actor = auth.verify(key, token) if key else None
        except Exception:  # unreadable, expired or signed by a key nobody knows: sign in again
            return None
        if actor is None or (roles and actor.role not in roles and not (
                actor.role == "administrator" and set(roles) & set(auth.OPERATOR_ROLES))):
            return None
        return Session(token, actor)

    async def operator(self, user: str, password: str) -> dict[str, object]:
        return await self.gateway.call(API.IDENTITY_LOGIN, {"user": user, "password": password})

    async def device(self, device_id: str, secret: str) -> dict[str, object]:
        return await self.gateway.call(API.IDENTITY_DEVICE_LOGIN, {"device_id": device_id, "secret": secret})


def seconds_left(signed_in: dict[str, object]) -> int:
    """How long a cookie holding this token should live: as long as the token."""
    expires = datetime.fromisoformat(str(signed_in["expires_at"])).timestamp()
    return max(60, int(expires - time.time()))

