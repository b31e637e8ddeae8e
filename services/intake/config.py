import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float
from services.common.places import places_path

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")


@dataclass(frozen=True)
class IntakeSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    catalog_path: Path = field(default_factory=lambda: Path(os.environ.get("INTAKE_CATALOG", DEFAULT_CATALOG)))
    # Districts, communities and grids a request or a registration may name (LINLI_PLACES).
    places_path: Path = field(default_factory=places_path)
    # A stored request whose request.created was not yet published is announced again after this long.
    announce_after: float = field(default_factory=lambda: env_float("INTAKE_ANNOUNCE_AFTER", 5.0))
    # How long a replica keeps a volunteer's name for the requests' history once read (seconds): a name that
    # changes through another replica shows in new lines after this long.
    name_ttl: float = field(default_factory=lambda: env_float("INTAKE_NAME_TTL", 60.0))
    # The accepted volunteer may read a resident's address and phone until this long after the work is done.
    details_ttl: float = field(default_factory=lambda: env_float("INTAKE_DETAILS_TTL", 86400.0))
    # A request without a window's end is overdue this long after it was made, if still not done: urgent
    # ones after INTAKE_OVERDUE_AFTER_URGENT, the rest after INTAKE_OVERDUE_AFTER (seconds).
    overdue_after: float = field(default_factory=lambda: env_float("INTAKE_OVERDUE_AFTER", 86400.0))
    overdue_after_urgent: float = field(default_factory=lambda: env_float("INTAKE_OVERDUE_AFTER_URGENT", 7200.0))

    def overdue_after_for(self, urgency: str) -> float:
        return self.overdue_after_urgent if urgency == "urgent" else self.overdue_after
