import json
from pathlib import Path

import pytest

from contracts import EVENT_TYPES, Envelope, event_subject, new_event
from contracts.calls import CALLS, SubmitRequest
from contracts.envelope import derived_id
from contracts.events import HoursLogged, RequestCreated
from contracts.generate import SCHEMA_DIR, render_all

pytestmark = pytest.mark.domain
SAMPLES = Path(__file__).parent / "samples"


def test_checked_in_json_schemas_match_the_models() -> None:
    rendered = render_all()
    on_disk = {p.relative_to(SCHEMA_DIR).as_posix(): p.read_text(encoding="utf-8") for p in SCHEMA_DIR.rglob("*.json")}
    stale = sorted(set(on_disk) - set(rendered))
    missing = sorted(set(rendered) - set(on_disk))
    changed = sorted(p for p in rendered if p in on_disk and on_disk[p] != rendered[p])
    assert (stale, missing, changed) == ([], [], []), "run: python -m contracts.generate"


def test_every_event_and_call_has_a_schema() -> None:
    rendered = render_all()
    assert {f"events/{name}.json" for name in EVENT_TYPES} <= set(rendered)
    assert {f"calls/{name}.request.json" for name in CALLS} <= set(rendered)


def test_envelope_round_trips_through_json() -> None:
    data = HoursLogged(volunteer_id="v1", request_id="r1", assignment_id="a1", hours="1.25", category="repair")
    event = new_event(data, source="linli/matcher", district="beibei", subject="r1", correlationid="r1",
                      causationid="e0", event_id=derived_id("x", "1"))
    text = event.model_dump_json()
    back = Envelope[HoursLogged].model_validate_json(text)
    assert back == Envelope[HoursLogged].model_validate(event.model_dump())
    assert back.data.hours == data.hours and str(back.data.hours) == "1.25"
    body = json.loads(text)
    assert body["specversion"] == "1.0" and body["type"] == "linli.hours.logged"
    assert body["datacontenttype"] == "application/json"
    assert body["dataschema"] == "urn:linli:schema:hours.logged:1" and back.schema_version == 1
    assert {body["district"], body["correlationid"], body["causationid"]} == {"beibei", "r1", "e0"}
    assert event_subject(back.short_type, back.district) == "linli.evt.hours.logged.beibei"


def test_consumers_ignore_fields_they_do_not_know() -> None:
    body = json.loads((SAMPLES / "request.created.v1.json").read_text())
    body["futureextension"] = "x"
    body["data"]["priority_lane"] = "green"
    event = Envelope[RequestCreated].model_validate(body)
    assert event.data.request_id == body["data"]["request_id"]
    assert not hasattr(event.data, "priority_lane")
    call = SubmitRequest.model_validate({
        "idempotency_key": "k-12345678", "district": "d", "grid": "g", "service": "repair.keys",
        "resident": {"name": "n", "phone": "13800000000", "pet": "cat"}, "unknown": 1,
    })
    assert call.service == "repair.keys"


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.v1.json")), ids=lambda p: p.name)
def test_events_written_by_version_1_producers_still_validate(sample: Path) -> None:
    body = json.loads(sample.read_text())
    model = EVENT_TYPES[body["type"].removeprefix("linli.")]
    event = Envelope[model].model_validate(body)  # type: ignore[valid-type]
    assert event.schema_version == 1 and event.id == body["id"]


def test_derived_ids_are_stable_across_releases() -> None:
    # Ids derived from causes are how retries are recognised; changing the derivation breaks that.
    assert derived_id("request", "beibei", "kiosk-1") == "674f1131-5c7a-588c-9bc9-ba8091ec0f45"


def test_an_event_of_a_newer_major_schema_is_refused_not_misread() -> None:
    body = json.loads((SAMPLES / "request.created.v1.json").read_text())
    body["dataschema"] = "urn:linli:schema:request.created:2"
    with pytest.raises(ValueError, match="schema version 2"):
        Envelope[RequestCreated].model_validate(body)
