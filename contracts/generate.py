"""Write the JSON Schema files for consumers in other languages: python -m contracts.generate"""

import json
import sys
from pathlib import Path
from typing import Any

from contracts.calls import CALLS
from contracts.envelope import Envelope
from contracts.errors import ErrorReply
from contracts.public import PUBLIC_TYPES, PublicEnvelope
from contracts.subjects import EVENT_TYPES

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def render_all() -> dict[str, str]:
    schemas: dict[str, Any] = {}
    for name, model in EVENT_TYPES.items():
        schemas[f"events/{name}.json"] = Envelope[model].model_json_schema()  # type: ignore[valid-type]
    for name, (request, reply) in CALLS.items():
        schemas[f"calls/{name}.request.json"] = request.model_json_schema()
        schemas[f"calls/{name}.reply.json"] = reply.model_json_schema()
    for name, (_, public_model) in PUBLIC_TYPES.items():
        schemas[f"public/{name}.json"] = PublicEnvelope[public_model].model_json_schema()  # type: ignore[valid-type]
    schemas["calls/error.json"] = ErrorReply.model_json_schema()
    return {path: json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n" for path, schema in schemas.items()}


def main() -> None:
    rendered = render_all()
    for path, text in rendered.items():
        target = SCHEMA_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    stale = {p.relative_to(SCHEMA_DIR).as_posix() for p in SCHEMA_DIR.rglob("*.json")} - rendered.keys()
    for path in stale:
        (SCHEMA_DIR / path).unlink()
    print(f"wrote {len(rendered)} schemas to {SCHEMA_DIR}", file=sys.stderr)


if __name__ == "__main__":
    main()
