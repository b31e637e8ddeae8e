from dataclasses import dataclass, field

from services.common.config import BusSettings


@dataclass(frozen=True)
class FeedSettings:
    bus: BusSettings = field(default_factory=BusSettings)
