"""Strict bodies: no coercion across JSON types, every string and list in a call bounded, and a body too
large or too deep refused before any model reads it."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from contracts.calls import CALLS, Complete, PutRewardItem, Redeem, RegisterVolunteer, RequestsQuery, SubmitRequest
from contracts.envelope import new_event
from contracts.events import VolunteerRegistered
from contracts.wire import MAX_CALL_BYTES, MAX_DEPTH, BodyRefused, nesting, read_call, read_event

pytestmark = pytest.mark.domain
SAMPLES = Path(__file__).parent / "samples"
# Bounded by the body's size and depth instead: a signed statement is carried exactly as it was signed.
FREE_OBJECTS = {("ledger.import_statement", "statement")}

VOLUNTEER = {"name": "袁文", "phone": "13900139000", "district": "beibei", "grids": ["quanwai-01"], "skills": ["repair"]}
SUBMIT = {
    "idempotency_key": "kiosk-12345678", "district": "beibei", "grid": "quanwai-01", "service": "repair.plumbing",
    "resident": {"name": "王秀英", "phone": "13800138000"},
}


def bounded_pattern(pattern: str) -> bool:
    repeats = set(pattern.replace("\\+", "").replace("\\*", "")) & {"*", "+"}
    return pattern.startswith("^") and pattern.endswith("$") and not repeats


def unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str, seen: set[str]) -> list[str]:
    """Every string, list, integer or open object in a JSON Schema that has no upper bound."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else unbounded(defs[name], defs, path, seen | {name})
    alternatives = schema.get("anyOf", [])
    if any(alt.get("type") == "number" for alt in alternatives):
        return []  # a decimal: a number, or its string whose value the model bounds
    found = [problem for alt in alternatives for problem in unbounded(alt, defs, path, seen)]
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "enum", "const"} & schema.keys() or schema.get("format") in
                                 ("date-time", "date") or bounded_pattern(schema.get("pattern", ""))):
        found.append(f"{path}: a string without maxLength")
    if kind == "integer" and "maximum" not in schema and "exclusiveMaximum" not in schema:
        found.append(f"{path}: an integer without maximum")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{path}: a list without maxItems")
        found += unbounded(schema.get("items", {}), defs, f"{path}[]", seen)
    if kind == "object":
        if schema.get("additionalProperties") not in (None, False) and "properties" not in schema:
            found.append(f"{path}: an object with any keys")
        for name, prop in schema.get("properties", {}).items():
            found += unbounded(prop, defs, f"{path}.{name}" if path else name, seen)
    return found


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_string_list_and_integer_of_a_call_is_bounded(call: str) -> None:
    schema = CALLS[call][0].model_json_schema()
    problems = unbounded(schema, schema.get("$defs", {}), "", set())
    assert [p for p in problems if (call, p.split(":")[0]) not in FREE_OBJECTS] == []


def refused(model: type[BaseModel], body: dict[str, Any] | bytes) -> BodyRefused:
    with pytest.raises(BodyRefused) as caught:
        read_call(model, body if isinstance(body, bytes) else json.dumps(body).encode())
    return caught.value


@pytest.mark.parametrize(("model", "body", "field"), [
    (RegisterVolunteer, {**VOLUNTEER, "capacity": True}, "capacity"),
    (PutRewardItem, {"item_id": "rice", "name": "大米", "kind": "goods", "points": "10", "stock": True}, "stock"),
    (Redeem, {"volunteer_id": "v1", "item_id": "rice", "quantity": True, "idempotency_key": "k-12345678"}, "quantity"),
    (RequestsQuery, {"limit": True}, "limit"),
    (RequestsQuery, {"limit": "5"}, "limit"),
    (SubmitRequest, {**SUBMIT, "window_start": 1767225600, "window_end": 1767232800}, "window_start"),
    (SubmitRequest, {**SUBMIT, "description": 12345}, "description"),
    (SubmitRequest, {**SUBMIT, "resident": {"name": {"$gt": ""}, "phone": "13800138000"}}, "resident.name"),
    (RegisterVolunteer, {**VOLUNTEER, "availability": [{"days": [7, 99, -1], "start": "09:00", "end": "12:00"}]},
     "availability.0.days.0"),
    (RegisterVolunteer, {**VOLUNTEER, "availability": [{"days": [1, 1], "start": "09:00", "end": "12:00"}]},
     "availability.0.days"),
    (RegisterVolunteer, {**VOLUNTEER, "availability": [{"days": [1], "start": "09:00", "end": "12:00"}] * 100_000},
     "availability"),
    (Complete, {"assignment_id": "a1", "volunteer_id": "v1", "hours": True}, "hours"),
    (Complete, {"assignment_id": "a" * 10_000, "volunteer_id": "v1", "hours": "1"}, "assignment_id"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_wrong_type_or_an_unbounded_value_is_refused_field_by_field(
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    error = refused(model, body)
    if len(json.dumps(body)) > MAX_CALL_BYTES:
        assert error.code == "too_large"
    else:
        assert error.code == "invalid_request"
        assert field in [d["field"] for d in error.details]


def test_the_contract_types_that_are_written_as_strings_still_are() -> None:
    done = read_call(Complete, b'{"assignment_id": "a1", "volunteer_id": "v1", "hours": "1.5"}')
    as_number = read_call(Complete, b'{"assignment_id": "a1", "volunteer_id": "v1", "hours": 1.5}')
    assert str(done.hours) == str(as_number.hours) == "1.5"
    submit = read_call(SubmitRequest, json.dumps({
        **SUBMIT, "window_start": "2026-12-02T09:00:00+08:00", "window_end": "2026-12-02 11:00:00+08:00",
    }).encode())
    assert submit.window_end and submit.window_start and submit.window_end.hour == 11
    volunteer = read_call(RegisterVolunteer, json.dumps({
        **VOLUNTEER, "availability": [{"days": [0, 6], "start": "09:00", "end": "12:00"}],
        "away": [{"start": "2026-12-24", "end": "2026-12-26"}],
    }).encode())
    assert volunteer.availability[0].days == [0, 6]


def test_a_body_too_large_or_too_deep_or_not_json_is_refused_before_validation() -> None:
    assert refused(RequestsQuery, b'{"cursor": "' + b"x" * MAX_CALL_BYTES + b'"}').code == "too_large"
    deep = b"[" * 1000 + b"]" * 1000
    assert nesting(deep) == 1000
    assert refused(RequestsQuery, b'{"cursor": ' + deep + b"}").code == "invalid_request"
    assert refused(RequestsQuery, b'{"limit": 5').code == "invalid_request"
    assert refused(RequestsQuery, b"\xff\xfe\x00garbage").code == "invalid_request"
    assert refused(RequestsQuery, b"[]").code == "invalid_request"
    within = b'{"cursor": "' + b"{" * 150 + b'", "x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert nesting(within) == MAX_DEPTH
    assert read_call(RequestsQuery, within).cursor == "{" * 150  # brackets inside strings are text


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.v1.json")), ids=lambda p: p.name)
def test_events_written_by_version_1_producers_pass_the_strict_reading(sample: Path) -> None:
    body = sample.read_bytes()
    event_type = json.loads(body)["type"].removeprefix("linli.")
    assert read_event(event_type, body).id == json.loads(body)["id"]


def registered(**changes: Any) -> bytes:
    event = new_event(VolunteerRegistered(volunteer_id="v1", district="beibei", grids=["g"], skills=["repair"],
                                          capacity=1), source="t", district="beibei", subject="v1", correlationid="v1")
    body = json.loads(event.model_dump_json())
    body["data"].update(changes)
    return json.dumps(body).encode()


def test_an_event_is_read_strictly_and_only_as_the_type_its_subject_names() -> None:
    assert read_event("volunteer.registered", registered()).data.capacity == 1
    with pytest.raises(BodyRefused, match="not a valid volunteer.registered"):
        read_event("volunteer.registered", registered(capacity=True))
    with pytest.raises(BodyRefused, match="on the subject of request.cancelled"):
        read_event("request.cancelled", registered(request_id="r1"))
    with pytest.raises(BodyRefused) as caught:
        read_event("volunteer.registered", b"[" * 1000 + b"]" * 1000)
    assert caught.value.code == "invalid_request"
