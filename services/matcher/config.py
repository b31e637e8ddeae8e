import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float, env_int


@dataclass(frozen=True)
class MatcherSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    # How long a volunteer has to accept an offer before it moves on.
    offer_ttl: float = field(default_factory=lambda: env_float("MATCHER_OFFER_TTL", 300))
    # How often each replica looks for lapsed offers and work a crashed replica left behind.
    sweep_interval: float = field(default_factory=lambda: env_float("MATCHER_SWEEP_INTERVAL", 1.0))
    # A replica placing a request holds it this long and renews it every third of it while it works, so
    # a dead replica's requests are taken over within seconds: a lease and a sweep within 5 s of the kill.
    lease: float = field(default_factory=lambda: env_float("MATCHER_LEASE", 3))
    # How long a request.created a replica took stays with it unacknowledged before JetStream hands it to
    # another: a replica killed before it stored the request would otherwise hold it for LINLI_ACK_WAIT.
    # A handler still working after this is only repeated, and the repeat finds the request taken.
    ack_wait: float = field(default_factory=lambda: env_float("MATCHER_ACK_WAIT", 3))
    # Requests handled at once by one replica.
    workers: int = field(default_factory=lambda: env_int("MATCHER_WORKERS", 4))
    rules_path: Path = field(
        default_factory=lambda: Path(os.environ.get("MATCHER_RULES", Path(__file__).with_name("matching.yaml")))
    )
    # The matcher's own places file, if it must differ from every other service's (LINLI_PLACES).
    places_path: Path | None = field(
        default_factory=lambda: Path(os.environ["MATCHER_PLACES"]) if os.environ.get("MATCHER_PLACES") else None
    )
    # The clock of availability windows in a district the places file does not list.
    timezone: str = field(default_factory=lambda: os.environ.get("MATCHER_TIMEZONE", "Asia/Shanghai"))
