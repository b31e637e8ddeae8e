"""Every event the running system keeps is a CloudEvent by the official SDK, and its data matches the
checked-in JSON Schema of its type."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cloudevents.core.formats.json import JSONFormat

from contracts import API
from linli.client import caught_up
from linli.system import System
from tests.conftest import Bus, eventually, stored_messages

pytestmark = pytest.mark.system
SCHEMAS = Path(__file__).resolve().parent.parent / "contracts" / "jsonschema" / "events"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.start(tmp_path_factory.mktemp("cloudevents"), env={"MATCHER_SWEEP_INTERVAL": "0.3"})
    yield running
    running.stop()


async def a_whole_loop(client: Bus) -> None:
    """Sign-up, a declined offer, an accepted one, completion, credit, rating; a cancelled request and one
    nobody can take."""
    district = "cloudevents"  # one loop per module; a place listed in tests/samples/places.yaml
    volunteers = [(await client.call(API.INTAKE_REGISTER_VOLUNTEER, {
        "name": name, "phone": f"1391111{n:04d}", "district": district, "grids": ["g1"], "skills": ["repair"],
        "capacity": 1,
    }))["volunteer_id"] for n, name in enumerate(["刘师傅", "朱敏"])]
    await caught_up(client.nc, "matcher", "volunteer.registered")
    submit = {"district": district, "grid": "g1", "service": "repair.plumbing", "resident": {"name": "王秀英",
              "phone": "13800138000"}}
    request_id = (await client.call(API.INTAKE_SUBMIT, {**submit, "idempotency_key": f"k-{uuid.uuid4()}"}))["request_id"]
    first = (await client.wait_for("volunteer.assigned", request_id=request_id))[0]["data"]
    await client.call(API.MATCHER_RESPOND, {"assignment_id": first["assignment_id"],
                                            "volunteer_id": first["volunteer_id"], "accept": False, "reason": "忙"})
    second = (await client.wait_for("volunteer.assigned", count=2, request_id=request_id))[1]["data"]
    assert second["volunteer_id"] in volunteers
    await client.call(API.MATCHER_RESPOND, {"assignment_id": second["assignment_id"],
                                            "volunteer_id": second["volunteer_id"], "accept": True})
    await client.call(API.MATCHER_COMPLETE, {"assignment_id": second["assignment_id"],
                                             "volunteer_id": second["volunteer_id"], "hours": "1.5"})
    await client.wait_for("points.earned", request_id=request_id)
    await eventually(lambda: status_is(client, request_id, "completed"))
    await client.call(API.INTAKE_RATE, {"request_id": request_id, "stars": 5, "comment": "细心"})
    await client.wait_for("request.rated", request_id=request_id)

    cancelled = (await client.call(API.INTAKE_SUBMIT, {**submit, "idempotency_key": f"k-{uuid.uuid4()}"}))["request_id"]
    await client.call(API.INTAKE_CANCEL, {"request_id": cancelled})
    await client.wait_for("request.cancelled", request_id=cancelled)
    nobody = (await client.call(API.INTAKE_SUBMIT, {**submit, "service": "legal.advice",
                                                    "idempotency_key": f"k-{uuid.uuid4()}"}))["request_id"]
    await client.wait_for("request.unmatched", request_id=nobody)
    await client.wait_for("notification.delivered", kind="unmatched")


async def status_is(client: Bus, request_id: str, status: str) -> bool:
    return (await client.call(API.INTAKE_STATUS, {"request_id": request_id})).get("status") == status


async def kept_events(client: Bus) -> list[bytes]:
    return [msg.data or b"" for msg in await stored_messages(client.nc)]


def schema_of(event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{event_type}.json").read_text())
    return schema


async def test_every_kept_event_is_a_cloudevent_whose_data_matches_its_schema(system: System, client: Bus) -> None:
    await a_whole_loop(client)

    seen = set()
    for body in await kept_events(client):
        event = JSONFormat().read(None, body)  # raises on anything CloudEvents 1.0 does not allow
        assert event.get_specversion() == "1.0" and event.get_datacontenttype() == "application/json"
        event_type = event.get_type().removeprefix("linli.")
        schema = schema_of(event_type)
        data_schema = {**schema["properties"]["data"], "$defs": schema.get("$defs", {})}
        jsonschema.validate(event.get_data(), data_schema)
        jsonschema.validate(json.loads(body), schema)  # the envelope too, extensions and all
        seen.add(event_type)

    assert seen >= {
        "volunteer.registered", "request.created", "volunteer.assigned", "assignment.declined",
        "assignment.accepted", "assignment.completed", "hours.logged", "points.earned", "request.rated",
        "request.cancelled", "request.unmatched", "notification.delivered",
    }, seen
