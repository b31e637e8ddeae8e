import os
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import BusSettings, env_float, env_int

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WebSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    host: str = field(default_factory=lambda: os.environ.get("LINLI_WEB_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: env_int("LINLI_WEB_PORT", 8080))
    # The language a page speaks until the person switches: zh or en.
    language: str = field(default_factory=lambda: os.environ.get("LINLI_WEB_LANGUAGE", "zh"))
    # A kiosk goes back to its first screen, forgetting what was typed, after this long untouched.
    kiosk_idle: float = field(default_factory=lambda: env_float("LINLI_WEB_KIOSK_IDLE", 60))
    # How long a call to a service may take before the page says the system is busy.
    call_timeout: float = field(default_factory=lambda: env_float("LINLI_WEB_CALL_TIMEOUT", 10))
    # A request being made is waited for longer: under a burst the intake answers late but still makes it, and a
    # late receipt is better than "busy, nothing was sent" for a request that was made all the same.
    submit_timeout: float = field(default_factory=lambda: env_float("LINLI_WEB_SUBMIT_TIMEOUT", 60))
    # Cookies marked Secure: set when the site is served over HTTPS (behind a proxy that terminates it).
    secure_cookies: bool = field(default_factory=lambda: os.environ.get("LINLI_WEB_SECURE_COOKIES", "") == "1")
    # Open311 clients: a file of `api_key<TAB>client name<TAB>district` lines (GeoReport v2 api_key).
    open311_keys: str = field(default_factory=lambda: os.environ.get("LINLI_OPEN311_KEYS", ""))
    # The operator accounts the web relays Open311 clients' calls as: a file of `user<TAB>password` lines, one
    # dispatcher per district (a client acts in its key's district, through that district's account).
    open311_accounts: str = field(default_factory=lambda: os.environ.get("LINLI_OPEN311_ACCOUNTS", ""))
    templates: Path = HERE / "templates"
    static: Path = HERE / "static"
    texts: Path = HERE / "texts"
