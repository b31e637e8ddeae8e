"""What a body on the bus must be before any model reads it.

A call or an event body is refused whole, before validation, when it is larger than its limit or nested
deeper than MAX_DEPTH: a JSON parser that recurses can be made to fail in ways no validation error
reports. What passes is validated strictly: JSON types are never coerced into one another (a bool is not
an integer, a number is not a date-time, a number is not a string); only the decimals that the contract
writes as strings (hours, points) accept a string or a number, and date-times are ISO 8601 strings.
"""

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from contracts.envelope import Envelope
from contracts.subjects import EVENT_TYPES

M = TypeVar("M", bound=BaseModel)

MAX_CALL_BYTES = 64 * 1024
MAX_EVENT_BYTES = 256 * 1024  # events come from the services themselves, and an unmatched request lists candidates
MAX_DEPTH = 32

# A string is one token (the possessive quantifiers keep an unterminated one linear), brackets the others.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]')


class BodyRefused(ValueError):
    """A body that no handler should see, with the error code its sender gets back."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def nesting(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text go, counted without parsing it."""
    depth = deepest = 0
    for token in _TOKENS.finditer(body):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in (b"]", b"}"):
            depth -= 1
    return deepest


def screen(body: bytes, limit: int) -> None:
    if len(body) > limit:
        raise BodyRefused("too_large", f"the body has {len(body)} bytes; at most {limit} are read",
                          {"bytes": len(body), "limit": limit})
    if (depth := nesting(body)) > MAX_DEPTH:
        raise BodyRefused("invalid_request", f"the body is nested {depth} levels deep; at most {MAX_DEPTH} are read",
                          [{"field": "", "problem": f"nested deeper than {MAX_DEPTH} levels"}])


def field_problems(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def read_call(model: type[M], body: bytes) -> M:
    """The call in `body`, validated strictly, or BodyRefused with the field-by-field problems."""
    screen(body, MAX_CALL_BYTES)
    try:
        return model.model_validate_json(body or b"{}", strict=True)
    except ValidationError as exc:
        raise BodyRefused("invalid_request", f"the {model.__name__} call is not valid", field_problems(exc)) from exc


def event_type_of(subject: str) -> str:
    """linli.evt.<entity>.<verb>.<district> → <entity>.<verb>"""
    parts = subject.split(".")
    return ".".join(parts[2:4]) if len(parts) == 5 and parts[:2] == ["linli", "evt"] else ""


def read_event(event_type: str, body: bytes) -> Envelope[Any]:
    """The event in `body` as an envelope of `event_type`, validated strictly, or BodyRefused saying why
    it can never be handled."""
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise BodyRefused("not_an_event", f"{event_type!r} is not an event type of this contract")
    screen(body, MAX_EVENT_BYTES)
    try:
        event: Envelope[Any] = Envelope[model].model_validate_json(body, strict=True)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise BodyRefused("invalid_event", f"not a valid {event_type} event", field_problems(exc)) from exc
    if event.type != f"linli.{event_type}":
        raise BodyRefused("invalid_event", f"a {event.type} event on the subject of {event_type}",
                          [{"field": "type", "problem": f"should be linli.{event_type}"}])
    return event
