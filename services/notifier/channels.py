import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from services.notifier.handlers import webhook_payload

log = logging.getLogger("linli.notifier")


@dataclass(frozen=True)
class Outcome:
    status: int | None
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def signature(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def webhook_headers(secret: bytes, body: bytes, notification_id: str, now: float) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "X-Linli-Signature": f"sha256={signature(secret, body)}",
        "X-Linli-Timestamp": str(int(now)),
        # Every attempt of one notification carries the same key, so the receiver can drop a repeat
        # that our side could not see succeed (a crash or a timeout after the receiver's 2xx).
        "Idempotency-Key": notification_id,
    }


async def post_webhook(client: httpx.AsyncClient, url: str, secret: bytes, doc: dict[str, Any]) -> Outcome:
    body = encode(webhook_payload(doc))
    try:
        response = await client.post(url, content=body, headers=webhook_headers(secret, body, doc["_id"], time.time()))
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}".rstrip(": "))
    outcome = Outcome(response.status_code)
    return outcome if outcome.delivered else Outcome(response.status_code, f"HTTP {response.status_code}")


def masked(phone: str) -> str:
    digits = phone.replace(" ", "").replace("-", "")
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) > 7 else "****"


PHONE = re.compile(r"\+?\d[\d -]{5,}\d")


def to_console(doc: dict[str, Any]) -> None:
    # Phones are masked, the recipient's and any in the text: logs travel further than the notifier's database.
    who = f"{doc['recipient']} {doc['name']} {masked(doc['phone'])}" if doc["phone"] else doc["recipient"]
    text = PHONE.sub(lambda found: masked(found.group()), doc["text"])
    log.info("NOTIFY %s [%s, request %s]: %s", who, doc["kind"], doc["request_id"], text)
