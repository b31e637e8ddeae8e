"""Who is calling: signed tokens, the actor they name, and the rules for what each role may do.

A token is a JWT signed with the identity service's Ed25519 key (EdDSA). Its claims: sub (the operator's
user name, the volunteer id or the kiosk's device id), role, district (an operator's, volunteer's or
kiosk's; "*" for an administrator of every district), grid (kiosks), exp, iat and jti (the token id).
Everything here is pure: no I/O, so each service and each test uses the same rules.
"""

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pydantic import BaseModel

from contracts import ApiError

M = TypeVar("M", bound=BaseModel)
ISSUER = "linli-identity"
OPERATOR_ROLES = ("dispatcher", "bank_clerk", "committee", "administrator")
ROLES = (*OPERATOR_ROLES, "volunteer", "kiosk", "service")
EVERY_DISTRICT = "*"


@dataclass(frozen=True)
class Actor:
    """Who made a call, as their token says; recorded with every privileged change."""

    sub: str
    role: str
    district: str
    grid: str = ""
    token_id: str = ""

    @property
    def open(self) -> bool:
        """No token was checked: LINLI_AUTH=off, where every call is allowed as before."""
        return self.role == "open"

    def record(self) -> dict[str, str]:
        return asdict(self)


OPEN = Actor(sub="open", role="open", district=EVERY_DISTRICT)


def new_private_pem() -> str:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the token signing key is not an Ed25519 private key")
    return key


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def key_id(public: str) -> str:
    der = serialization.load_pem_public_key(public.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def issue(key: Ed25519PrivateKey, key_id: str, sub: str, role: str, district: str, ttl: float,
          grid: str = "", now: float | None = None) -> tuple[str, float]:
    """A signed token and when it expires (unix seconds)."""
    issued = time.time() if now is None else now
    expires = issued + ttl
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": sub, "role": role, "district": district, "iat": int(issued), "exp": int(expires),
        "jti": uuid.uuid4().hex,
    }
    if grid:
        claims["grid"] = grid
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id}), float(int(expires))


def key_id_of(token: str) -> str:
    try:
        return str(jwt.get_unverified_header(token).get("kid", ""))
    except jwt.PyJWTError as exc:
        raise unauthenticated("the token cannot be read") from exc


def verify(public_pem: str, token: str) -> Actor:
    """The actor a token names, or `unauthenticated` when its signature, issuer, expiry or claims fail."""
    try:
        claims = jwt.decode(
            token, public_pem, algorithms=["EdDSA"], issuer=ISSUER,
            options={"require": ["exp", "sub", "jti", "iss"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthenticated("the token has expired; sign in again") from exc
    except jwt.PyJWTError as exc:
        raise unauthenticated("the token is not valid") from exc
    role, district = claims.get("role"), claims.get("district")
    if role not in ROLES or not isinstance(district, str) or not district:
        raise unauthenticated("the token names no known role and district")
    return Actor(sub=str(claims["sub"]), role=role, district=district, grid=str(claims.get("grid", "")),
                 token_id=str(claims["jti"]))


def bearer(headers: dict[str, Any] | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or "" when there is none."""
    value = str((headers or {}).get("Authorization") or (headers or {}).get("authorization") or "")
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def unauthenticated(message: str = "this call needs a token: sign in first") -> ApiError:
    return ApiError("unauthenticated", message)


def forbidden(actor: Actor, why: str) -> ApiError:
    return ApiError("forbidden", why, {"sub": actor.sub, "role": actor.role, "district": actor.district})


def covers(actor: Actor, district: str) -> bool:
    return actor.district in (EVERY_DISTRICT, district)


def allow(actor: Actor, roles: Iterable[str], district: str | None = None) -> None:
    """Refuses unless the actor has one of `roles` (an administrator has every operator role) and, when the
    call concerns a district, belongs to it."""
    if actor.open:
        return
    roles = set(roles)
    if actor.role not in roles and not (actor.role == "administrator" and roles & set(OPERATOR_ROLES)):
        raise forbidden(actor, f"a {actor.role} may not make this call; it needs {' or '.join(sorted(roles))}")
    if district is not None and not covers(actor, district):
        raise forbidden(actor, f"a {actor.role} of {actor.district} may not act in {district}")


def is_self(actor: Actor, volunteer_id: str) -> bool:
    """The volunteer themself (or anyone, with tokens off): allowed whatever the district."""
    return actor.open or (actor.role == "volunteer" and actor.sub == volunteer_id)


def allow_self_or(actor: Actor, volunteer_id: str, roles: Iterable[str], district: str | None) -> None:
    """The volunteer themself, or an operator with one of `roles` (if any) in the volunteer's district."""
    if is_self(actor, volunteer_id):
        return
    if actor.role == "volunteer" or not roles:
        raise forbidden(actor, "only the volunteer themself may make this call")
    allow(actor, roles, district)


def allow_kiosk_or(actor: Actor, district: str, grid: str, roles: Iterable[str]) -> None:
    """A kiosk of exactly this district and grid, or an operator with one of `roles` in the district."""
    if actor.role == "kiosk":
        if actor.district != district or actor.grid != grid:
            raise forbidden(actor, f"this kiosk serves {actor.district}/{actor.grid}, not {district}/{grid}")
        return
    allow(actor, roles, district)


def signed_by(call: M, actor: Actor) -> M:
    """The call with its free-text `operator` replaced by the signed-in actor: the token says who acted."""
    return call if actor.open else call.model_copy(update={"operator": actor.sub})
