"""Every word a page shows, in Chinese and English: texts/<language>/<area>.yaml, read as <area>.<key>."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = ("zh", "en")


def load(folder: Path) -> dict[str, dict[str, str]]:
    """{language: {"area.key": text}} for every language folder."""
    found: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        words: dict[str, str] = {}
        for path in sorted((folder / language).glob("*.yaml")):
            for key, text in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items():
                words[f"{path.stem}.{key}"] = str(text)
        found[language] = words
    return found


@dataclass(frozen=True)
class Words:
    """One language's texts; `words("common.too_long", n=50)` fills {n}. A missing key shows itself, never breaks a page."""

    language: str
    texts: Mapping[str, str]

    def __call__(self, key: str, **values: Any) -> str:
        text = self.texts.get(key, key)
        return text.format(**values) if values else text

    def name(self, thing: Mapping[str, Any]) -> str:
        """A catalogue item's or a place's name in this language, falling back to the Chinese."""
        if self.language == "en":
            return str(thing.get("name_en") or thing.get("name") or "")
        return str(thing.get("name") or "")
