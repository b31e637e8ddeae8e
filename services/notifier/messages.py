"""The message catalogues: every text a person reads, one file per language under templates/."""

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Messages:
    catalogues: dict[str, dict[str, str]]

    @classmethod
    def load(cls, folder: Path = TEMPLATES) -> "Messages":
        catalogues = {}
        for lang in LANGUAGES:
            raw = yaml.safe_load((folder / f"{lang}.yaml").read_text(encoding="utf-8")) or {}
            catalogues[lang] = {str(key): str(text) for key, text in raw.items()}
        return cls(catalogues)

    def render(self, lang: str, key: str, **values: Any) -> str:
        # A placeholder without a value raises: a text with a hole in it is never sent.
        return self.catalogues[lang].get(key, self.catalogues["zh"][key]).format_map(values)

    def placeholders(self, lang: str, key: str) -> set[str]:
        return {field for _, field, _, _ in string.Formatter().parse(self.catalogues[lang][key]) if field}
