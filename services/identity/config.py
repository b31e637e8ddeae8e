import os
from dataclasses import dataclass, field

from services.common.config import BusSettings, env_float, env_int


@dataclass(frozen=True)
class IdentitySettings:
    bus: BusSettings = field(default_factory=BusSettings)
    # How long a token lasts: an operator's shift, a kiosk's day, a volunteer's month (a phone is personal,
    # and a new code each time would be a text message a day).
    operator_ttl: float = field(default_factory=lambda: env_float("IDENTITY_OPERATOR_TTL", 8 * 3600))
    kiosk_ttl: float = field(default_factory=lambda: env_float("IDENTITY_KIOSK_TTL", 24 * 3600))
    volunteer_ttl: float = field(default_factory=lambda: env_float("IDENTITY_VOLUNTEER_TTL", 30 * 86400))
    code_ttl: float = field(default_factory=lambda: env_float("IDENTITY_CODE_TTL", 300))
    code_tries: int = field(default_factory=lambda: env_int("IDENTITY_CODE_TRIES", 5))
    # Codes a volunteer may ask for in an hour: with 5 tries each, guessing six digits stays hopeless.
    codes_per_hour: int = field(default_factory=lambda: env_int("IDENTITY_CODES_PER_HOUR", 5))
    # A file holding the first administrator's password: user `admin`, every district. Read at each
    # start; an `admin` that exists already is left as it is.
    admin_password_file: str = field(default_factory=lambda: os.environ.get("IDENTITY_ADMIN_PASSWORD_FILE", ""))
    # How long identity waits for intake to find a volunteer by phone at sign-in.
    intake_timeout: float = field(default_factory=lambda: env_float("IDENTITY_INTAKE_TIMEOUT", 5))
