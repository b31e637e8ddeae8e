"""Pages in a real browser: Debian's Chromium driven by Playwright (never a browser Playwright downloads),
axe-core injected into each page, and screenshots at a phone's width and a desk's.

`.ci/run` installs the `chromium` package and axe-core (tests/browser/package.json) on a fresh machine."""

import asyncio
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linli import identity_cli
from linli.client import Client
from linli.system import System

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LINLI_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).resolve().parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("LINLI_SCREENSHOTS", ROOT / "build" / "screenshots"))
WIDTHS = {"phone": 360, "desk": 1280}
# As root, without a sandbox; and without the background calls a closed network refuses at every start.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
BAD = ("serious", "critical")


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)



def violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [n.get("target") for n in v.get("nodes", [])][:5]}
        for v in found if v.get("impact") in BAD
    ]


def check(page: Any, name: str) -> None:
    """At each width: no serious or critical axe finding, nothing wider than the screen, and a screenshot
    a reviewer can look at (build/screenshots/<name>-<width>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.viewport_size["height"] if page.viewport_size else 800
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(50)  # a layout pass at the new width before it is measured
        problems = violations(page)
        assert not problems, f"{name} at {width}px: {json.dumps(problems, ensure_ascii=False, indent=1)}"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {width}px is {overflow}px wider than the screen"
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)


def until(check_: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The first truthy answer of `check_`, asked again until `timeout` (a condition, never a fixed wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check_():
            return found
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout:.0f} s")


def min_font_px(page: Any, selector: str) -> float:
    return float(page.evaluate(
        "s => Math.min(...[...document.querySelectorAll(s)].map(e => parseFloat(getComputedStyle(e).fontSize)))",
        selector))


def min_target_px(page: Any, selector: str) -> float:
    """The smallest height or width of the visible elements matching `selector`."""
    return float(page.evaluate(
        """s => Math.min(...[...document.querySelectorAll(s)].filter(e => e.offsetParent !== null)
              .map(e => { const r = e.getBoundingClientRect(); return Math.min(r.width, r.height); }))""",
        selector))


@dataclass
class WebSystem:
    """The whole system as `linli up` runs it (tokens required, every process separate), with the demo's
    people: an administrator, a dispatcher, a bank clerk and the kiosk of quanwai-03."""

    system: System
    url: str
    passwords: dict[str, str] = field(default_factory=dict)
    kiosk: tuple[str, str] = ("", "")

    def call(self, subject: str, payload: dict[str, Any], token: str = "") -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            client = await Client.connect(self.system.nats_url, token=token)
            try:
                return await client.call(subject, payload)
            finally:
                await client.close()

        # Playwright's sync API keeps an event loop running in this thread: the call gets a thread of its own.
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, go()).result()

    def token(self, user: str) -> str:
        return str(self.call("linli.api.identity.login", {"user": user, "password": self.passwords[user]})["token"])

    def console_texts(self) -> str:
        logs = "".join(self.system.log_of(key) for key in self.system.processes if key.startswith("notifier"))
        return "\n".join(line.split("]: ", 1)[1] for line in logs.splitlines() if "]: " in line)

    def codes_sent(self, volunteer_id: str) -> list[str]:
        """The six-digit sign-in codes the console channel delivered to this volunteer, oldest first."""
        logs = "".join(self.system.log_of(k) for k in self.system.processes if k.startswith("notifier"))
        mine = [line.split("]: ", 1)[1] for line in logs.splitlines()
                if f"volunteer:{volunteer_id}" in line and "]: " in line]
        return [found for line in mine for found in re.findall(r"(?<![0-9])([0-9]{6})(?![0-9])", line)]


def start_web_system(folder: Path, env: dict[str, str] | None = None) -> Iterator[WebSystem]:
    system = System.start(folder, env={
        **identity_cli.service_env(folder), "LINLI_AUTH": "required",  # as `linli up`, whatever the tests' default
        "MATCHER_OFFER_TTL": "600", "MATCHER_SWEEP_INTERVAL": "0.3",
        "LINLI_ACK_WAIT": "3", **(env or {})})
    try:
        async def people() -> None:
            client = await Client.connect(system.nats_url, token="")
            try:
                await identity_cli.create_people(client, folder, "beibei", "quanwai-03")
            finally:
                await client.close()

        asyncio.run(people())
        passwords, kiosk = {}, ("", "")
        for line in identity_cli.people_file(folder).read_text().splitlines():
            if line.startswith("#"):
                continue
            name, role, _, secret = line.split("\t")
            if role == "kiosk":
                kiosk = (name, secret)
            elif role != "open311":
                passwords[name] = secret
        yield WebSystem(system, system.web_url, passwords, kiosk)
    finally:
        system.stop()


def chromium_version() -> str:
    return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
