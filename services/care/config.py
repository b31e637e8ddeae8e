import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float, env_int
from services.common.places import places_path


def env_graces(name: str, default: str) -> tuple[float, ...]:
    graces = tuple(float(part) for part in os.environ.get(name, default).split(",") if part.strip())
    if len(graces) != 4 or any(g < 0 for g in graces):
        raise ValueError(f"{name} must be four non-negative numbers of seconds, one per escalation step")
    return graces


@dataclass(frozen=True)
class CareSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    places_path: Path = field(default_factory=places_path)
    # Seconds from the deadline to the reminder, then from each step to the next: holder, group, grid worker,
    # operators (CARE_GRACES, comma-separated).
    graces: tuple[float, ...] = field(default_factory=lambda: env_graces("CARE_GRACES", "0,1800,3600,7200"))
    # How often the watchdog looks for deadlines and steps that have come (seconds).
    watch_interval: float = field(default_factory=lambda: env_float("CARE_WATCH_INTERVAL", 10.0))
    # Timers are found by an equality key of this many seconds; a pass reads each key since the last pass.
    bucket_seconds: int = field(default_factory=lambda: env_int("CARE_BUCKET_SECONDS", 60))
    # How many deadlines of one bucket a pass takes at the same time.
    pass_concurrency: int = field(default_factory=lambda: env_int("CARE_PASS_CONCURRENCY", 16))
    # A child's pairing with no logged contact for this many days alerts the children's director.
    quiet_days: int = field(default_factory=lambda: env_int("CARE_QUIET_DAYS", 14))
    # The catalogue item of the urgent request an unwell or needs_help check-in raises.
    urgent_service: str = field(default_factory=lambda: os.environ.get("CARE_URGENT_SERVICE", "elderly.visit"))
    # A step saved but not yet published this long (wall-clock seconds) is published by the next pass.
    resend_after: float = field(default_factory=lambda: env_float("CARE_RESEND_AFTER", 5.0))
    intake_timeout: float = field(default_factory=lambda: env_float("CARE_INTAKE_TIMEOUT", 5.0))
