from dataclasses import dataclass, field

from services.common.config import BusSettings, env_float, env_int


@dataclass(frozen=True)
class FeedSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    # Seconds by which the clocks of the services and of the NATS server may disagree: an internal event
    # younger than LINLI_PUBLIC's duplicate window less this is known to that window (see relay.py).
    clock_margin: float = field(default_factory=lambda: env_float("FEED_CLOCK_MARGIN", 60))
    # Seconds the feed gathers the ids it has published before storing them in one command.
    record_every: float = field(default_factory=lambda: env_float("FEED_RECORD_EVERY", 1.0))
    # Events of one type republished at the same time, each waiting for its ids to be stored.
    workers: int = field(default_factory=lambda: env_int("FEED_WORKERS", 16))
