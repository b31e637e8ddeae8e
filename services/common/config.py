import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def inbox_prefix_for(user: str | None) -> str:
    """Where a user's replies arrive. Each user has its own prefix, and the server lets only that user
    subscribe under it, so nobody reads the replies (a resident's phone, a balance) meant for another."""
    return f"_INBOX_{user}" if user else "_INBOX"


def nats_user(url: str) -> str | None:
    """The user a nats://user:password@host URL connects as, if it names one."""
    return urlsplit(url.split(",")[0]).username


@dataclass(frozen=True)
class BusSettings:
    nats_url: str = field(default_factory=lambda: os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    mongo_url: str = field(default_factory=lambda: os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017"))
    # Each service keeps its own database named <prefix>_<service>.
    db_prefix: str = field(default_factory=lambda: os.environ.get("LINLI_DB_PREFIX", "linli"))
    stream_replicas: int = field(default_factory=lambda: env_int("LINLI_STREAM_REPLICAS", 1))
    duplicate_window: float = field(default_factory=lambda: env_float("LINLI_DUPLICATE_WINDOW", 600))
    max_deliver: int = field(default_factory=lambda: env_int("LINLI_MAX_DELIVER", 20))
    ack_wait: float = field(default_factory=lambda: env_float("LINLI_ACK_WAIT", 30))
    # Messages a consumer has delivered and not yet acknowledged; poison is terminated at once and holds none.
    max_ack_pending: int = field(default_factory=lambda: env_int("LINLI_MAX_ACK_PENDING", 1000))
    retry_base_delay: float = field(default_factory=lambda: env_float("LINLI_RETRY_BASE_DELAY", 0.5))
    outbox_relay_interval: float = field(default_factory=lambda: env_float("LINLI_OUTBOX_RELAY_INTERVAL", 1.0))
    # How long stopping waits for the NATS connection to drain before it closes it: with the server
    # gone the drain never finishes, and what was not acknowledged is redelivered anyway.
    stop_timeout: float = field(default_factory=lambda: env_float("LINLI_STOP_TIMEOUT", 10.0))

    # `required`: privileged calls need a signed token (linli up, compose); `off`: no token is read.
    auth: str = field(default_factory=lambda: os.environ.get("LINLI_AUTH", "required"))
    # The identity service's public key (PEM file); unset, it is asked for over the bus.
    token_key: str = field(default_factory=lambda: os.environ.get("LINLI_TOKEN_KEY", ""))

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix_for(nats_user(self.nats_url))

    def database(self, service: str) -> str:
        return f"{self.db_prefix}_{service}"
