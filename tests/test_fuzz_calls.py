"""Property-based fuzz of every call, over a real nats-server, against the five services running.

Bodies come from each call's contract model (contracts.calls.CALLS, and each service's dead_letters
call): some the model allows, with ids of things that exist mixed in so that business rules are reached,
and hostile ones: wrong JSON types, missing fields, strings and lists past their bounds, injection-shaped
and very long unicode strings, deep nesting, non-JSON bytes and bodies past the size limit.

Asserted for every call: a reply within the request timeout; a refusal is an error object of the
documented shape, never `internal`; an answer has the reply's documented shape; and a refused call writes
nothing: the called service's database and the stream are the same before and after it, compared once
every consumer has caught up. A service only ever writes its own database, and anything else it could
cause goes through the stream, so these two are what a refusal could change.

Hypothesis draws the bodies with a fixed seed (derandomized), so a CI run sends the same calls each time.
"""

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from contracts import API, ErrorReply
from contracts.calls import CALLS
from contracts.subjects import STREAM
from contracts.wire import MAX_CALL_BYTES, BodyRefused, read_call
from linli.embedded import Server, start_nats
from services.common.config import BusSettings
from services.common.deadletters import DeadLetterCall
from services.common.gate import AuditQuery
from services.identity.app import build as build_identity
from services.identity.config import IdentitySettings
from services.common.runtime import Service
from services.care.app import build as build_care
from services.care.config import CareSettings
from services.intake.app import build as build_intake
from services.intake.config import IntakeSettings
from services.ledger.app import build as build_ledger
from services.matcher.app import build as build_matcher
from services.matcher.config import MatcherSettings
from services.notifier.app import build as build_notifier
from tests.test_ledger_service import ledger_settings
from tests.test_notifier_service import notifier_settings

pytestmark = pytest.mark.service

SERVICES = ("intake", "matcher", "notifier", "ledger", "identity", "care")
MODELS: dict[str, type[BaseModel]] = {
    **{f"linli.api.{name}": request for name, (request, _) in CALLS.items()},
    **{f"linli.api.{service}.dead_letters": DeadLetterCall for service in SERVICES},
    **{f"linli.api.{service}.audit": AuditQuery for service in SERVICES},
}
REPLIES: dict[str, type[BaseModel]] = {f"linli.api.{name}": reply for name, (_, reply) in CALLS.items()}
GENERATED = 6  # bodies drawn from each call's model; with the hostile ones about 30 calls per subject
REQUEST_TIMEOUT = 10.0
# Refused calls known to write: subject → the defect. A case whose defect is fixed passes as any other.

INJECTIONS = [
    "'; DROP TABLE requests; --", "../../../../etc/passwd", "$where", "{\"$gt\": \"\"}", "${jndi:ldap://x}",
    "<script>alert(1)</script>", "linli.evt.>", "*", "\u0000\u202e", "😀" * 40, "邻" * 3000,
]
DISTRICT, GRID = "beibei", "quanwai-01"


# ---- bodies ---------------------------------------------------------------------------------------------

def strategy(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """JSON values the schema allows (drawn from the subset of JSON Schema pydantic writes)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return st.deferred(lambda: strategy(target, defs))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        numbers = [alt for alt in schema["anyOf"] if alt.get("type") == "number"]
        return strategy(numbers[0], defs) if numbers else st.one_of([strategy(alt, defs) for alt in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return strings(schema)
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -10**6 - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 10**6 + 1) - 1)
        return st.integers(low, high)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -10**6))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 10**6))
        return st.decimals(low, high, places=2, allow_nan=False, allow_infinity=False).map(
            lambda d: str(d) if d % 2 else float(d))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(strategy(schema.get("items", {}), defs), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        parts = {name: strategy(prop, defs) for name, prop in schema["properties"].items()}
        return st.fixed_dictionaries({k: v for k, v in parts.items() if k in required},
                                     optional={k: v for k, v in parts.items() if k not in required})
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=3), max_leaves=8)


def strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if pattern := schema.get("pattern"):
        return st.from_regex(pattern, fullmatch=True)
    if schema.get("format") == "date-time":
        return st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)).map(
            lambda t: t.isoformat())
    if schema.get("format") == "date":
        return st.dates().map(lambda d: d.isoformat())
    low, high = schema.get("minLength", 0), schema.get("maxLength", 200)
    fitting = [s for s in INJECTIONS if low <= len(s) <= high]
    return st.sampled_from(fitting) | st.text(min_size=low, max_size=min(high, 30)) if fitting else st.text(
        min_size=low, max_size=min(high, 30))


def drawn(subject: str, known: dict[str, Any]) -> list[dict[str, Any]]:
    """Bodies the call's model allows, with the ids of things that exist put in now and then."""
    schema = MODELS[subject].model_json_schema()
    bodies: list[dict[str, Any]] = []

    @st.composite
    def with_known(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = draw(strategy(schema, schema.get("$defs", {})))
        for key in sorted(set(body) & set(known)):
            if draw(st.booleans()):
                body[key] = known[key]
        return body

    @settings(max_examples=GENERATED, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(with_known())
    def collect(body: dict[str, Any]) -> None:
        bodies.append(body)

    collect()
    return bodies


JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
              type(None): "null"}
WRONG = [True, 12345, 1.5, "text", [{"$gt": ""}], {"$gt": ""}, None]


def accepted_types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return accepted_types(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return set().union(*(accepted_types(alt, defs) for alt in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        return {JSON_TYPES[type(v)] for v in schema.get("enum", [schema.get("const")])}
    kind = schema.get("type")
    return {"integer", "number"} if kind == "number" else {kind} if kind else set(JSON_TYPES.values())


def hostile(subject: str, example: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Bodies that no valid call can be: each must be refused with invalid_request or too_large."""
    schema = MODELS[subject].model_json_schema()
    defs = schema.get("$defs", {})
    text = json.dumps(example, ensure_ascii=False).encode()
    bodies = [
        ("not-json", b"{not json"), ("truncated", text[:-1]), ("binary", b"\xff\xfe\x00\x01\x80"),
        ("array", b"[]"), ("string", b'"a call"'), ("number", b"123"), ("null", b"null"), ("true", b"true"),
        ("deep-list", b"[" * 1000 + b"]" * 1000),
        ("deep-object", b'{"a":' * 1000 + b"1" + b"}" * 1000),
        ("deep-in-a-field", text[:-1] + b', "zz": ' + b"[" * 40 + b"]" * 40 + b"}"),
        ("too-large", text[:-1] + (b", " if example else b"") + b'"pad": "' + "邻".encode() * (MAX_CALL_BYTES // 3) + b'"}'),
    ]
    for name, prop in schema.get("properties", {}).items():
        allowed = accepted_types(prop, defs)
        wrong = [value for value in WRONG if JSON_TYPES[type(value)] not in allowed]
        for value in wrong[:3]:
            bodies.append((f"{name}={json.dumps(value)}", json.dumps({**example, name: value}).encode()))
        if name in schema.get("required", []):
            bodies.append((f"no {name}", json.dumps({k: v for k, v in example.items() if k != name}).encode()))
        if (limit := prop.get("maxLength")) is not None:
            bodies.append((f"{name} too long", json.dumps({**example, name: "邻" * (limit + 1)}).encode()))
        if (limit := prop.get("maxItems")) is not None and example.get(name):
            bodies.append((f"{name} too many", json.dumps({**example, name: example[name][:1] * (limit + 1)}).encode()))
    return bodies


def base_example(subject: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """A body the model accepts, to mutate one field at a time (the first drawn one that is valid)."""
    for body in candidates:
        try:
            read_call(MODELS[subject], json.dumps(body).encode())
            return body
        except BodyRefused:
            continue
    return candidates[0] if candidates else {}


# ---- the system under test --------------------------------------------------------------------------------

@dataclass
class Outcome:
    sent: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    silent: list[tuple[str, str]] = field(default_factory=list)
    misshapen: list[tuple[str, str, str]] = field(default_factory=list)
    internal: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    accepted_hostile: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    wrote: list[tuple[str, str, str]] = field(default_factory=list)
    unserved: set[str] = field(default_factory=set)


class Probe:
    def __init__(self, nc: NATS, mongo: AsyncMongoClient[dict[str, Any]], bus: BusSettings,
                 services: list[Service]) -> None:
        self.nc, self.js, self.mongo, self.bus, self.services = nc, nc.jetstream(), mongo, bus, services

    async def call(self, subject: str, body: bytes) -> dict[str, Any] | None:
        reply = await self.nc.request(subject, body, timeout=REQUEST_TIMEOUT)
        data: dict[str, Any] = json.loads(reply.data)
        return data

    async def quiet(self, timeout: float = 30.0) -> None:
        """Every consumer has handled all the stream holds, and every outbox is empty, twice running."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = -1
        while asyncio.get_running_loop().time() < deadline:
            seq = (await self.js.stream_info(STREAM)).state.last_seq
            consumers = await self.js.consumers_info(STREAM)
            idle = all(c.num_pending == 0 and c.num_ack_pending == 0 for c in consumers)
            outboxes = [await s.db["outbox"].count_documents({}) for s in self.services]
            if idle and not any(outboxes) and seq == last:
                return
            last = seq
            await asyncio.sleep(0.02)
        raise AssertionError("the services did not settle")

    async def snapshot(self, service: str) -> dict[str, Any]:
        db = self.mongo[self.bus.database(service)]
        state: dict[str, Any] = {"stream": (await self.js.stream_info(STREAM)).state.messages}
        # The ledger sweep's mark is moved on by every sweep, whatever the calls.
        for name in sorted(n for n in await db.list_collection_names() if n != "sweeps"):
            docs = await db[name].find({}).to_list()
            state[name] = sorted(json.dumps(d, sort_keys=True, default=str, ensure_ascii=False) for d in docs)
        return state


def difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            if isinstance(old, list) or isinstance(new, list):
                added = sorted(set(new or []) - set(old or []))[:2]
                removed = sorted(set(old or []) - set(new or []))[:2]
                changed.append(f"{key}: +{added} -{removed}")
            else:
                changed.append(f"{key}: {old} → {new}")
    return "; ".join(changed)


async def seed(probe: Probe) -> dict[str, Any]:
    """A volunteer with an offer, a reward item with stock and points to spend: business rules get reached."""
    call = probe.call
    volunteer = (await call(API.INTAKE_REGISTER_VOLUNTEER, json.dumps({
        "name": "袁文", "phone": "13900139000", "district": DISTRICT, "grids": [GRID], "skills": ["repair"],
        "capacity": 2,
    }).encode()))
    assert volunteer and "volunteer_id" in volunteer, volunteer
    volunteer_id = volunteer["volunteer_id"]
    await probe.quiet()
    request = await call(API.INTAKE_SUBMIT, json.dumps({
        "idempotency_key": f"fuzz-{uuid.uuid4()}", "district": DISTRICT, "grid": GRID, "service": "repair.plumbing",
        "resident": {"name": "王秀英", "phone": "13800138000", "address": "3栋"},
    }).encode())
    assert request and "request_id" in request, request
    await probe.quiet()
    offers = (await call(API.MATCHER_ASSIGNMENTS, json.dumps({"volunteer_id": volunteer_id}).encode())) or {}
    assignment_id = next((a["assignment_id"] for a in offers.get("assignments", [])), "a-none")
    await call(API.LEDGER_CATALOG_PUT, json.dumps({
        "item_id": "goods.rice", "name": "大米 5kg", "kind": "goods", "points": "10", "stock": 1,
    }).encode())
    await call(API.LEDGER_ADJUST, json.dumps({
        "volunteer_id": volunteer_id, "points": "30", "reason": "seed", "operator": "fuzz",
        "idempotency_key": "fuzz-seed-points",
    }).encode())
    plan = await call(API.CARE_CREATE_PLAN, json.dumps({
        "idempotency_key": "fuzz-care-plan", "reader": {"person_id": "op-1", "role": "operator", "district": DISTRICT},
        "district": DISTRICT, "community": "quanwaiyuan", "grid": GRID, "resident_name": "张桂兰",
        "resident_phone": "13800138011", "resident_kind": "elderly_alone",
        "group": [{"person_id": "n-1", "name": "李阿姨", "role": "neighbour"}],
        "duties": [{"duty_id": "visit", "kind": "visit", "rhythm": "daily", "due": "18:00", "holder": "n-1"}],
    }).encode())
    assert plan and "plan_id" in plan, plan
    await probe.quiet()
    return {
        "plan_id": plan["plan_id"], "duty_id": "visit", "by": "n-1", "for_person": "n-1",
        "volunteer_id": volunteer_id, "request_id": request["request_id"], "assignment_id": assignment_id,
        "item_id": "goods.rice", "district": DISTRICT, "grid": GRID, "grids": [GRID], "skills": ["repair"],
        "service": "repair.plumbing", "id": volunteer_id,
    }


def check_reply(outcome: Outcome, subject: str, label: str, reply: dict[str, Any]) -> bool:
    """Whether the call was refused; notes any reply not of the documented shape."""
    if "error" in reply:
        outcome.refused[subject] += 1
        if set(reply) != {"error"} or set(reply["error"]) != {"code", "message", "details"}:
            outcome.misshapen.append((subject, label, json.dumps(reply)[:300]))
        else:
            ErrorReply.model_validate(reply)
            outcome.codes[(subject, reply["error"]["code"])] += 1
            if reply["error"]["code"] == "internal":
                outcome.internal.append((subject, label, reply))
        return True
    if subject in REPLIES:
        try:
            REPLIES[subject].model_validate(reply)
        except ValueError as exc:
            outcome.misshapen.append((subject, label, f"{json.dumps(reply)[:200]}: {exc}"[:500]))
    return False


async def fuzz_subject(probe: Probe, outcome: Outcome, subject: str, known: dict[str, Any]) -> None:
    service = subject.split(".")[2]
    drawn_bodies = drawn(subject, known)
    example = base_example(subject, drawn_bodies)

    # Hostile bodies can never be valid: each must be refused, and all of them together change nothing.
    await probe.quiet()
    before = await probe.snapshot(service)
    for label, body in hostile(subject, example):
        outcome.sent[subject] += 1
        try:
            reply = await probe.call(subject, body)
        except NoRespondersError:
            outcome.unserved.add(subject)
            return
        except NatsTimeout:
            outcome.silent.append((subject, label))
            continue
        assert reply is not None
        if not check_reply(outcome, subject, label, reply):
            outcome.accepted_hostile.append((subject, label, reply))
    await probe.quiet()
    if diff := difference(before, after := await probe.snapshot(service)):
        outcome.wrote.append((subject, "hostile bodies", diff))

    # Drawn bodies may be answered or refused; each refused one is compared on its own.
    for body in [*drawn_bodies, {}]:
        label = json.dumps(body, ensure_ascii=False)[:400]
        outcome.sent[subject] += 1
        try:
            reply = await probe.call(subject, json.dumps(body).encode())
        except NatsTimeout:
            outcome.silent.append((subject, label))
            continue
        assert reply is not None
        if check_reply(outcome, subject, label, reply):
            await probe.quiet()
            if diff := difference(after, now := await probe.snapshot(service)):
                outcome.wrote.append((subject, label, diff))
            after = now
        else:
            await probe.quiet()
            after = await probe.snapshot(service)


async def run_fuzz(nats_url: str, mongo_url: str) -> Outcome:
    bus = BusSettings(nats_url=nats_url, mongo_url=mongo_url, db_prefix=f"f{uuid.uuid4().hex[:10]}",
                      retry_base_delay=0.1, outbox_relay_interval=0.2, max_deliver=5, ack_wait=5)
    services = [
        build_intake(IntakeSettings(bus=bus)),
        build_matcher(MatcherSettings(bus=bus, offer_ttl=3600, sweep_interval=0.5, lease=30)),
        build_notifier(notifier_settings(bus, None)),
        build_ledger(replace(ledger_settings(bus), sweep_interval=1.0)),
        build_identity(IdentitySettings(bus=bus)),
        build_care(CareSettings(bus=bus, watch_interval=3600.0)),
    ]
    outcome = Outcome()
    nc = await nats.connect(nats_url)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        for service in services:
            await service.start()
        probe = Probe(nc, mongo, bus, services)
        known = await seed(probe)
        for subject in MODELS:
            await fuzz_subject(probe, outcome, subject, known)
    finally:
        for service in reversed(services):
            await service.stop()
        await nc.close()
        await mongo.close()
    return outcome


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory, mongo_server: Server) -> Iterator[Outcome]:
    server = start_nats(tmp_path_factory.mktemp("fuzz-nats"))
    try:
        yield asyncio.run(run_fuzz(server.url, mongo_server.url))
    finally:
        server.stop()


def served(outcome: Outcome) -> list[str]:
    return [subject for subject in MODELS if subject not in outcome.unserved]


def test_the_fuzz_reached_every_call_the_services_answer(outcome: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nfuzzed calls ({sum(outcome.sent.values())} sent, {sum(outcome.refused.values())} refused):")
        for subject in MODELS:
            codes = ", ".join(f"{code} {n}" for (s, code), n in sorted(outcome.codes.items()) if s == subject)
            state = "not served by these services" if subject in outcome.unserved else codes
            print(f"  {subject:40} {outcome.sent[subject]:4} sent  {state}")
    assert len(served(outcome)) >= 30
    assert all(outcome.sent[subject] >= GENERATED for subject in served(outcome))


def test_every_call_is_answered_within_the_request_timeout(outcome: Outcome) -> None:
    assert outcome.silent == []


def documented_codes() -> set[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"`([a-z_]+)`", readme.split("Error codes include", 1)[1].split("\n\n", 1)[0]))


def test_every_refusal_and_answer_has_the_documented_shape(outcome: Outcome) -> None:
    assert outcome.misshapen == []
    assert outcome.internal == []
    assert {code for _, code in outcome.codes} - documented_codes() == set()


def test_no_body_that_breaks_the_contract_is_accepted(outcome: Outcome) -> None:
    assert outcome.accepted_hostile == []


@pytest.mark.parametrize("subject", list(MODELS))
def test_a_refused_call_changes_nothing(outcome: Outcome, subject: str) -> None:
    if subject in outcome.unserved:
        pytest.skip(f"{subject} is not served by these services")
    wrote = [(label, diff) for s, label, diff in outcome.wrote if s == subject]
    assert wrote == [], "\n".join(f"{label}\n  wrote: {diff}" for label, diff in wrote)
