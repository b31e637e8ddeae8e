"""Decisions about credentials, with no I/O."""

import hashlib
import hmac
import secrets
from typing import Any

from contracts import ApiError


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def code_digest(code_ref: str, code: str) -> str:
    return hmac.new(code_ref.encode(), code.encode(), hashlib.sha256).hexdigest()


def wrong_sign_in() -> ApiError:
    # The same answer whether the user, the device or the password is wrong: it tells a guesser nothing.
    return ApiError("unauthenticated", "the user name or the password is wrong")


def code_refusal(doc: dict[str, Any] | None, volunteer_id: str, now: float, tries: int) -> ApiError | None:
    """Why this code can no longer sign anyone in, or None while it still can."""
    # A code asked for by phone is given back without the id: its unguessable code_ref names the volunteer.
    if doc is None or (volunteer_id and doc["volunteer_id"] != volunteer_id):
        return ApiError("unauthenticated", "no such code for this volunteer; ask for a new one")
    if doc["used"]:
        return ApiError("unauthenticated", "this code was used already; ask for a new one")
    if doc["expires"] <= now:
        return ApiError("unauthenticated", "this code has expired; ask for a new one")
    if doc["tries"] > tries:
        return ApiError("unauthenticated", f"this code was tried {tries} times; ask for a new one")
    return None
