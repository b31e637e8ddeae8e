import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float, env_int
from services.common.places import places_path


@dataclass(frozen=True)
class NotifierSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    # Unset: notifications go to the console log only.
    webhook_url: str | None = field(default_factory=lambda: os.environ.get("NOTIFIER_WEBHOOK_URL") or None)
    webhook_secret: str = field(default_factory=lambda: os.environ.get("NOTIFIER_WEBHOOK_SECRET", ""))
    webhook_attempts: int = field(default_factory=lambda: env_int("NOTIFIER_WEBHOOK_ATTEMPTS", 5))
    webhook_backoff: float = field(default_factory=lambda: env_float("NOTIFIER_WEBHOOK_BACKOFF", 0.5))
    webhook_backoff_cap: float = field(default_factory=lambda: env_float("NOTIFIER_WEBHOOK_BACKOFF_CAP", 8.0))
    webhook_timeout: float = field(default_factory=lambda: env_float("NOTIFIER_WEBHOOK_TIMEOUT", 10.0))
    contact_timeout: float = field(default_factory=lambda: env_float("NOTIFIER_CONTACT_TIMEOUT", 5.0))
    # A contact just used is taken from memory this long, without asking intake; after it, intake is asked
    # again, and the copy stored in the database is used only while intake does not answer.
    contact_memory: float = field(default_factory=lambda: env_float("NOTIFIER_CONTACT_MEMORY", 60.0))
    # The language of every text (templates/<language>.yaml); times are read in each district's own clock.
    language: str = field(default_factory=lambda: os.environ.get("NOTIFIER_LANGUAGE", "zh"))
    places: Path = field(default_factory=places_path)

    @property
    def channel(self) -> str:
        return "webhook" if self.webhook_url else "console"

    @property
    def claim_seconds(self) -> float:
        # Long enough for one attempt and the pause after it; renewed before every attempt.
        return self.webhook_timeout + self.webhook_backoff_cap + 10.0
