import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from services.common.config import BusSettings, env_float, env_int
from services.ledger.rules import DEFAULT_RULES, Rules, load_rules, with_overrides


def parse_rate(text: str, setting: str) -> Decimal:
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{setting}: {text!r} is not a number of points per hour") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{setting}: {text!r} must be a finite number of points per hour, 0 or more")
    return rate


def parse_category_rates(text: str, setting: str = "LEDGER_CATEGORY_RATES") -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        category, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not category:
            raise ValueError(f"{setting}: {item!r} is not category=rate, e.g. 'elderly=12,tutoring=15'")
        if category in rates:
            raise ValueError(f"{setting}: category {category!r} is given twice")
        rates[category] = parse_rate(value, f"{setting} ({category})")
    return rates


def rules_from_env() -> Rules:
    path = Path(os.environ.get("LEDGER_RULES") or DEFAULT_RULES)
    per_hour = os.environ.get("LEDGER_POINTS_PER_HOUR", "").strip()
    return with_overrides(
        load_rules(path),
        parse_rate(per_hour, "LEDGER_POINTS_PER_HOUR") if per_hour else None,
        parse_category_rates(os.environ.get("LEDGER_CATEGORY_RATES", "")),
    )


def parse_trusted_keys(text: str, setting: str = "LEDGER_TRUSTED_KEYS") -> dict[str, str]:
    """district=path/to/public.pem,... -> {district: PEM text}"""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        district, sep, path = (part.strip() for part in item.partition("="))
        if not sep or not district or not path:
            raise ValueError(f"{setting}: {item!r} is not district=path/to/public.pem")
        try:
            keys[district] = Path(path).read_text(encoding="ascii")
        except OSError as exc:
            raise ValueError(f"{setting}: cannot read the key of {district!r}: {exc}") from None
    return keys


@dataclass(frozen=True)
class LedgerSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    rules: Rules = field(default_factory=rules_from_env)
    # Hours not confirmed by a rating or an operator within this many seconds go to the review queue.
    confirm_deadline: float = field(default_factory=lambda: env_float("LEDGER_CONFIRM_DEADLINE", 7 * 24 * 3600))
    # How often the repair sweep runs: projections behind their entries, redemptions a crash left open.
    sweep_interval: float = field(default_factory=lambda: env_float("LEDGER_SWEEP_INTERVAL", 5.0))
    # An account this replica wrote or read lately is taken from memory this long (seconds): a stale head only
    # costs the append a collision and a read; a stale team or district is at most this old.
    account_memory: float = field(default_factory=lambda: env_float("LEDGER_ACCOUNT_MEMORY", 60.0))
    # A redemption still pending after this many seconds is taken over by the sweep.
    redeem_timeout: float = field(default_factory=lambda: env_float("LEDGER_REDEEM_TIMEOUT", 30.0))
    # The issuing district named in statements; empty means the volunteer's own district.
    district: str = field(default_factory=lambda: os.environ.get("LEDGER_DISTRICT", "").strip())
    # How often the chain heads are signed and published as ledger.checkpoint (seconds; 0 turns it off).
    checkpoint_interval: float = field(default_factory=lambda: env_float("LEDGER_CHECKPOINT_INTERVAL", 3600.0))
    signing_key_path: str = field(default_factory=lambda: os.environ.get("LEDGER_SIGNING_KEY", "").strip())
    trusted_keys: Mapping[str, str] = field(
        default_factory=lambda: parse_trusted_keys(os.environ.get("LEDGER_TRUSTED_KEYS", ""))
    )
    # Printed above the seal on a certificate asked for without an issuer.
    certificate_issuer: str = field(
        default_factory=lambda: os.environ.get("LEDGER_CERTIFICATE_ISSUER", "").strip() or "社区志愿服务站"
    )
    # The largest certificate PDF sent in a reply: base64 makes it 4/3 as long, and the reply must stay
    # under NATS's default max_payload of 1 MB. One page with its fonts subset is about 100 kB.
    certificate_max_bytes: int = field(default_factory=lambda: env_int("LEDGER_CERTIFICATE_MAX_BYTES", 700_000))
