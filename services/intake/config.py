import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True)
class IntakeSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    catalog_path: Path = field(default_factory=lambda: Path(os.environ.get("INTAKE_CATALOG", DEFAULT_CATALOG)))
    # A stored request whose request.created was not yet published is announced again after this long.
    announce_after: float = field(default_factory=lambda: env_float("INTAKE_ANNOUNCE_AFTER", 5.0))
