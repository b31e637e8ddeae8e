"""The database commands each service process counted (LINLI_COMMAND_COUNTS, services/common/runtime.py)."""

import json
from collections import Counter
from pathlib import Path

# Commands a driver sends for itself, not for the loop.
DRIVER = {"hello", "isMaster", "ismaster", "ping", "endSessions", "buildInfo", "buildinfo"}


def snapshot(directory: Path) -> dict[str, Counter[str]]:
    """{service: {"find requests": n, ...}} summed over the service's processes, as last written."""
    by_service: dict[str, Counter[str]] = {}
    for path in directory.glob("*.json"):
        service = path.name.split("-", 1)[0]
        try:
            counted = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next snapshot reads it
        by_service.setdefault(service, Counter()).update(
            {key: n for key, n in counted.items() if key.split(" ", 1)[0] not in DRIVER})
    return by_service


def difference(after: dict[str, Counter[str]], before: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
    return {service: +(counts - before.get(service, Counter())) for service, counts in after.items()}


def total(counts: dict[str, Counter[str]]) -> int:
    return sum(sum(c.values()) for c in counts.values())


def by_kind(counts: dict[str, Counter[str]]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for per_service in counts.values():
        for key, n in per_service.items():
            kinds[key.split(" ", 1)[0]] += n
    return kinds
