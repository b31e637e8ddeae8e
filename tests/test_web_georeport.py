"""Open311 GeoReport v2 as Linli reads it, without I/O: keys, the submit call a POST makes, what a request
shows back, and the list's window."""

from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree

import pytest

from services.web import georeport
from services.web.georeport import ApiClient, Refused
from services.web.texts import Words, load

pytestmark = pytest.mark.domain

TEXTS = load(Path(__file__).resolve().parent.parent / "services" / "web" / "texts")
EN = Words("en", TEXTS["en"])
ZH = Words("zh", TEXTS["zh"])
CLIENT = ApiClient("12345 hotline", "beibei")
GRIDS = ("quanwai-03", "quanwai-04")
CODES = ("repair.plumbing", "elderly.visit")
GOOD = {"api_key": "k1", "service_code": "repair.plumbing", "address_id": "quanwai-03", "phone": "13800138000",
        "first_name": "秀英", "last_name": "王", "address_string": "泉外园3栋401", "description": "水管漏水"}
STATUS = {
    "request_id": "r-1", "code": "ABC123", "status": "cancelled", "district": "beibei", "grid": "quanwai-03",
    "service": "repair.plumbing", "urgency": "routine", "created_at": "2026-05-01T08:00:00+00:00",
    "window_end": None, "history": [{"status": "submitted", "at": "2026-05-01T08:00:00+00:00"},
                                    {"status": "cancelled", "at": "2026-05-01T09:30:00+00:00", "note": "王秀英 moved"}],
}


def test_the_keys_file_names_each_client_and_its_district_and_skips_comments_and_broken_lines() -> None:
    keys = georeport.parse_keys("# key\tclient\tdistrict\nk1\t12345 hotline\tbeibei\n\nk2\tno district\t\nk3\tx\n")
    assert keys == {"k1": CLIENT}


def test_a_post_becomes_a_submit_call_in_the_keys_district_and_the_grid_given_as_address_id() -> None:
    call = georeport.submit_call(GOOD, CLIENT, GRIDS, CODES, "", EN)
    assert (call.district, call.grid, call.service, call.channel) == ("beibei", "quanwai-03", "repair.plumbing", "app")
    assert (call.resident.name, call.resident.phone, call.resident.address) == ("秀英 王", "13800138000", "泉外园3栋401")


def test_the_same_fields_from_the_same_client_make_the_same_idempotency_key_and_another_client_another() -> None:
    first = georeport.submit_call(GOOD, CLIENT, GRIDS, CODES, "", EN).idempotency_key
    assert georeport.submit_call(dict(GOOD), CLIENT, GRIDS, CODES, "", EN).idempotency_key == first
    assert georeport.submit_call(GOOD, ApiClient("other", "beibei"), GRIDS, CODES, "", EN).idempotency_key != first
    assert georeport.submit_call({**GOOD, "description": "又漏了"}, CLIENT, GRIDS, CODES, "", EN).idempotency_key != first


def test_a_client_token_keys_the_submission_whatever_the_fields() -> None:
    one = georeport.submit_call(GOOD, CLIENT, GRIDS, CODES, "ticket-7", EN).idempotency_key
    other_words = {**GOOD, "description": "x"}
    assert georeport.submit_call(other_words, CLIENT, GRIDS, CODES, "ticket-7", EN).idempotency_key == one
    assert georeport.submit_call(GOOD, CLIENT, GRIDS, CODES, "ticket-8", EN).idempotency_key != one


def test_a_post_without_a_known_service_grid_or_phone_is_refused_with_one_error_for_each() -> None:
    with pytest.raises(Refused) as refused:
        georeport.submit_call({"service_code": "pothole", "address_id": "nowhere"}, CLIENT, GRIDS, CODES, "", EN)
    assert refused.value.status == 400
    described = [e.description for e in refused.value.errors]
    assert [d.split(":")[0] for d in described] == ["service_code", "address_id", "phone"]
    assert {e.code for e in refused.value.errors} == {400}


def test_a_post_for_another_jurisdiction_or_with_coordinates_off_the_globe_is_refused() -> None:
    with pytest.raises(Refused) as refused:
        georeport.submit_call({**GOOD, "jurisdiction_id": "nanan", "lat": "91", "long": "east"}, CLIENT, GRIDS, CODES,
                              "", EN)
    assert [e.description.split(":")[0] for e in refused.value.errors] == ["jurisdiction_id", "lat", "long"]


def test_a_phone_the_contract_refuses_is_a_400_naming_the_geo_report_field() -> None:
    with pytest.raises(Refused) as refused:
        georeport.submit_call({**GOOD, "phone": "call me"}, CLIENT, GRIDS, CODES, "", EN)
    assert refused.value.errors[0].description.startswith("phone")


def test_a_request_shows_its_state_times_and_place_but_nothing_of_the_resident() -> None:
    shown = georeport.from_status(STATUS, {"repair.plumbing": "Plumbing"}, "Quanwai grid 3", EN)
    assert (shown.status, shown.service_code, shown.service_name, shown.address_id) == (
        "closed", "repair.plumbing", "Plumbing", "quanwai-03")
    assert shown.updated_datetime == datetime(2026, 5, 1, 9, 30, tzinfo=timezone.utc)
    assert shown.status_notes == "Cancelled"
    assert "王" not in shown.model_dump_json() and shown.description is None


@pytest.mark.parametrize("state, geo", [("submitted", "open"), ("offered", "open"), ("accepted", "open"),
                                        ("unmatched", "open"), ("reopened", "open"), ("completed", "closed"),
                                        ("rated", "closed"), ("cancelled", "closed"), ("closed", "closed")])
def test_every_state_is_open_or_closed_with_notes_in_both_languages(state: str, geo: str) -> None:
    assert georeport.geo_status(state) == geo
    assert f"open311.state_{state}" in TEXTS["en"] and f"open311.state_{state}" in TEXTS["zh"]


def test_the_list_defaults_to_the_last_ninety_days_and_refuses_a_longer_span_or_a_date_without_its_zone() -> None:
    now = datetime(2026, 5, 1, tzinfo=timezone.utc)
    asked = georeport.list_question({}, now, ZH)
    assert (asked.since, asked.until) == (now - timedelta(days=90), now)
    with pytest.raises(Refused):
        georeport.list_question({"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-05-01T00:00:00Z"}, now, ZH)
    with pytest.raises(Refused) as refused:
        georeport.list_question({"start_date": "2026-04-01T00:00:00", "status": "pending"}, now, EN)
    assert [e.description.split(":")[0] for e in refused.value.errors] == ["status", "start_date"]


def test_ids_in_the_list_question_override_the_rest_and_filters_pick_by_code_and_status() -> None:
    asked = georeport.list_question({"service_request_id": "a, b", "status": "closed",
                                     "service_code": "repair.plumbing"}, datetime.now(timezone.utc), EN)
    assert asked.ids == ("a", "b")
    closed = georeport.from_status(STATUS, {}, "", EN)
    assert asked.wants(closed)
    assert not asked.wants(closed.model_copy(update={"status": "open"}))


def test_a_service_definition_is_found_by_its_code_and_an_unknown_one_is_a_404() -> None:
    catalog = {"categories": [{"id": "repair", "name": "便民维修", "name_en": "Repairs",
                               "items": [{"id": "repair.plumbing", "name": "水电维修", "name_en": "Plumbing"}]}]}
    assert [s.service_name for s in georeport.services(catalog, EN)] == ["Plumbing"]
    assert georeport.services(catalog, ZH)[0].group == "便民维修"
    assert georeport.definition(catalog, "repair.plumbing", EN).attributes == []
    with pytest.raises(Refused) as refused:
        georeport.definition(catalog, "pothole", EN)
    assert refused.value.status == 404


def test_xml_holds_each_document_under_its_own_name_with_nulls_empty_and_booleans_spelled() -> None:
    written = georeport.to_xml("services", "service", [{"service_code": "a", "metadata": False, "group": None}])
    assert written.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = ElementTree.fromstring(written)
    assert (root.tag, root[0].tag, root.findtext("service/metadata"), root.findtext("service/group")) == (
        "services", "service", "false", "")
    definition = ElementTree.fromstring(georeport.to_xml("service_definition", None,
                                                         {"service_code": "a", "attributes": [{"code": "x"}]}))
    assert definition.findtext("attributes/attribute/code") == "x"
